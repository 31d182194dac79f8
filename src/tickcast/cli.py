"""The ``tickcast`` command: the user's entry point to the local stack, the pipeline and the cloud deploy.

Commands stay thin: they read settings, call into the product (``tickcast.*``) or the local harness
(``tickcast_dev``; this module is the only product module that reaches it) and print with rich.
Heavy libraries are imported inside the commands that need them, so ``tickcast --help`` is instant.

Errors: every deliberate error is a :class:`tickcast.errors.TickcastError`; ONE handler (:class:`_Commands`)
prints its message in red and exits with its ``exit_code``. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import contextlib
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from typer.core import TyperGroup

from tickcast.errors import NotFoundError, TickcastError
from tickcast.settings import Settings, load_settings

console = Console()
err_console = Console(stderr=True)
# `smoke` and `deploy`: nothing is deployed / registered yet (a new environment, not a failure): a NotFoundError
NO_MODEL_EXIT = NotFoundError.exit_code


class _Commands(TyperGroup):
    """The one CLI error handler: a :class:`TickcastError` becomes its message in red and its exit code."""

    def invoke(self, ctx: Any) -> Any:  # typer's vendored click.Context
        try:
            return super().invoke(ctx)
        except TickcastError as err:
            err_console.print(f"[red]{escape(str(err))}[/red]", highlight=False)
            raise typer.Exit(err.exit_code) from None


app = typer.Typer(
    cls=_Commands, no_args_is_help=True, add_completion=False, help="tickcast: stock-price MLOps pipeline."
)
stack_app = typer.Typer(cls=_Commands, no_args_is_help=True, help="The stack definition (local/stack.toml).")
app.add_typer(stack_app, name="stack")


def _settings() -> Settings:
    return load_settings()


def _supervisor(settings: Settings, **kwargs: Any):  # type: ignore[no-untyped-def]
    from tickcast_dev.stack.supervisor import Supervisor

    return Supervisor(settings, report=lambda msg: console.print(f"  {msg}"), **kwargs)


def _fmt_uptime(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


def _status_table(statuses: list) -> Table:  # type: ignore[type-arg]
    table = Table(title="tickcast local stack")
    for col in ("service", "URL", "PID", "healthy", "uptime", "detail"):
        table.add_column(col)
    for st in statuses:
        mark = "[green]yes[/green]" if st.healthy else ("[red]no[/red]" if st.state == "running" else "[dim]no[/dim]")
        table.add_row(st.name, st.url, str(st.pid or "-"), mark, _fmt_uptime(st.uptime_s), st.detail)
    return table


def _print_status(statuses: list) -> bool:  # type: ignore[type-arg]
    console.print(_status_table(statuses))
    return all(st.healthy for st in statuses)


@app.command()
def up(
    services: Annotated[list[str] | None, typer.Argument(help="only these services (and their dependencies)")] = None,
    tape: Annotated[
        bool,
        typer.Option("--tape", help="the Yahoo emulator replays the real tape (TICKCAST_EMULATOR__TAPE_DIR)"),
    ] = False,
    reload: Annotated[
        bool,
        typer.Option(
            "--reload",
            help="then stay in the foreground and restart the endpoint, the Function app and the gateway when "
            "their source changes (the `watch` lists in local/stack.toml); Ctrl-C stops watching, the stack stays up",
        ),
    ] = False,
) -> None:
    """Install what is missing, start the local stack and wait until every service is healthy."""
    settings = _settings()
    console.print(f"[bold]tickcast up[/bold]  (home {settings.stack.resolved_home()})")
    t0 = time.monotonic()
    # the emulator's own setting, handed to the services it starts; a running emulator keeps its mode until `down`
    sup = _supervisor(settings, emulator={"mode": "tape"} if tape else None)
    statuses = sup.up(services)
    healthy = _print_status(statuses)
    console.print(f"stack up in {time.monotonic() - t0:.1f}s")
    if not healthy:
        raise typer.Exit(1)
    if reload:
        from tickcast_dev.stack.reload import Reloader

        with contextlib.suppress(KeyboardInterrupt):
            Reloader(sup, [st.name for st in statuses]).run()
        console.print("stopped watching; the stack is still up (tickcast down stops it)")


@app.command()
def down() -> None:
    """Stop every service this stack started, with all their child processes."""
    settings = _settings()
    t0 = time.monotonic()
    stopped = _supervisor(settings).down()
    console.print(
        f"stopped {len(stopped)} service(s) in {time.monotonic() - t0:.1f}s" if stopped else "nothing running"
    )


@app.command()
def status(
    stack_only: Annotated[bool, typer.Option("--stack-only", help="only the process table")] = False,
    watch: Annotated[bool, typer.Option("--watch", "-w", help="refresh in place until Ctrl-C")] = False,
    interval: Annotated[float, typer.Option("--interval", min=0.5, help="seconds between refreshes (--watch)")] = 2.0,
) -> None:
    """The stack (service, URL, PID, healthy, uptime) and the pipeline: lake freshness, consumer lag, last
    training vs persistence, the production model, endpoint traffic, Airflow's last runs, the gateway URL,
    whether the pipeline is stuck, and the live evaluation with the prediction log's counts. Every check runs
    at once with short timeouts. Exit 1 when a service is unhealthy or the pipeline is stuck (stale lake in the
    session, failing runs, growing lag)."""
    from concurrent.futures import ThreadPoolExecutor

    from rich.console import Group

    from tickcast_dev import status as pipeline_status
    from tickcast_dev.live_status import live_renderables, live_view

    settings = _settings()
    sup = _supervisor(settings)

    def view() -> tuple[Group, bool]:
        collect = None if stack_only else pipeline_status.start_snapshot(settings)  # runs while the table fills
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="live-status") as pool:
            live = None if stack_only else pool.submit(live_view, settings)  # the live-evaluation section
            statuses = sup.status()
            snap = collect() if collect else None
            items = [_status_table(statuses), *(pipeline_status.renderables(snap) if snap else [])]
            if live is not None:
                items.extend(live_renderables(live.result()))
        return Group(*items), all(st.healthy for st in statuses) and not (snap and snap.stuck)

    if watch:
        pipeline_status.watch(console, view, interval)
        return
    shown, healthy = view()
    console.print(shown)
    if not healthy:
        raise typer.Exit(1)


@app.command()
def logs(
    service: Annotated[str, typer.Argument(help="service name, e.g. airflow")],
    follow: Annotated[bool, typer.Option("-f", "--follow", help="keep printing new lines")] = False,
    lines: Annotated[int, typer.Option("-n", "--lines", help="lines to show")] = 50,
) -> None:
    """Show a service's log."""
    from tickcast_dev.stack.definition import load_stack
    from tickcast_dev.stack.supervisor import tail

    settings = _settings()
    known = list(load_stack())
    if service not in known:
        err_console.print(f"[red]unknown service {service!r}; known: {', '.join(known)}[/red]")
        raise typer.Exit(2)
    path = _supervisor(settings).log_path(service)
    console.print(tail(path, lines), markup=False, highlight=False)
    if follow and path.is_file():
        with path.open("r", encoding="utf-8", errors="replace") as f:
            f.seek(0, 2)
            try:
                while True:
                    line = f.readline()
                    if line:
                        sys.stdout.write(line)
                        sys.stdout.flush()
                    else:
                        time.sleep(0.25)
            except KeyboardInterrupt:
                pass


