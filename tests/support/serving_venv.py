"""The AML serving environment (cloud/aml/requirements.txt) as a cached venv, for the azmlinfsrv contract test
and bench/serve.py.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tickcast.settings import PROJECT_ROOT, get_settings

REQUIREMENTS = PROJECT_ROOT / "cloud" / "aml" / "requirements.txt"


STAMP = ".tickcast-requirements-stamp"


NETWORK_TROUBLE = re.compile(
    r"(?i)failed to fetch|error sending request|dns error|connection (refused|reset)|timed out|network is "
    r"unreachable|tcp connect error|could not connect|no such host|temporary failure in name resolution"
)


def find_uv() -> str | None:
    for candidate in (os.environ.get("UV"), str(PROJECT_ROOT / ".tickcast" / "tools" / "bin" / "uv"), "uv"):
        if candidate and (found := shutil.which(candidate)):
            return found
    return None


def stamp_of(requirements: Path) -> str:
    digest = hashlib.sha256(requirements.read_bytes())
    digest.update(f"{sys.version_info[:3]}|{sys.platform}".encode())
    return digest.hexdigest()


def serving_venv() -> Path:
    """The AML serving venv (built or reused); skips the module when it cannot be built for lack of network."""
    uv = find_uv()
    if uv is None:
        pytest.skip("cannot build the AML serving venv: uv not found (run ./just once, or put uv on PATH)")
    venv = get_settings().stack.resolved_cache() / "venvs" / "aml-serving"
    venv.parent.mkdir(parents=True, exist_ok=True)
    with (venv.parent / f"{venv.name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a parallel test worker may be building it right now
        return _build_or_reuse(uv, venv, stamp_of(REQUIREMENTS))


def _build_or_reuse(uv: str, venv: Path, stamp: str) -> Path:
    if (venv / STAMP).is_file() and (venv / STAMP).read_text().strip() == stamp and (venv / "bin/azmlinfsrv").exists():
        return venv
    shutil.rmtree(venv, ignore_errors=True)  # built in place (venv scripts embed their path); stamped last
    steps = [
        [uv, "venv", "--quiet", "--no-project", "--python", sys.executable, str(venv)],
        [uv, "pip", "install", "--quiet", "--compile-bytecode", "--python", str(venv / "bin" / "python"),
         "-r", str(REQUIREMENTS)],
    ]  # fmt: skip
    for step in steps:
        done = subprocess.run(step, capture_output=True, text=True, timeout=600, cwd=PROJECT_ROOT)
        if done.returncode != 0:
            shutil.rmtree(venv, ignore_errors=True)
            output = (done.stderr + done.stdout).strip()[-1500:]
            if NETWORK_TROUBLE.search(output):
                pytest.skip(f"cannot build the AML serving venv from {REQUIREMENTS}: no package registry: {output}")
            pytest.fail(f"building the AML serving venv failed ({' '.join(step[:3])}): {output}")
    (venv / STAMP).write_text(stamp + "\n")
    return venv
