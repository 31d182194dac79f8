"""Build the Function app's deployment zip: this folder's app files + the API's import closure of ``tickcast``.

``python cloud/function/package.py [--out dist/function.zip]`` writes a zip whose root holds
``function_app.py``, ``host.json``, ``requirements.txt`` and ``tickcast/`` with ONLY the modules
``function_app.py`` reaches (every ``import tickcast...``, also inside functions, followed transitively, plus
the packages' ``__init__.py``): no training, registry, release or ingest code travels to the Function. Fixed
timestamps and sorted entries, so the same sources give the same bytes. Deploy it with a remote build, which
installs ``requirements.txt`` (see README.md). Standard library only.
"""

from __future__ import annotations

import argparse
import ast
import zipfile
from collections.abc import Iterator
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
PACKAGE = REPO / "src" / "tickcast"
APP_FILES = ("function_app.py", "host.json", "requirements.txt")
DEFAULT_OUT = REPO / "dist" / "function.zip"
_EPOCH = (1980, 1, 1, 0, 0, 0)  # the earliest time a zip entry can carry
_SKIP_DIRS = {"__pycache__", ".mypy_cache", ".pytest_cache"}
_SKIP_SUFFIXES = {".pyc", ".pyo"}


def _imported(path: Path) -> set[str]:
    """The ``tickcast`` modules a source file imports (anywhere in it, TYPE_CHECKING blocks included)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "tickcast")
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "tickcast":
            module = str(node.module)
            found.add(module)
            found.update(f"{module}.{a.name}" for a in node.names)  # `from pkg import module`
    return found


def _module_file(module: str, package: Path) -> Path | None:
    rel = Path(*module.split(".")[1:])
    for candidate in (package / rel.with_suffix(".py"), package / rel / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def closure(package: Path = PACKAGE, start: Path = HERE / "function_app.py") -> list[Path]:
    """The files of ``package`` (``tickcast``) that ``start`` imports, transitively, with their packages'
    ``__init__.py``; sorted."""
    files: set[Path] = set()
    todo = sorted(_imported(start))
    while todo:
        module = todo.pop()
        path = _module_file(module, package)
        if path is None or path in files:
            continue
        files.add(path)
        todo.extend(_imported(path))
        parent = path.parent if path.name != "__init__.py" else path.parent.parent
        while parent != package.parent and package in (parent, *parent.parents):
            init = parent / "__init__.py"
            if init.is_file() and init not in files:
                files.add(init)
                todo.extend(_imported(init))
            parent = parent.parent
    return sorted(files)


def entries(package: Path = PACKAGE, app_dir: Path = HERE) -> Iterator[tuple[str, Path]]:
    """(name in the zip, file on disk), sorted by name."""
    found = [(name, app_dir / name) for name in APP_FILES]
    for path in closure(package, app_dir / "function_app.py"):
        rel = path.relative_to(package)
        if _SKIP_DIRS.intersection(rel.parts) or path.suffix in _SKIP_SUFFIXES:
            continue
        found.append((f"tickcast/{rel.as_posix()}", path))
    yield from sorted(found)


def build(out: Path = DEFAULT_OUT, *, package: Path = PACKAGE, app_dir: Path = HERE) -> Path:
    """Write the deployment zip to ``out`` and return it."""
    missing = [name for name in APP_FILES if not (app_dir / name).is_file()]
    if missing or not (package / "__init__.py").is_file():
        raise FileNotFoundError(f"cannot package the Function app: missing {missing or [str(package)]}")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(out.suffix + ".tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, path in entries(package, app_dir):
            info = zipfile.ZipInfo(name, date_time=_EPOCH)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, path.read_bytes())
    tmp.replace(out)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"zip to write (default {DEFAULT_OUT})")
    args = parser.parse_args(argv)
    out = build(args.out)
    with zipfile.ZipFile(out) as zf:
        count = len(zf.namelist())
    print(f"{out}: {count} files, {out.stat().st_size / 1024:.0f} KiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
