"""tools/function_lengths.py: docstrings not counted, nested functions counted in their parent."""

from __future__ import annotations

import importlib.util
import textwrap
from pathlib import Path

import pytest

TOOL = Path(__file__).resolve().parent.parent / "tools" / "function_lengths.py"


@pytest.fixture(scope="module")
def tool():
    spec = importlib.util.spec_from_file_location("function_lengths", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _write(tmp_path: Path, source: str) -> Path:
    path = tmp_path / "sample.py"
    path.write_text(textwrap.dedent(source))
    return path


SOURCE = '''
def short():
    """A docstring
    of three lines
    is not counted."""
    return 1


def outer():
    def inner():
        a = 1
        return a

    return inner


class Thing:
    def method(self):
        """One line."""
        x = 1
        y = 2
        return x + y
'''


def test_lengths_exclude_docstrings_and_count_nested_in_parent(tool, tmp_path):
    found = {
        name: length for _, name, length in tool.long_functions(_write(tmp_path, SOURCE), limit=0)
    }
    assert found == {"short": 2, "outer": 6, "outer.inner": 3, "Thing.method": 4}


def test_main_exits_1_over_the_limit_and_0_within(tool, tmp_path, capsys):
    path = _write(tmp_path, SOURCE)
    assert tool.main(["--limit", "5", str(path)]) == 1
    out = capsys.readouterr().out
    assert "outer has 6 lines (limit 5)" in out
    assert "method" not in out
    assert tool.main(["--limit", "6", str(tmp_path)]) == 0
