"""``python -m emulators.apim [--host H] [--port P] [--backend URL] [--policy FILE]``: serve the gateway.

Defaults come from :mod:`emulators.settings`: ``stack.host``, ``stack.gateway_port``,
``settings.function_url`` and ``gateway.policy_file``; subscription keys from
``TICKCAST_GATEWAY__SUBSCRIPTION_KEYS``. The enforced policy (limits, headers, skipped elements) is logged
at startup; a policy the gateway must not run (see :mod:`emulators.apim.policy`) stops it with exit code 2.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import uvicorn

from emulators.apim.app import DEFAULT_TIMEOUT_S, HEALTH_PATH, create_app
from emulators.apim.policy import PolicyError
from emulators.settings import StandInSettingsError, get_stand_in_settings

log = logging.getLogger("emulators.apim")


def main(argv: list[str] | None = None) -> None:
    try:
        settings = get_stand_in_settings()
    except StandInSettingsError as err:
        sys.exit(str(err))  # the variable to fix, on stderr; exit code 1
    parser = argparse.ArgumentParser(prog="python -m emulators.apim", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default=settings.stack.host, help="address to bind (default: %(default)s)")
    parser.add_argument("--port", type=int, default=settings.stack.gateway_port, help="port (default: %(default)s)")
    parser.add_argument("--backend", default=settings.function_url, help="backend base URL (default: %(default)s)")
    parser.add_argument(
        "--policy", type=Path, default=settings.gateway.policy_file, help="APIM policy XML (default: %(default)s)"
    )
    parser.add_argument(
        "--timeout", type=float, default=DEFAULT_TIMEOUT_S, help="seconds per backend call (default: %(default)s)"
    )
    parser.add_argument("--log-level", default="info", help="log level (default: %(default)s)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        app = create_app(settings, backend_url=args.backend, policy=args.policy, timeout_s=args.timeout)
    except PolicyError as err:
        log.error("refusing to start: %s", err)
        sys.exit(2)
    log.info("gateway on http://%s:%d (health: %s)", args.host, args.port, HEALTH_PATH)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, server_header=False)


if __name__ == "__main__":
    main()
