"""``tickcast predict/smoke/deploy/rollback``: serving through the endpoint and the gateway."""

from __future__ import annotations

from typing import Annotated

import typer

from tickcast.cli._app import (
    _logging,
    _settings,
    app,
    console,
)
from tickcast.errors import NotFoundError


@app.command()
def predict(symbol: Annotated[str, typer.Argument(help="ticker, e.g. SPY")]) -> None:
    """One prediction through the API gateway (local stack, or the cloud with TICKCAST_GATEWAY__URL/CLIENT_KEY)."""
    import json

    from tickcast.api.client import predict as call

    settings = _settings()
    console.print_json(json.dumps(call(settings.gateway_url, settings.gateway_client_key(), symbol.upper())))


@app.command()
def smoke(
    url: Annotated[str | None, typer.Option(help="gateway base URL (default: the local gateway)")] = None,
    key: Annotated[str | None, typer.Option(help="subscription key (default: TICKCAST_GATEWAY__CLIENT_KEY)")] = None,
) -> None:
    """Scripted smoke calls through the gateway: a prediction per symbol and from a session of bars, 401 without a
    key, 422, 404. Exit 0 PASS, 3 NO MODEL YET (nothing deployed yet: not a failure), 1 FAIL."""
    from tickcast.api.client import smoke as run_smoke

    settings = _settings()
    report = run_smoke(url or settings.gateway_url, key or settings.gateway_client_key(), settings.symbols, timeout=30)
    console.print(report.table(), markup=False, highlight=False)
    if report.no_model:
        raise NotFoundError(
            "no model yet: no version is deployed on the endpoint (the first deploy serves one)", code="no_model"
        )
    if not report.ok:
        raise typer.Exit(1)


@app.command()
def deploy(
    version: Annotated[
        str | None,
        typer.Argument(help="registered model version (default: production, else the newest baseline version)"),
    ] = None,
) -> None:
    """Blue/green: the version goes to the idle colour, is smoke-tested, takes the traffic, then becomes production.

    Without a version: the one that should serve (what the pipeline runs on every deploy); exit 3 when nothing is
    registered yet."""
    from tickcast.release.targets import deployer_for, version_to_serve

    settings = _settings()
    _logging()
    deployer = deployer_for(settings)
    if version is None:
        chosen = version_to_serve(deployer.registry)
        if chosen is None:
            raise NotFoundError(
                "no model yet: the registry has no production version and no baseline version (model_kind=baseline) "
                "to serve; nothing was deployed",
                code="no_model",
            )
        version, why = chosen
        console.print(f"deploying model version {version} ({why})")
    report = deployer.deploy(version)
    console.print(report.summary())


@app.command()
def rollback() -> None:
    """Serve the `previous` version again (blue/green, smoke-tested); the aliases swap back."""
    from tickcast.release.targets import deployer_for

    settings = _settings()
    _logging()
    report = deployer_for(settings).rollback()
    console.print(report.summary())
