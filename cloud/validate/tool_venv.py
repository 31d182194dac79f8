"""The arm-validate tool venv: checkov and the azure-mgmt SDK models, apart from the project's ``.venv``.

checkov 3.3 needs ``packaging<24`` and pytest 9 needs ``packaging>=24``, so the offline ARM checks that need
checkov (``checkov_scan.py``) or the SDK models (``sdk_property_check.py``) run in a venv of their own, built
from ``requirements.txt`` (pinned, ``uv pip compile`` of ``requirements.in``) into
``.tickcast/cache/venvs/arm-validate``. The venv is rebuilt only when the hash of ``requirements.txt`` (plus the
Python version) differs from the one recorded in its stamp file; a file lock keeps concurrent builders apart.

    python cloud/validate/tool_venv.py      # build (or confirm) the venv, print its python

:func:`ensure_tool_venv` raises :class:`IndexUnreachableError` when an install fails AND the package index
does not answer (tests skip on that, with its message), :class:`ToolVenvError` for any other failure.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
REQUIREMENTS = HERE / "requirements.txt"
VENV = ROOT / ".tickcast" / "cache" / "venvs" / "arm-validate"
STAMP_NAME = ".requirements-sha256"
DEFAULT_INDEX = "https://pypi.org/simple"
INSTALL_TIMEOUT_S = 900


class ToolVenvError(RuntimeError):
    """The tool venv could not be built although the package index answers."""


class IndexUnreachableError(ToolVenvError):
    """The tool venv could not be built and the package index does not answer."""


def requirements_key(requirements: Path = REQUIREMENTS) -> str:
    """What the venv is keyed by: sha256 of the pinned requirements and the interpreter's version."""
    digest = hashlib.sha256(requirements.read_bytes())
    digest.update(f"python{sys.version_info.major}.{sys.version_info.minor}".encode())
    return digest.hexdigest()


def venv_python(venv: Path = VENV) -> Path:
    return venv / "bin" / "python"


def is_current(venv: Path = VENV, requirements: Path = REQUIREMENTS) -> bool:
    stamp = venv / STAMP_NAME
    return (
        venv_python(venv).exists() and stamp.is_file() and stamp.read_text().strip() == requirements_key(requirements)
    )


def index_url() -> str:
    """The package index the installer uses (uv's and pip's settings, else PyPI)."""
    for name in ("UV_DEFAULT_INDEX", "UV_INDEX_URL", "PIP_INDEX_URL"):
        value = os.environ.get(name, "").strip()
        if value:
            return value.rstrip("/")
    return DEFAULT_INDEX


def index_unreachable(url: str, timeout_s: float = 15.0) -> str | None:
    """Why ``url`` cannot be reached (None when it answers, whatever the HTTP status)."""
    probe = f"{url}/checkov/" if url.startswith("http") else url
    try:
        with urllib.request.urlopen(probe, timeout=timeout_s):  # noqa: S310 (the index URL, http(s) only)
            return None
    except urllib.error.HTTPError:
        return None  # it answered
    except (urllib.error.URLError, OSError, ValueError) as err:
        return f"{type(err).__name__}: {getattr(err, 'reason', err)}"


def _uv() -> str | None:
    bundled = ROOT / ".tickcast" / "tools" / "bin" / "uv"
    return str(bundled) if bundled.exists() else shutil.which("uv")


def _commands(venv: Path, requirements: Path) -> list[list[str]]:
    uv = _uv()
    python = str(venv_python(venv))
    if uv:
        return [
            [uv, "venv", "--quiet", "--python", sys.executable, str(venv)],
            [uv, "pip", "sync", "--quiet", "--compile-bytecode", "--python", python, str(requirements)],
        ]
    return [
        [sys.executable, "-m", "venv", str(venv)],
        [python, "-m", "pip", "install", "--quiet", "--no-deps", "--compile", "-r", str(requirements)],
    ]


def build(venv: Path = VENV, requirements: Path = REQUIREMENTS) -> None:
    """(Re)build the venv from scratch; the stamp is written last, so a broken build is never current."""
    shutil.rmtree(venv, ignore_errors=True)
    venv.parent.mkdir(parents=True, exist_ok=True)
    for command in _commands(venv, requirements):
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S, check=False)
        except subprocess.TimeoutExpired as err:
            raise ToolVenvError(f"{' '.join(command[:3])} ran past {INSTALL_TIMEOUT_S}s") from err
        if done.returncode != 0:
            url = index_url()
            why = index_unreachable(url)
            output = (done.stderr or done.stdout).strip()[-2000:]
            if why is not None:
                raise IndexUnreachableError(
                    f"package index {url} unreachable ({why}): cannot build the checkov/azure-mgmt tool venv"
                )
            raise ToolVenvError(f"{' '.join(command[:3])} failed ({done.returncode}):\n{output}")
    (venv / STAMP_NAME).write_text(requirements_key(requirements) + "\n")


def ensure_tool_venv(venv: Path = VENV, requirements: Path = REQUIREMENTS) -> Path:
    """The venv's python, building the venv first when it is missing or its requirements changed."""
    if is_current(venv, requirements):
        return venv_python(venv)
    venv.parent.mkdir(parents=True, exist_ok=True)
    with (venv.parent / f"{venv.name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be building it right now
        if not is_current(venv, requirements):
            build(venv, requirements)
    return venv_python(venv)


def main() -> int:
    t0 = time.monotonic()
    try:
        python = ensure_tool_venv()
    except ToolVenvError as err:
        print(err, file=sys.stderr)
        return 1
    print(f"{python} ({time.monotonic() - t0:.1f}s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