@app.command()
def doctor() -> None:
    """Check this machine for what the stack needs; every problem comes with its fix."""
    from tickcast_dev.stack.doctor import run_checks

    settings = _settings()
    table = Table(title="tickcast doctor")
    for col in ("check", "ok", "finding", "fix"):
        table.add_column(col)
    results = run_checks(settings)
    for r in results:
        table.add_row(r.name, "[green]yes[/green]" if r.ok else "[red]no[/red]", r.finding, r.fix or "")
    console.print(table)
    if not all(r.ok for r in results):
        raise typer.Exit(1)


@app.command()
def reset(yes: Annotated[bool, typer.Option("--yes", help="really delete local data")] = False) -> None:
    """Stop the stack and delete its data, logs and PID files (installed packages are kept)."""
    settings = _settings()
    if not yes:
        err_console.print(
            f"[red]reset deletes everything under {settings.stack.resolved_home()}/{{data,logs,run}}; "
            "run `tickcast reset --yes` to confirm[/red]"
        )
        raise typer.Exit(2)
    for path in _supervisor(settings).reset():
        console.print(f"  removed {path}")


def _logging(verbose: bool = False) -> None:
    import logging

    from rich.logging import RichHandler

    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(name)s: %(message)s",
        handlers=[RichHandler(console=err_console, show_path=False)],
    )
    for noisy in ("kafka", "azure", "httpx", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


@app.command()
def backfill(
    days: Annotated[int, typer.Option("--days", min=1, max=30, help="days of 1-minute bars to fetch")] = 5,
) -> None:
    """Publish the last N days of closed 1-minute bars of every symbol to Kafka (the ingest DAG stores them)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from tickcast.ingest.producer import backfill as run_backfill

    settings = _settings()
    _logging()
    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console
    ) as progress:
        tasks = {s: progress.add_task(f"backfill {s}", total=None) for s in settings.symbols}

        def update(symbol: str, done: int, total: int) -> None:
            progress.update(tasks[symbol], completed=done, total=total)

        report = run_backfill(settings, days, progress=update)
    rate = report.bars / report.seconds if report.seconds else 0.0
    console.print(f"published {report.bars} bars in {report.seconds:.1f}s ({rate:,.0f} bars/s): {report.per_symbol}")
    for symbol, error in report.errors.items():
        err_console.print(f"[red]{symbol}: {error}[/red]")
    if report.errors:
        raise typer.Exit(1)


@app.command()
def produce() -> None:
    """Run the producer service: poll the source every minute and publish closed bars (Ctrl-C stops)."""
    from tickcast.ingest.producer import serve_producer

    settings = _settings()
    _logging()
    with contextlib.suppress(KeyboardInterrupt):
        serve_producer(settings)


@app.command()
def ingest(
    seconds: Annotated[float, typer.Option(help="consume for at most this long")] = 30.0,
    idle: Annotated[float, typer.Option(help="stop after this many seconds without messages")] = 5.0,
) -> None:
    """Consume the bars topic into the lake once (what the ingest DAG runs every minute)."""
    from tickcast.ingest.consumer import consume_to_lake

    settings = _settings()
    _logging()
    report = consume_to_lake(settings, max_seconds=seconds, idle_seconds=idle)
    console.print(report.as_dict())


def _print_verdict(verdict: object) -> None:
    from tickcast.validation.gate import Verdict

    assert isinstance(verdict, Verdict)
    table = Table(title="challenger vs champion vs persistence (held-out minutes unseen by both)")
    for col in ("forecaster", "RMSE bp", "MAE $", "MAPE %", "direction %", "n"):
        table.add_column(col, justify="right" if col != "forecaster" else "left")
    for row in verdict.table_rows():
        table.add_row(*row)
    console.print(table)
    intervals = Table(
        title=f"{verdict.level:.0%} intervals (coverage must be within {100 * verdict.coverage_tolerance:.0f} points)"
    )
    for col in ("forecaster", "coverage %", "interval score bp", "mean width bp"):
        intervals.add_column(col, justify="right" if col != "forecaster" else "left")
    for interval_row in verdict.interval_rows():
        intervals.add_row(*interval_row)
    console.print(intervals)
    if verdict.vs_champion is not None:
        interval_p = verdict.vs_champion.interval_pvalue
        console.print(
            f"Diebold-Mariano p vs champion: point {verdict.vs_champion.point_pvalue:.4f}, interval score "
            + ("-" if interval_p is None else f"{interval_p:.4f}")
        )
    colour = "green" if verdict.promote else "yellow"
    console.print(f"[{colour}]{'PROMOTE' if verdict.promote else 'KEEP CHAMPION'}[/{colour}]: {verdict.reason}")
    if verdict.champion_note:
        console.print(f"champion: {verdict.champion_note}")


@app.command()
def train(
    progress: Annotated[bool, typer.Option(help="show Keras' per-epoch progress")] = True,
) -> None:
    """Train a challenger on the lake window, log it to MLflow, register it and judge it (no deploy)."""
    from tickcast.retrain import judge, train_and_register
    from tickcast_dev.oracle import emulator_oracle

    settings = _settings()
    _logging()
    result, version = train_and_register(settings, oracle=emulator_oracle(settings), progress=progress)
    t = result.timings
    console.print(
        f"registered {settings.mlflow.model_name} v{version} (alias challenger) — fit {t['fit_s']:.1f}s, "
        f"total {t['total_s']:.1f}s; held-out metrics: "
        + ", ".join(f"{k}={v:.5g}" for k, v in result.metrics.items() if k.endswith(("rmse", "skill")))
    )
    for note in result.notes:
        console.print(f"note: {note}")
    _print_verdict(judge(settings, version))
    console.print("deploy a positive verdict with `tickcast promote`")


@app.command()
def promote(
    version: Annotated[str | None, typer.Option(help="version to judge (default: alias challenger)")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="show the comparison, change nothing")] = False,
) -> None:
    """Judge the challenger against production and persistence; deploy it if it passes the gate."""
    from tickcast.registry.mlflow_registry import Registry
    from tickcast.release.targets import deployer_for
    from tickcast.retrain import judge

    settings = _settings()
    _logging()
    verdict = judge(settings, version)
    _print_verdict(verdict)
    if dry_run or not verdict.promote:
        return
    assert verdict.challenger_version is not None
    deployer_for(settings)(verdict.challenger_version)
    console.print(f"production -> v{verdict.challenger_version}; aliases: {Registry(settings).aliases()}")


@app.command()
def evaluate() -> None:
    """Live evaluation now (what the `evaluate` DAG runs every 5 minutes): served forecasts vs realized closes,
    per model version, to MLflow; rolls production back when it underperforms live."""
    from tickcast.release.targets import deployer_for
    from tickcast.validation.evaluate import run_evaluation

    settings = _settings()
    _logging()
    report = run_evaluation(settings, deployer=deployer_for(settings))
    for line in report.lines():
        console.print(line, highlight=False, markup=False)


@app.command("run")
def run_main(
    days: Annotated[int, typer.Option(min=1, max=7, help="calendar days of history to backfill (7 = ~5 sessions)")] = 7,
) -> None:
    """The main job on a running stack: backfill, ingest, retrain + deploy, and a prediction via the gateway."""
    from tickcast_dev.main_job import run_main_job

    settings = _settings()
    _logging()
    t0 = time.monotonic()
    result = run_main_job(settings, days=days, report=lambda msg: console.print(msg, highlight=False))
    table = Table(
        title=f"predictions through the gateway {settings.gateway_url} "
        f"(production v{result.production_version}, {result.production_kind})"
    )
    for col in ("symbol", "as of (UTC)", "predicted close", "interval", "model"):
        table.add_column(col)
    for sym, p in result.predictions.items():
        iv = p.get("interval") or {}
        shown = f"{iv.get('lower', float('nan')):.4f} .. {iv.get('upper', float('nan')):.4f} ({iv.get('level', 0):.0%})"
        model = f"v{p.get('model_version')} {p.get('model_kind', '')}".strip()
        table.add_row(sym, str(p.get("as_of")), f"{p.get('predicted_close'):.4f}", shown, model)
    console.print(table)
    if result.first_prediction_s is not None:
        console.print(f"first prediction through the gateway {result.first_prediction_s:.0f}s after the job started")
    for sym, error in result.errors.items():
        err_console.print(f"[red]{sym}: {error}[/red]")
    console.print(f"main job done in {time.monotonic() - t0:.0f}s. More predictions:")
    key = settings.gateway_client_key() or "<subscription key>"
    sym = settings.symbols[0]
    console.print(
        f"  curl -s -H 'Ocp-Apim-Subscription-Key: {key}' {settings.gateway_url}/api/predictions/{sym}",
        highlight=False,
        markup=False,
    )
    console.print(f"  .venv/bin/tickcast predict {sym}", highlight=False)
    console.print(
        f"  Airflow {settings.airflow_url}  MLflow {settings.mlflow_tracking_uri}  "
        f"API docs {settings.gateway_url}/api/docs",
        highlight=False,
    )
    if result.errors or not result.predictions:
        raise typer.Exit(1)


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


Env = Annotated[
    str | None, typer.Option("--env", help="dev, test or prod (default TICKCAST_CLOUD_DEPLOY__ENV, else dev)")
]
Subscription = Annotated[
    str | None, typer.Option("--subscription", help="subscription ID (default: settings, else `az account show`)")
]
ResourceGroup = Annotated[str | None, typer.Option("--resource-group", help="resource group (default tickcast-<env>)")]


def _cloud_settings(settings: Settings, **overrides: object) -> Settings:
    """``settings`` with the deploy command's options applied to the ``cloud_deploy`` group (validated)."""
    from tickcast.settings import CloudDeploySettings

    given = {k: v for k, v in overrides.items() if v is not None}
    if not given:
        return settings
    try:
        group = CloudDeploySettings.model_validate({**settings.cloud_deploy.model_dump(exclude_unset=True), **given})
    except ValueError as err:
        err_console.print(f"[red]{err}[/red]")
        raise typer.Exit(2) from None
    return settings.model_copy(update={"cloud_deploy": group})


@app.command("deploy-cloud")
def deploy_cloud(
    env: Env = None,
    what_if: Annotated[bool, typer.Option("--what-if", help="show what would change, change nothing")] = False,
    outputs_only: Annotated[
        bool, typer.Option("--outputs-only", help="only re-read the last deployment's outputs into the dotenv file")
    ] = False,
    resume: Annotated[
        bool,
        typer.Option("--resume", help="wait again for the last deployment (after a lost login) and write its outputs"),
    ] = False,
    parameters_out: Annotated[
        Path | None,
        typer.Option(help="only write the assembled parameter file here (for PSRule / arm-ttk), offline"),
    ] = None,
    subscription: Subscription = None,
    resource_group: ResourceGroup = None,
    location: Annotated[str | None, typer.Option(help="Azure region (default TICKCAST_CLOUD_DEPLOY__LOCATION)")] = None,
    ssh_public_key: Annotated[Path | None, typer.Option(help="OpenSSH public key file for the VMs")] = None,
    apim_publisher_email: Annotated[str | None, typer.Option(help="API Management publisher email")] = None,
    apim_publisher_name: Annotated[str | None, typer.Option(help="API Management publisher name")] = None,
) -> None:
    """Deploy cloud/arm/main.json to Azure (incremental); write the outputs to .tickcast/cloud/<env>.env."""
    from tickcast.cloud_deploy import CloudDeployer, CloudDeployError, OperationStatus

    settings = _cloud_settings(
        _settings(),
        env=env,
        subscription_id=subscription,
        resource_group=resource_group,
        location=location,
        ssh_public_key_path=ssh_public_key,
        apim_publisher_email=apim_publisher_email,
        apim_publisher_name=apim_publisher_name,
    )
    t0 = time.monotonic()

    def progress(op: OperationStatus) -> None:
        colour = {"succeeded": "green", "failed": "red"}.get(op.state.lower(), "dim")
        took = f" ({op.duration})" if op.duration and op.finished else ""
        console.print(f"  [{colour}]{op.state:<10}[/{colour}] {op.resource}{took}", highlight=False)
        if op.error:
            err_console.print(f"    [red]{op.error}[/red]", highlight=False)

    deployer = CloudDeployer(settings, progress=progress)
    try:
        if parameters_out is not None:
            console.print(f"wrote {deployer.write_parameters(parameters_out)}")
            return
        if outputs_only:
            deployer.login()
            outputs, env_file, _, missing = deployer.fetch_outputs()
        elif resume:
            deployer.login()
            with console.status(f"waiting for deployment {deployer.deployment_name} ..."):
                result = deployer.resume()
            outputs, env_file, missing = result.outputs, result.env_file, result.missing_outputs
        else:
            plan = deployer.plan()
            deployer.login()
            where = f"{plan.resource_group} ({plan.location}, subscription {plan.subscription_id})"
            if what_if:
                console.print(f"[bold]what-if[/bold] of {plan.deployment_name} in {where}")
                with console.status("asking Azure Resource Manager what would change ..."):
                    text = deployer.what_if(plan)
                console.print(text, markup=False, highlight=False)
                console.print("nothing was changed (what-if)")
                return
            console.print(f"[bold]deploying[/bold] {plan.deployment_name} to {where} (incremental)")
            with console.status("deploying (AKS and API Management take 20-45 minutes) ..."):
                result = deployer.deploy(plan)
            if result.created_resource_group:
                console.print(f"created resource group {plan.resource_group}")
            outputs, env_file, missing = result.outputs, result.env_file, result.missing_outputs
    except CloudDeployError as err:
        err_console.print(f"[red]{err}[/red]", highlight=False)
        raise typer.Exit(1) from None
    table = Table(title="ARM outputs")
    table.add_column("output")
    table.add_column("value", overflow="fold")
    for name, value in sorted(outputs.items()):
        table.add_row(name, str(value))
    console.print(table)
    for name in missing:
        err_console.print(f"[yellow]the template has no output {name}: its setting was not written[/yellow]")
    console.print(
        f"done in {time.monotonic() - t0:.0f}s; settings for profile cloud in {env_file}\n"
        f"  use them: set -a; . {env_file}; set +a",
        highlight=False,
    )


@app.command("destroy-cloud")
def destroy_cloud(
    env: Env = None,
    subscription: Subscription = None,
    resource_group: ResourceGroup = None,
    yes: Annotated[bool, typer.Option("--yes", help="do not ask to type the resource group's name")] = False,
) -> None:
    """Delete the environment's resource group and everything in it (asks to type its name first)."""
    from tickcast.cloud_deploy import CloudDeployer, CloudDeployError

    settings = _cloud_settings(_settings(), env=env, subscription_id=subscription, resource_group=resource_group)
    deployer = CloudDeployer(settings)
    try:
        deployer.login()
        group, sub = deployer.resource_group, deployer.subscription_id
        if not deployer.resource_group_exists():
            console.print(f"resource group {group} does not exist in subscription {sub}: nothing to delete")
            return
        if not yes:
            typed = typer.prompt(f"this deletes resource group {group} in subscription {sub}; type its name")
            if typed.strip() != group:
                err_console.print("[red]the name did not match: nothing was deleted[/red]")
                raise typer.Exit(1)
        t0 = time.monotonic()
        with console.status(f"purging the AML workspace, then deleting resource group {group} (10-30 minutes) ..."):
            report = deployer.destroy()
    except CloudDeployError as err:
        err_console.print(f"[red]{err}[/red]", highlight=False)
        raise typer.Exit(1) from None
    console.print(f"deleted resource group {group} in {time.monotonic() - t0:.0f}s")
    for line in report.purged if report else []:
        console.print(f"  purged: {line}", highlight=False)
    for line in report.remaining if report else []:
        console.print(f"  remains: {line}", highlight=False)


@stack_app.command("compose")
def stack_compose(
    output: Annotated[Path, typer.Option(help="file to write")] = Path("docker-compose.local.yml"),
    check: Annotated[bool, typer.Option("--check", help="fail if the file differs instead of writing")] = False,
) -> None:
    """Write docker-compose.local.yml from local/stack.toml (or check that it is current)."""
    from tickcast_dev.stack.compose import render_compose

    text = render_compose(_settings())
    if check:
        current = output.read_text(encoding="utf-8") if output.is_file() else ""
        if current != text:
            err_console.print(f"[red]{output} is out of date: run `tickcast stack compose`[/red]")
            raise typer.Exit(1)
        console.print(f"{output} is current")
        return
    output.write_text(text, encoding="utf-8")
    console.print(f"wrote {output}")


if __name__ == "__main__":  # pragma: no cover
    app()
