"""What every benchmark shares: free ports for a private stack, the machine description, percentiles."""

from __future__ import annotations

import os
import platform
from typing import Any

import psutil

from tickcast_dev.stack.procs import free_ports

__all__ = ["free_ports", "machine", "percentile", "stack_ports"]


def machine() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
    }


def stack_ports() -> dict[str, int]:
    """A free port for every ``*_port`` setting of the stack, so a benchmark never meets a running stack."""
    from tickcast.settings import StackSettings

    fields = [name for name in StackSettings.model_fields if name.endswith("_port")]
    return dict(zip(fields, free_ports(len(fields)), strict=True))


def percentile(values: list[float], pct: float) -> float:
    """Linear-interpolated percentile (``pct`` in 0..100) of a non-empty list."""
    xs = sorted(values)
    if len(xs) == 1:
        return xs[0]
    pos = (len(xs) - 1) * pct / 100
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)
