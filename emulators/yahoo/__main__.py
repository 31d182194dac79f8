"""``python -m emulators.yahoo [--host H] [--port P]``: serve the emulator with uvicorn.

Host and port default to ``stack.host`` and ``stack.yahoo_port`` of :mod:`emulators.settings`; everything else
(mode, seed, phi, clock) comes from ``TICKCAST_EMULATOR__*``, the symbols from ``TICKCAST_SYMBOLS``.
"""

from __future__ import annotations

import argparse
import sys

import uvicorn

from emulators.settings import StandInSettingsError, get_stand_in_settings
from emulators.yahoo.app import create_app


def main(argv: list[str] | None = None) -> None:
    try:
        settings = get_stand_in_settings()
    except StandInSettingsError as err:
        sys.exit(str(err))  # the variable to fix, on stderr; exit code 1
    parser = argparse.ArgumentParser(prog="python -m emulators.yahoo", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default=settings.stack.host, help="address to bind (default: %(default)s)")
    parser.add_argument("--port", type=int, default=settings.stack.yahoo_port, help="port (default: %(default)s)")
    parser.add_argument("--log-level", default="info", help="uvicorn log level (default: %(default)s)")
    args = parser.parse_args(argv)
    app = create_app(settings)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)


if __name__ == "__main__":
    main()
