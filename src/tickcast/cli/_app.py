"""The ``tickcast`` Typer app, its one error handler and the helpers every command group shares."""

from __future__ import annotations

from typing import Any

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
