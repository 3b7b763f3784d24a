# make demo / make test create .venv when missing (or when pyproject.toml changed), then run.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.tiledseg-installed

.PHONY: demo test lint bench clean-venv

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev,graphcut]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/tiledseg demo

test: $(STAMP)
	$(PY) -m pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check .

bench: $(STAMP)
	$(PY) -m pip install --quiet "scikit-image>=0.24"
	$(PY) benchmarks/compare_peers.py
	$(PY) benchmarks/memory_scaling.py

clean-venv:
	rm -rf $(VENV)
