#!/usr/bin/env bash
# Installs everything tickcast needs, from nothing but python3 (>= 3.11) and this checkout.
# Idempotent, and a no-op costs one `python3 -c` and one `.venv/bin/python -c` (~0.1 s): safe to run
# before every command.
#
#   .tickcast/tools/       uv and just, in a small venv of their own (pinned below)
#   .venv/                 the project's environment, exactly as uv.lock pins it (bytecode compiled)
#   .tickcast/venv.stamp   what .venv was last synced from: the Python (real path + version), uv's
#                          version and checksums of uv.lock and pyproject.toml. `uv sync` runs only
#                          when one of them changed, when .venv's Python is missing or cannot import
#                          tickcast, or when TICKCAST_SYNC=1 asks for it (e.g. after a manual
#                          `uv pip install` into .venv).
#
# Node packages (Azurite) are installed by `tickcast up` itself, into .tickcast/cache/node (its own
# stamp: package-lock.json, package.json and the Node version).
set -euo pipefail

UV_VERSION="0.13.8"
JUST_VERSION="1.59.0"

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tools="$root/.tickcast/tools"
stamp="$tools/.versions"
venv_stamp="$root/.tickcast/venv.stamp"
want="uv==$UV_VERSION rust-just==$JUST_VERSION"
python="${PYTHON:-python3}"

if ! command -v "$python" >/dev/null 2>&1; then
  echo "tickcast: $python not found; install Python 3.11-3.13 (or set PYTHON=/path/to/python3)" >&2
  exit 1
fi
# One call answers both questions: is this Python supported, and which one is it really (a pyenv
# shim or a symlink resolves to the interpreter behind it).
python_id="$("$python" -c 'import os, sys
print(os.path.realpath(sys.executable), sys.version.split()[0])
sys.exit(0 if (3, 11) <= sys.version_info[:2] < (3, 14) else 3)')" || {
  echo "tickcast: $("$python" --version 2>&1) is not supported; install Python 3.11-3.13 (or set PYTHON=...)" >&2
  exit 1
}

current=""
[ -f "$stamp" ] && current="$(<"$stamp")"
if [ ! -x "$tools/bin/uv" ] || [ ! -x "$tools/bin/just" ] || [ "$current" != "$want" ]; then
  echo "tickcast: installing uv $UV_VERSION and just $JUST_VERSION into $tools" >&2
  rm -rf "$tools"
  "$python" -m venv "$tools"
  "$tools/bin/python" -m pip install --quiet --disable-pip-version-check $want
  echo "$want" > "$stamp"
fi

cd "$root"
# `cksum` (POSIX) is enough to notice an edit; the sync itself checks the lock's content.
venv_want="python=$python_id uv=$UV_VERSION sync=frozen,compile-bytecode
$(cksum uv.lock pyproject.toml)"
venv_have=""
[ -f "$venv_stamp" ] && venv_have="$(<"$venv_stamp")"
repair=()
if [ -x .venv/bin/python ] && ! .venv/bin/python -c 'import tickcast' >/dev/null 2>&1; then
  # uv sync trusts the installed metadata; a lost editable hook needs the project reinstalled.
  repair=(--reinstall-package tickcast)
elif [ "${TICKCAST_SYNC:-0}" != "1" ] && [ "$venv_have" = "$venv_want" ] && [ -x .venv/bin/python ]; then
  exit 0
fi

# The stamp goes first, so an interrupted sync is never taken for a finished one.
rm -f "$venv_stamp"
# --frozen: install exactly uv.lock; --compile-bytecode: PYTHONDONTWRITEBYTECODE would otherwise make
# every import of the heavy libraries pay the compile cost again.
"$tools/bin/uv" sync --frozen --compile-bytecode --quiet --python "$python" ${repair[@]+"${repair[@]}"}
printf '%s\n' "$venv_want" > "$venv_stamp"
