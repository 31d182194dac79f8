"""``python -m emulators.aml_endpoint [--host H] [--port P] [--state-dir DIR] [--kind K] [--auth-mode M]``: serve the
stand-in with uvicorn.

Defaults: ``stack.host``, ``stack.endpoint_port`` and ``<stack.home>/data/endpoint`` of :mod:`emulators.settings`;
the key and the request timeout come from ``TICKCAST_SERVING__*``, MLflow from ``TICKCAST_MLFLOW__*``, the
endpoint's Azure coordinates (checked on AML token requests) from ``TICKCAST_AML__*``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import uvicorn

from emulators.aml_endpoint.app import create_app, default_state_dir
from emulators.settings import StandInSettingsError, get_stand_in_settings


def main(argv: list[str] | None = None) -> None:
    try:
        settings = get_stand_in_settings()
    except StandInSettingsError as err:
        sys.exit(str(err))  # the variable to fix, on stderr; exit code 1
    parser = argparse.ArgumentParser(prog="python -m emulators.aml_endpoint", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default=settings.stack.host, help="address to bind (default: %(default)s)")
    parser.add_argument("--port", type=int, default=settings.stack.endpoint_port, help="port (default: %(default)s)")
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=default_state_dir(settings),
        help="deployments and state.json (default: %(default)s)",
    )
    parser.add_argument(
        "--model-errors",
        choices=["aml", "passthrough"],
        default="aml",
        help="non-200 answers of score.py: 424 + ms-azureml-model-error-statuscode like AML (default), or as is",
    )
    parser.add_argument(
        "--kind",
        choices=["managed", "kubernetes"],
        default="managed",
        help="kubernetes: refuse Microsoft Entra ID tokens, as AML's Kubernetes endpoints do (default: %(default)s)",
    )
    parser.add_argument(
        "--auth-mode",
        choices=["key", "aml_token"],
        default="key",
        help="/score takes the endpoint key, or AML tokens from the ARM-shaped token API (default: %(default)s)",
    )
    parser.add_argument("--log-level", default="info", help="uvicorn log level (default: %(default)s)")
    args = parser.parse_args(argv)
    app = create_app(
        settings, state_dir=args.state_dir, model_errors=args.model_errors, kind=args.kind, auth_mode=args.auth_mode
    )
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)


if __name__ == "__main__":
    main()
