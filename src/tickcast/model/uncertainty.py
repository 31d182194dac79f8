"""Forecast uncertainty: from a log-return location and scale to a price interval, and how to score it.

Every model (baseline and LSTM) forecasts the next-minute log return ``r`` as a Gaussian with location
``mu`` and scale ``sigma`` (both in log-return units, after :class:`~tickcast.model.preprocessing.Preprocessing`
un-scaled them). The price interval at central level ``L`` is the lognormal one::

    lower = last_close · exp(mu − z·sigma),  upper = last_close · exp(mu + z·sigma),  z = Φ⁻¹((1 + L) / 2)

(z = 1.2816 for L = 0.8). The point forecast stays ``last_close · exp(mu)`` (the median), so the interval
always contains it.

Scores (all pure NumPy, all "lower is better" except coverage):

* :func:`coverage` — share of actual closes inside ``[lower, upper]``; a calibrated 80 % interval covers 0.8.
* :func:`interval_score` — Gneiting & Raftery's interval (Winkler) score at level L, per minute:
  ``(upper − lower) + (2/α)·(lower − y)⁺ + (2/α)·(y − upper)⁺`` with ``α = 1 − L``; a proper score: it
  rewards narrow intervals and punishes misses in proportion to how far they miss.
* :func:`calibrate_scale` — the factor ``k`` that makes ``mu ± z·k·sigma`` cover exactly ``L`` of a sample
  (the empirical L-quantile of ``|r − mu| / sigma`` over ``z``); models store it per symbol.

No SciPy: :class:`statistics.NormalDist` gives the quantiles.
"""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np
import numpy.typing as npt

DEFAULT_LEVEL = 0.8
FloatArray = npt.NDArray[np.float64]


def check_level(level: float) -> float:
    """``level`` as a float in (0, 1), or :class:`ValueError` saying what is allowed."""
    value = float(level)
    if not (math.isfinite(value) and 0.0 < value < 1.0):
        raise ValueError(f"interval level must be strictly between 0 and 1 (e.g. 0.8), got {level!r}")
    return value


def z_of(level: float) -> float:
    """The standard normal quantile of a central interval: Φ⁻¹((1 + level) / 2)."""
    return NormalDist().inv_cdf((1.0 + check_level(level)) / 2.0)


def price_interval(
    last_close: npt.ArrayLike, mu: npt.ArrayLike, sigma: npt.ArrayLike, level: float
) -> tuple[FloatArray, FloatArray]:
    """(lower, upper) closes of the central ``level`` interval of a Gaussian log return (see the module)."""
    z = z_of(level)
    last = np.asarray(last_close, dtype=np.float64)
    m = np.asarray(mu, dtype=np.float64)
    s = np.asarray(sigma, dtype=np.float64)
    return last * np.exp(m - z * s), last * np.exp(m + z * s)


def _vectors(*arrays: npt.ArrayLike) -> list[FloatArray]:
    out = [np.asarray(a, dtype=np.float64).reshape(-1) for a in arrays]
    if len({len(a) for a in out}) != 1:
        raise ValueError(f"arrays must have the same length, got {[len(a) for a in out]}")
    if not len(out[0]):
        raise ValueError("no intervals to score")
    return out


def hits(actual: npt.ArrayLike, lower: npt.ArrayLike, upper: npt.ArrayLike) -> npt.NDArray[np.bool_]:
    """Per minute: is the actual close inside ``[lower, upper]``?"""
    y, lo, hi = _vectors(actual, lower, upper)
    return (y >= lo) & (y <= hi)


def coverage(actual: npt.ArrayLike, lower: npt.ArrayLike, upper: npt.ArrayLike) -> float:
    """Share of actual closes inside their interval."""
    return float(hits(actual, lower, upper).mean())


def interval_scores(actual: npt.ArrayLike, lower: npt.ArrayLike, upper: npt.ArrayLike, level: float) -> FloatArray:
    """Per-minute interval (Winkler) score at ``level``, in the units of the inputs."""
    y, lo, hi = _vectors(actual, lower, upper)
    alpha = 1.0 - check_level(level)
    return (hi - lo) + (2.0 / alpha) * np.maximum(lo - y, 0.0) + (2.0 / alpha) * np.maximum(y - hi, 0.0)


def interval_score(actual: npt.ArrayLike, lower: npt.ArrayLike, upper: npt.ArrayLike, level: float) -> float:
    """Mean interval score (lower is better)."""
    return float(interval_scores(actual, lower, upper, level).mean())


def calibrate_scale(residual: npt.ArrayLike, sigma: npt.ArrayLike, level: float) -> float:
    """``k`` such that ``|residual| <= z·k·sigma`` holds for a share ``level`` of the sample.

    ``residual = r − mu`` (log returns), ``sigma`` the model's scale. Non-finite pairs and ``sigma <= 0``
    are ignored; with nothing left, :class:`ValueError`.
    """
    r = np.asarray(residual, dtype=np.float64).reshape(-1)
    s = np.asarray(sigma, dtype=np.float64).reshape(-1)
    if r.shape != s.shape:
        raise ValueError(f"residual and sigma must have the same length, got {r.shape} and {s.shape}")
    ok = np.isfinite(r) & np.isfinite(s) & (s > 0)
    if not ok.any():
        raise ValueError("no finite residual with a positive scale to calibrate on")
    ratio = np.abs(r[ok]) / s[ok]
    return float(np.quantile(ratio, check_level(level)) / z_of(level))
