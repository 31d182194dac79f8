"""Live evaluation: served forecasts joined with the closes that came true. Pure logic, no I/O.

Input: rows of the prediction log (:mod:`tickcast.lake.predictions`) and lake bars (``symbol, ts, close``).
A forecast made ``as_of`` minute ``t`` is for the close of ``t + 1``; persistence for it is the close of ``t``.

* **Duplicates**: the same forecast served many times (every GET within a minute) counts ONCE per
  (symbol, as_of, model_version) — the first served row.
* **Missing bars are counted, never invented**: a forecast whose realized close (or whose own last close) is
  not in the lake is *pending* while its target minute is less than ``grace_minutes`` old (the bar may still
  be on its way), and *missing* after that (a halt, a gap, the session's end). Neither is scored.
* **Late bars**: evaluation is recomputed from the log and the lake each time, so a bar that arrives late
  is simply used by the next evaluation.

Per model version (:class:`LiveScores`): forecasts, evaluated minutes ``n``, missing, pending, RMSE of the
model and of persistence (bp of the last close), skill = 1 − RMSE/RMSE_persistence, interval coverage and
interval score at the served level, and the one-sided Diebold-Mariano p-values "worse than persistence" and
"better than persistence" on squared errors.

:func:`rollback_reason` is the rule (decision 0054): with at least ``min_minutes`` evaluated minutes,
production is rolled back when it is significantly worse than persistence (p < ``alpha``) or when its
coverage is more than ``coverage_tolerance`` from nominal.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd

from tickcast.model.evaluation import diebold_mariano
from tickcast.model.uncertainty import interval_scores

KEY = ["symbol", "as_of", "model_version"]


@dataclass(frozen=True)
class LiveScores:
    """Live scores of one model version (module docstring); NaN where nothing was evaluated."""

    model_version: str
    model_kind: str
    forecasts: int
    n: int
    missing: int
    pending: int
    rmse_bp: float
    persistence_rmse_bp: float
    skill: float
    coverage: float
    interval_score_bp: float
    level: float
    dm_p_worse: float
    dm_p_better: float
    first_as_of: str | None
    last_as_of: str | None

    def metrics(self) -> dict[str, float]:
        """The numbers for MLflow (finite ones only)."""
        keys = (
            "forecasts", "n", "missing", "pending", "rmse_bp", "persistence_rmse_bp", "skill", "coverage",
            "interval_score_bp", "dm_p_worse", "dm_p_better",
        )  # fmt: skip
        out = {k: float(getattr(self, k)) for k in keys}
        return {k: v for k, v in out.items() if math.isfinite(v)}

    def summary(self) -> str:
        """One line for status, tags and logs."""
        if not self.n:
            return (
                f"v{self.model_version} ({self.model_kind}): {self.forecasts} forecasts, none evaluated yet "
                f"({self.missing} missing bars, {self.pending} pending)"
            )
        return (
            f"v{self.model_version} ({self.model_kind}): n {self.n}, RMSE {self.rmse_bp:.3f} bp vs persistence "
            f"{self.persistence_rmse_bp:.3f} bp (skill {self.skill:+.4f}, DM p worse {self.dm_p_worse:.3f}), "
            f"{self.level:.0%} coverage {self.coverage:.1%}, interval score {self.interval_score_bp:.3f} bp; "
            f"{self.missing} missing bars, {self.pending} pending"
        )

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _closes(bars: pd.DataFrame) -> pd.DataFrame:
    """symbol, ts, close with one row per (symbol, ts): the lake's last revision wins."""
    if not len(bars):
        return pd.DataFrame({"symbol": pd.Series(dtype=object), "ts": pd.Series(dtype="datetime64[s, UTC]"),
                             "close": pd.Series(dtype=float)})  # fmt: skip
    frame = bars[["symbol", "ts", "close"]].copy()
    frame["ts"] = pd.to_datetime(frame["ts"], utc=True)
    return frame.drop_duplicates(["symbol", "ts"], keep="last")


