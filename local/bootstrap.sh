#!/usr/bin/env bash
# Installs everything tickcast needs, from nothing but python3 (>= 3.11) and this checkout.
# Idempotent and quick when already done (~0.1 s): safe to run before every command.
#
#   .tickcast/tools/   uv and just, in a small venv of their own (pinned below)
#   .venv/             the project's environment, exactly as uv.lock pins it (bytecode compiled)
#
# Node packages (Azurite) are installed by `tickcast up` itself, into .tickcast/cache/node.
set -euo pipefail

UV_VERSION="0.13.8"
JUST_VERSION="1.59.0"

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tools="$root/.tickcast/tools"
stamp="$tools/.versions"
want="uv==$UV_VERSION rust-just==$JUST_VERSION"
python="${PYTHON:-python3}"

if ! command -v "$python" >/dev/null 2>&1; then
  echo "tickcast: $python not found; install Python 3.11-3.13 (or set PYTHON=/path/to/python3)" >&2
  exit 1
fi
if ! "$python" -c 'import sys; sys.exit(0 if (3, 11) <= sys.version_info[:2] < (3, 14) else 1)'; then
  echo "tickcast: $("$python" --version 2>&1) is not supported; install Python 3.11-3.13 (or set PYTHON=...)" >&2
  exit 1
fi

if [ ! -x "$tools/bin/uv" ] || [ ! -x "$tools/bin/just" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "tickcast: installing uv $UV_VERSION and just $JUST_VERSION into $tools" >&2
  rm -rf "$tools"
  "$python" -m venv "$tools"
  "$tools/bin/python" -m pip install --quiet --disable-pip-version-check $want
  echo "$want" > "$stamp"
fi

cd "$root"
# --frozen: install exactly uv.lock; --compile-bytecode: PYTHONDONTWRITEBYTECODE would otherwise make
# every import of the heavy libraries pay the compile cost again.
"$tools/bin/uv" sync --frozen --compile-bytecode --quiet --python "$python"
