# make demo / make test create .venv when missing (or when pyproject.toml changed), then run.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.tiledseg-installed

.PHONY: demo test lint bench clean-venv gpu-wheels gpu-check

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/tiledseg demo

test: $(STAMP)
	$(PY) -m pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(PY) tools/function_lengths.py

bench: $(STAMP)
	$(PY) -m pip install --quiet "scikit-image>=0.24"
	$(PY) benchmarks/compare_peers.py
	$(PY) benchmarks/memory_scaling.py

clean-venv:
	rm -rf $(VENV)

# --- GPU check: on a machine with a GPU and cupy (docs/gpu.md, benchmarks/README.md) ---
# `make gpu-wheels` (here, with a registry) fetches what that machine lacks into .whl-1, .whl-2,
# ...; carry them there, then `make gpu-check` installs them beside its own packages and runs
# the gpu tests and the GPU benchmark. GPU_PYTHON: that machine's Python with cupy.
GPU_PYTHON ?= python3
GPU_SITE ?= /tmp/tiledseg-gpu-site
GPU_BENCH_ARGS ?=

gpu-wheels: $(STAMP)
	$(PY) tools/gpu_wheels.py

gpu-check:
	mkdir -p $(GPU_SITE)/.wheels
	for d in .whl-*; do [ -d "$$d" ] && cp "$$d"/* $(GPU_SITE)/.wheels/ || true; done
	cd $(GPU_SITE)/.wheels && for p in *.part-00; do [ -e "$$p" ] || continue; \
		w=$${p%.part-00}; cat "$$w".part-* > "$$w" && rm "$$w".part-*; done
	if ls $(GPU_SITE)/.wheels/*.whl >/dev/null 2>&1; then $(GPU_PYTHON) -m pip install -q \
		--no-index --no-deps --no-compile --no-cache-dir --upgrade --target $(GPU_SITE) \
		$(GPU_SITE)/.wheels/*.whl; fi
	PYTHONPATH=$(GPU_SITE):$(CURDIR) $(GPU_PYTHON) -c "import cupy, tiledseg; \
		print('cupy', cupy.__version__, 'devices', cupy.cuda.runtime.getDeviceCount())"
	PYTHONPATH=$(GPU_SITE):$(CURDIR) $(GPU_PYTHON) -m pytest -m gpu -p no:cacheprovider tests
	PYTHONPATH=$(GPU_SITE):$(CURDIR) $(GPU_PYTHON) benchmarks/gpu_throughput.py $(GPU_BENCH_ARGS)