def joined(log: pd.DataFrame, bars: pd.DataFrame, now: datetime, grace_minutes: int = 3) -> pd.DataFrame:
    """One row per distinct forecast with ``last_close``, ``actual`` and ``state`` (scored/missing/pending)."""
    rows = log.copy()
    rows["as_of"] = pd.to_datetime(rows["as_of"], utc=True)
    if "served_at" in rows:
        rows = rows.sort_values("served_at", kind="stable")
    rows = rows.drop_duplicates(KEY, keep="first").reset_index(drop=True)
    closes = _closes(bars)
    last = closes.rename(columns={"ts": "as_of", "close": "last_close"})
    nxt = closes.assign(as_of=closes["ts"] - pd.Timedelta(minutes=1)).drop(columns="ts")
    rows = rows.merge(last, on=["symbol", "as_of"], how="left")
    rows = rows.merge(nxt.rename(columns={"close": "actual"}), on=["symbol", "as_of"], how="left")
    known = rows["last_close"].notna() & rows["actual"].notna()
    target = rows["as_of"] + pd.Timedelta(minutes=1)
    settled = target + pd.Timedelta(minutes=grace_minutes) < pd.Timestamp(now).tz_convert("UTC")
    rows["state"] = np.where(known, "scored", np.where(settled, "missing", "pending"))
    return rows


def scores(rows: pd.DataFrame, version: str) -> LiveScores:
    """:class:`LiveScores` of ``version`` from :func:`joined` rows."""
    mine = rows[rows["model_version"].astype(str) == version]
    scored = mine[mine["state"] == "scored"]
    nan = float("nan")
    level = float(mine["level"].dropna().iloc[0]) if mine["level"].notna().any() else nan
    rmse = rmse_p = skill = coverage = iscore = worse = better = nan
    if len(scored):
        last = scored["last_close"].to_numpy(float)
        actual = scored["actual"].to_numpy(float)
        err = (scored["predicted_close"].to_numpy(float) - actual) / last * 1e4
        ref = (last - actual) / last * 1e4
        rmse, rmse_p = float(np.sqrt(np.mean(err**2))), float(np.sqrt(np.mean(ref**2)))
        skill = (1.0 - rmse / rmse_p) if rmse_p > 0 else (0.0 if rmse == 0 else -math.inf)
        if len(scored) >= 2:
            _, better = diebold_mariano(err, ref)
            _, worse = diebold_mariano(ref, err)
        lower, upper = scored["lower"].to_numpy(float), scored["upper"].to_numpy(float)
        has = np.isfinite(lower) & np.isfinite(upper)
        if has.any():
            coverage = float(((actual >= lower) & (actual <= upper))[has].mean())
            if math.isfinite(level):
                bp = 1e4 / last[has]
                iscore = float(interval_scores(actual[has] * bp, lower[has] * bp, upper[has] * bp, level).mean())
    return LiveScores(
        model_version=version,
        model_kind=str(mine["model_kind"].iloc[0]) if len(mine) else "",
        forecasts=len(mine),
        n=len(scored),
        missing=int((mine["state"] == "missing").sum()),
        pending=int((mine["state"] == "pending").sum()),
        rmse_bp=rmse,
        persistence_rmse_bp=rmse_p,
        skill=skill,
        coverage=coverage,
        interval_score_bp=iscore,
        level=level,
        dm_p_worse=worse,
        dm_p_better=better,
        first_as_of=mine["as_of"].min().isoformat() if len(mine) else None,
        last_as_of=mine["as_of"].max().isoformat() if len(mine) else None,
    )


def evaluate(log: pd.DataFrame, bars: pd.DataFrame, now: datetime, grace_minutes: int = 3) -> list[LiveScores]:
    """Live scores of every model version in ``log`` (newest version first)."""
    if not len(log):
        return []
    rows = joined(log, bars, now, grace_minutes)
    versions = sorted(
        {str(v) for v in rows["model_version"]}, key=lambda v: (not v.isdigit(), -int(v) if v.isdigit() else 0, v)
    )
    return [scores(rows, v) for v in versions]


def rollback_reason(live: LiveScores, *, min_minutes: int, alpha: float, coverage_tolerance: float) -> str | None:
    """Why production must be rolled back (None: keep it). Needs ``min_minutes`` evaluated minutes."""
    if live.n < min_minutes:
        return None
    if math.isfinite(live.dm_p_worse) and live.dm_p_worse < alpha:
        return (
            f"v{live.model_version} is significantly worse than persistence live: RMSE {live.rmse_bp:.3f} bp vs "
            f"{live.persistence_rmse_bp:.3f} bp over {live.n} minutes (Diebold-Mariano p = {live.dm_p_worse:.4f} "
            f"< {alpha})"
        )
    if math.isfinite(live.coverage) and abs(live.coverage - live.level) > coverage_tolerance:
        return (
            f"v{live.model_version}'s {live.level:.0%} interval covered {live.coverage:.1%} of {live.n} live "
            f"minutes, more than {100 * coverage_tolerance:.0f} points from nominal"
        )
    return None
