"""``python -m tickcast.cli``: the same as the ``tickcast`` command."""

from tickcast.cli import app

app()
