"""``tickcast train/promote/evaluate``: a challenger, the gate, live evaluation."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from tickcast.cli._app import (
    _logging,
    _settings,
    app,
    console,
)


def _print_verdict(verdict: object) -> None:
    from tickcast.validation.gate import Verdict

    assert isinstance(verdict, Verdict)
    table = Table(title="challenger vs production vs persistence (held-out minutes unseen by both)")
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
    if verdict.vs_production is not None:
        interval_p = verdict.vs_production.interval_pvalue
        console.print(
            f"Diebold-Mariano p vs production: point {verdict.vs_production.point_pvalue:.4f}, interval score "
            + ("-" if interval_p is None else f"{interval_p:.4f}")
        )
    colour = "green" if verdict.promote else "yellow"
    console.print(f"[{colour}]{'PROMOTE' if verdict.promote else 'KEEP PRODUCTION'}[/{colour}]: {verdict.reason}")
    if verdict.production_note:
        console.print(f"production: {verdict.production_note}")


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
