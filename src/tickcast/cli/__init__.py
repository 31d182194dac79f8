"""The ``tickcast`` command: the user's entry point to the local stack, the pipeline and the cloud deploy.

Commands stay thin: they read settings, call into the product (``tickcast.*``) or the local harness
(``tickcast_dev``; this package is the only product code that reaches it) and print with rich. One module per
command group: :mod:`~tickcast.cli.stack` (the harness), :mod:`~tickcast.cli.data`, :mod:`~tickcast.cli.model`,
:mod:`~tickcast.cli.serve`, :mod:`~tickcast.cli.cloud`; :mod:`~tickcast.cli._app` holds the app and its helpers.
Heavy libraries are imported inside the commands that need them, so ``tickcast --help`` is instant.

Errors: every deliberate error is a :class:`tickcast.errors.TickcastError`; ONE handler (:class:`_Commands`)
prints its message in red and exits with its ``exit_code``. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

# each module registers its commands on the app; this order is the order of `tickcast --help`
# isort: off
from tickcast.cli import stack  # noqa: F401
from tickcast.cli import data  # noqa: F401
from tickcast.cli import model  # noqa: F401
from tickcast.cli import serve  # noqa: F401
from tickcast.cli import cloud  # noqa: F401

# isort: on
from tickcast.cli._app import NO_MODEL_EXIT, app, console, err_console

__all__ = ["NO_MODEL_EXIT", "app", "console", "err_console"]
