"""Build the Function app's deployment zip: this folder's app files + ``src/tickcast`` as a top-level package.

``python cloud/function/package.py [--out dist/function.zip]`` writes a zip whose root holds
``function_app.py``, ``host.json``, ``requirements.txt`` and ``tickcast/`` (no ``__pycache__``), with fixed
timestamps and sorted entries, so the same sources give the same bytes. Deploy it with a remote build, which
installs ``requirements.txt`` (see README.md). Standard library only.
"""

from __future__ import annotations

import argparse
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


def entries(package: Path = PACKAGE, app_dir: Path = HERE) -> Iterator[tuple[str, Path]]:
    """(name in the zip, file on disk), sorted by name."""
    found = [(name, app_dir / name) for name in APP_FILES]
    for path in package.rglob("*"):
        if not path.is_file() or path.suffix in _SKIP_SUFFIXES:
            continue
        rel = path.relative_to(package)
        if _SKIP_DIRS.intersection(rel.parts):
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
