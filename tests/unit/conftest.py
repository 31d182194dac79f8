"""Fixtures shared by several unit-test modules, and the unit tests' isolation from the environment."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.support.cloud_validators import tool_python
from tickcast.settings import get_settings

__all__ = ["tool_python"]


@pytest.fixture(scope="module", autouse=True)
def no_tickcast_environment() -> Iterator[None]:
    """Every unit-test module runs without ``TICKCAST_*`` variables and with no cached settings.

    A test worker that also runs an integration group has that group's private stack exported into its
    environment (tests/integration/conftest.py); a developer's shell may have its own. Unit tests build the
    settings they need; the variables come back after the module, for the integration tests.
    """
    with pytest.MonkeyPatch.context() as mp:
        for name in [n for n in os.environ if n.startswith("TICKCAST_")]:
            mp.delenv(name)
        get_settings.cache_clear()
        yield
    get_settings.cache_clear()
