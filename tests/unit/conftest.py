"""Fixtures shared by several unit-test modules."""

from tests.support.cloud_validators import tool_python

__all__ = ["tool_python"]
