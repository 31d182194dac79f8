"""``tickcast up/down/status/logs/doctor/reset/run`` and ``tickcast stack compose``: the local harness."""

from __future__ import annotations

import contextlib
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from tickcast.cli._app import (
    _logging,
    _print_status,
    _settings,
    _status_table,
    _supervisor,
    app,
    console,
    err_console,
    stack_app,
)


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
