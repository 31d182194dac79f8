"""``tickcast backfill/produce/ingest``: market data into Kafka and the lake."""

from __future__ import annotations

import contextlib
from typing import Annotated

import typer

from tickcast.cli._app import (
    _logging,
    _settings,
    app,
    console,
    err_console,
)


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
