"""List the functions in tiledseg/ longer than a limit; exit 1 if there are any.

A function's length is the number of lines from its ``def`` (decorators not
counted) to its last line, less the lines of its docstring. A nested function
counts within its parent too, so splitting a long function into closures does
not shorten it.

    python tools/function_lengths.py [--limit 60] [PATH ...]

With no PATH it walks the ``tiledseg`` package beside this folder. CI runs it.
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections.abc import Iterator
from pathlib import Path

DEFAULT_LIMIT = 60
PACKAGE = Path(__file__).resolve().parent.parent / "tiledseg"

FunctionNode = ast.FunctionDef | ast.AsyncFunctionDef


def docstring_lines(node: FunctionNode) -> int:
    """Return how many lines the function's docstring spans (0 without one).

    Parameters
    ----------
    node : ast.FunctionDef or ast.AsyncFunctionDef
        The function.

    Returns
    -------
    int
        Lines of the docstring statement.
    """
    if not node.body:
        return 0
    first = node.body[0]
    is_doc = (
        isinstance(first, ast.Expr)
        and isinstance(first.value, ast.Constant)
        and isinstance(first.value.value, str)
    )
    if not is_doc:
        return 0
    return first.end_lineno - first.lineno + 1


def function_length(node: FunctionNode) -> int:
    """Return the lines from ``def`` to the function's end, less its docstring.

    Parameters
    ----------
    node : ast.FunctionDef or ast.AsyncFunctionDef
        The function.

    Returns
    -------
    int
        Its length in lines.
    """
    return node.end_lineno - node.lineno + 1 - docstring_lines(node)


def iter_functions(tree: ast.AST, prefix: str = "") -> Iterator[tuple[str, FunctionNode]]:
    """Yield every function in ``tree`` with its dotted qualified name.

    Parameters
    ----------
    tree : ast.AST
        A parsed module (or a class or function within one).
    prefix : str, optional
        Qualified name of ``tree`` followed by a dot.

    Yields
    ------
    tuple of (str, ast.FunctionDef or ast.AsyncFunctionDef)
        Qualified name and node, nested functions and methods included.
    """
    for child in ast.iter_child_nodes(tree):
        if isinstance(child, FunctionNode):
            yield prefix + child.name, child
            yield from iter_functions(child, f"{prefix}{child.name}.")
        elif isinstance(child, ast.ClassDef):
            yield from iter_functions(child, f"{prefix}{child.name}.")
        else:
            yield from iter_functions(child, prefix)


def long_functions(path: Path, *, limit: int) -> list[tuple[int, str, int]]:
    """Find the functions of one file longer than ``limit`` lines.

    Parameters
    ----------
    path : Path
        A Python source file.
    limit : int
        Most lines allowed.

    Returns
    -------
    list of tuple of (int, str, int)
        Line of the ``def``, qualified name and length of each offender.
    """
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    return [
        (node.lineno, name, length)
        for name, node in iter_functions(tree)
        if (length := function_length(node)) > limit
    ]


def python_files(paths: list[Path]) -> list[Path]:
    """Expand folders into the ``.py`` files under them, sorted.

    Parameters
    ----------
    paths : list of Path
        Files and folders.

    Returns
    -------
    list of Path
        The Python files.
    """
    files: list[Path] = []
    for path in paths:
        files.extend(sorted(path.rglob("*.py")) if path.is_dir() else [path])
    return files


def main(argv: list[str] | None = None) -> int:
    """Print the functions over the limit, one a line; return 1 if any.

    Parameters
    ----------
    argv : list of str, optional
        Command-line arguments (default: ``sys.argv[1:]``).

    Returns
    -------
    int
        Exit status: 0 when every function fits, 1 otherwise.
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--limit",
        type=int,
        default=DEFAULT_LIMIT,
        help=f"most lines per function, docstring excluded (default {DEFAULT_LIMIT})",
    )
    parser.add_argument("paths", nargs="*", type=Path, default=[PACKAGE])
    args = parser.parse_args(argv)
    found = 0
    for path in python_files(args.paths):
        for lineno, name, length in long_functions(path, limit=args.limit):
            print(f"{path}:{lineno}: {name} has {length} lines (limit {args.limit})")
            found += 1
    if found:
        print(f"{found} function(s) over {args.limit} lines", file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
