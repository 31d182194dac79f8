"""Figures for a training run (matplotlib Agg, no pyplot state, no TensorFlow here).

Each function returns a :class:`matplotlib.figure.Figure` on an Agg canvas; the caller logs it
(``mlflow.log_figure(fig, "plots/name.png")``) or saves it. Figures are not registered with pyplot,
so they are garbage-collected like any object and never open a window.

* :func:`training_curve`: training and validation loss per epoch, the best epoch (the one whose
  weights early stopping restored) marked.
* :func:`predicted_vs_actual`: left, the held-out closes over time with the model's and
  persistence's forecasts; right, predicted MOVE vs actual MOVE (in basis points of the last close).
  Persistence is the horizontal line at 0: a model that only learned "flat" sits on it, a model with
  skill leans towards the diagonal.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from numpy.typing import ArrayLike

from tickcast.model.evaluation import directional_accuracy


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def training_curve(history: Mapping[str, Sequence[float]]) -> Figure:
    """Loss and validation loss per epoch (1-based), best validation epoch marked."""
    loss = np.asarray(history.get("loss", []), dtype=np.float64)
    if loss.size == 0:
        raise ValueError("history has no 'loss' values")
    val = np.asarray(history.get("val_loss", []), dtype=np.float64)
    epochs = np.arange(1, len(loss) + 1)

    fig = _figure(7, 4.5)
    ax = fig.add_subplot()
    ax.plot(epochs, loss, marker="o", markersize=3, label="training loss")
    monitored, name = (val, "validation loss") if val.size else (loss, "training loss")
    if val.size:
        ax.plot(np.arange(1, len(val) + 1), val, marker="o", markersize=3, label="validation loss")
    best = int(np.nanargmin(monitored))
    ax.axvline(best + 1, color="grey", linestyle=":", linewidth=1)
    ax.plot(
        [best + 1],
        [monitored[best]],
        marker="*",
        markersize=14,
        color="C3",
        linestyle="none",
        label=f"best epoch {best + 1} ({name} {monitored[best]:.4f})",
    )
    ax.axhline(1.0, color="grey", linestyle="--", linewidth=0.8, label="1.0 = variance of the scaled target")
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("MSE (standardised log return)")
    ax.set_title("Training curve")
    ax.legend(loc="best", fontsize="small")
    ax.grid(alpha=0.3)
    return fig


def _time_values(ts: ArrayLike) -> np.ndarray:
    """Datetimes as naive-UTC datetime64 (tz-aware Timestamps included); numbers unchanged."""
    arr = np.asarray(ts)
    if arr.dtype.kind in "iuf":
        return arr
    import pandas as pd

    idx = pd.DatetimeIndex(pd.to_datetime(arr, utc=True)).tz_convert(None)
    return np.asarray(idx.to_numpy())


def predicted_vs_actual(
    ts: ArrayLike,
    actual: ArrayLike,
    predicted: ArrayLike,
    persistence: ArrayLike | None = None,
    *,
    symbol: str = "",
    symbols: ArrayLike | None = None,
) -> Figure:
    """Held-out closes over time beside the forecasts, and predicted vs actual move.

    ``actual``: the closes that happened; ``predicted``: the model's forecasts of them;
    ``persistence``: the last close before each (= persistence's forecast). Moves are measured from
    ``persistence``; without it, from the previous actual close (the first point is then dropped).

    The time panel shows one series: the rows of ``symbols`` equal to ``symbol`` when ``symbols`` is
    given (default: the first symbol), else the leading run of increasing ``ts``. The scatter uses
    every row (moves in basis points are comparable across symbols).
    """
    t = _time_values(ts)
    a = np.asarray(actual, dtype=np.float64).reshape(-1)
    p = np.asarray(predicted, dtype=np.float64).reshape(-1)
    if not len(t) == len(a) == len(p):
        raise ValueError(f"ts, actual and predicted must have the same length ({len(t)}, {len(a)}, {len(p)})")
    if len(a) < 2:
        raise ValueError(f"need at least 2 points to plot, got {len(a)}")
    if persistence is not None:
        base = np.asarray(persistence, dtype=np.float64).reshape(-1)
        if len(base) != len(a):
            raise ValueError(f"persistence has {len(base)} values, actual {len(a)}")
        move_a, move_p, base_m = a - base, p - base, base
    else:
        base_m = a[:-1]
        move_a, move_p = a[1:] - base_m, p[1:] - base_m

    # the series shown over time
    if symbols is not None:
        sym = np.asarray(symbols).astype(str).reshape(-1)
        if len(sym) != len(a):
            raise ValueError(f"symbols has {len(sym)} values, actual {len(a)}")
        symbol = symbol or str(sym[0])
        shown = np.flatnonzero(sym == symbol)
    else:
        steps = np.flatnonzero(~(t[1:] > t[:-1]))
        shown = np.arange(steps[0] + 1 if steps.size else len(t))

    fig = _figure(13, 4.8)
    left, right = fig.subplots(1, 2, width_ratios=[2, 1])
    left.plot(t[shown], a[shown], color="black", linewidth=1.0, label="actual close")
    left.plot(t[shown], p[shown], color="C1", linewidth=1.0, alpha=0.9, label="model forecast")
    if persistence is not None:
        left.plot(
            t[shown],
            base[shown],
            color="C0",
            linewidth=0.8,
            linestyle="--",
            alpha=0.7,
            label="persistence (last close)",
        )
    left.set_xlabel("time (UTC)")
    left.set_ylabel("close")
    left.set_title(f"{symbol + ': ' if symbol else ''}held-out window, next-minute close")
    left.legend(loc="best", fontsize="small")
    left.grid(alpha=0.3)
    for label in left.get_xticklabels():
        label.set_rotation(20)

    bp_a = 1e4 * move_a / base_m
    bp_p = 1e4 * move_p / base_m
    accuracy, scored = directional_accuracy(move_a, move_p)
    corr = float(np.corrcoef(bp_a, bp_p)[0, 1]) if len(bp_a) > 2 and bp_a.std() > 0 and bp_p.std() > 0 else np.nan
    right.scatter(bp_a, bp_p, s=6, alpha=0.35, color="C1", edgecolors="none", label="minutes")
    right.axhline(0.0, color="C0", linestyle="--", linewidth=1, label="persistence (no move)")
    if len(bp_a):
        lim = float(np.nanmax(np.abs(bp_a))) or 1.0
        right.plot([-lim, lim], [-lim, lim], color="grey", linestyle=":", linewidth=1, label="perfect forecast")
        right.set_xlim(-lim, lim)
        spread = float(np.nanmax(np.abs(bp_p))) if len(bp_p) else 0.0
        right.set_ylim(-max(spread, 1e-3) * 1.1, max(spread, 1e-3) * 1.1)
    right.set_xlabel("actual move (bp of last close)")
    right.set_ylabel("predicted move (bp of last close)")
    right.set_title(f"direction {100 * accuracy:.1f}% of {scored}, corr {corr:.2f}", fontsize="medium")
    right.legend(loc="upper left", fontsize="small")
    right.grid(alpha=0.3)
    return fig
