"""Benchmark: the forecasts a real market gets, walk-forward on the shared real tape (read at runtime).

    python bench/markets.py [--out bench/results/markets.json] [--no-lstm]

The tape (the Yahoo emulator's ``emulator.tape_dir``: real 1-minute bars, 4 symbols, 6 sessions) is never copied. For
each held-out session ``d`` from the 4th on, with only the sessions before ``d`` as history:

1. the **baseline** is built with its interval calibrated on the history (what a fresh stack serves);
2. an **LSTM** is trained on the history as the retrain job would (its own temporal split, its interval
   calibrated on its validation split) and judged by the real gate against that baseline on its own
   held-out minutes (``--no-lstm`` skips this: production is then the baseline);
3. **production** is the gate's winner; on session ``d`` (unseen by both) the benchmark reports its point
   RMSE vs persistence (bp of the last close), its 80 % coverage, and its interval score against a
   CONSTANT-width interval (per symbol, the history's 80 % quantile of |one-minute log return|), with the
   one-sided Diebold-Mariano p of "production's interval score is lower".

Targets (issue 11): pooled coverage in [0.77, 0.83]; production RMSE <= persistence on every held-out window.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.common import machine
from tickcast.settings import PROJECT_ROOT, load_settings

LEVEL = 0.8


def read_tape(tape_dir: Path) -> pd.DataFrame:
    frames = []
    for path in sorted(tape_dir.glob("*.csv.gz")):
        frame = pd.read_csv(path)
        frame["symbol"] = path.name.removesuffix(".csv.gz")
        frame["ts"] = pd.to_datetime(frame["ts"], utc=True).astype("datetime64[s, UTC]")
        frames.append(frame)
    if not frames:
        raise SystemExit(f"no tape in {tape_dir}")
    return pd.concat(frames, ignore_index=True)


def constant_interval(history: pd.DataFrame, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Per symbol: last close · exp(±q), q the history's LEVEL-quantile of |one-minute log return|."""
    q = {}
    for sym, bars in history.groupby("symbol"):
        bars = bars.sort_values("ts")
        same_day = bars["ts"].dt.date.eq(bars["ts"].dt.date.shift())
        r = np.log(bars["close"] / bars["close"].shift())[same_day & (bars["ts"].diff() == pd.Timedelta(minutes=1))]
        q[sym] = float(np.quantile(np.abs(r.dropna()), LEVEL))
    width = frame["symbol"].map(q).to_numpy(float)
    last = frame["last_close"].to_numpy(float)
    return last * np.exp(-width), last * np.exp(width)


def window(bars: pd.DataFrame, day: Any, *, lstm: bool) -> dict[str, Any]:
    from tickcast.model import baseline, evaluation
    from tickcast.model.predictor import Predictor
    from tickcast.model.training import NotEnoughData, train
    from tickcast.retrain import judge_frame

    cfg = load_settings(_env_file=None)
    start = pd.Timestamp(day).tz_localize("UTC")
    history = bars[bars["ts"] < start]
    session = bars[(bars["ts"] >= start) & (bars["ts"] < start + pd.Timedelta(days=1))]
    symbols = sorted(bars["symbol"].unique())
    model, prep = baseline.build(symbols, bars=history, level=LEVEL)
    base = Predictor(model, prep)
    production, verdict, gate_s = base, None, None
    if lstm:
        t0 = time.monotonic()
        try:
            result = train(history, cfg.model, symbols=symbols, level=LEVEL)
        except NotEnoughData as err:
            verdict = f"not trained: {err}"
        else:
            test = result.test_frame
            incumbent = base.predict_frame(history)[["symbol", "ts", "predicted_close", "lower", "upper"]]
            frame = test.rename(
                columns={"predicted_close": "challenger", "lower": "challenger_lower", "upper": "challenger_upper"}
            ).merge(
                incumbent.rename(
                    columns={"predicted_close": "production", "lower": "production_lower", "upper": "production_upper"}
                ),
                on=["symbol", "ts"],
            )
            v = judge_frame(frame, cfg.model_copy(update={"interval_level": LEVEL}), production_kind="baseline")
            verdict = ("PROMOTE: " if v.promote else "KEEP BASELINE: ") + v.reason
            if v.promote:
                production = Predictor(result.onnx_model, result.preprocessing)
        gate_s = round(time.monotonic() - t0, 1)
    served = production.predict_frame(session, level=LEVEL).dropna().reset_index(drop=True)
    actual, last = served["next_close"].to_numpy(), served["last_close"].to_numpy()
    point = evaluation.forecast_metrics(actual, served["predicted_close"].to_numpy(), last)
    persist = evaluation.forecast_metrics(actual, last, last)
    intervals = evaluation.interval_metrics(actual, served["lower"], served["upper"], last, LEVEL)
    c_lo, c_hi = constant_interval(history, served)
    constant = evaluation.interval_metrics(actual, c_lo, c_hi, last, LEVEL)
    _, p = evaluation.diebold_mariano_losses(
        evaluation.interval_losses_bp(actual, served["lower"], served["upper"], last, LEVEL),
        evaluation.interval_losses_bp(actual, c_lo, c_hi, last, LEVEL),
    )
    return {
        "session": str(day),
        "production": production.model_kind,
        "gate": verdict,
        "train_and_gate_s": gate_s,
        "n": len(served),
        "rmse_bp": point["rmse_bp"],
        "persistence_rmse_bp": persist["rmse_bp"],
        "rmse_le_persistence": point["rmse_bp"] <= persist["rmse_bp"] + 1e-9,
        "coverage": intervals["coverage"],
        "covered": round(intervals["coverage"] * len(served)),
        "interval_score_bp": intervals["interval_score_bp"],
        "width_bp": intervals["width_bp"],
        "constant_coverage": constant["coverage"],
        "constant_interval_score_bp": constant["interval_score_bp"],
        "dm_p_interval_vs_constant": p,
        "interval_scale": {s: round(float(k), 3) for s, k in production.preprocessing.extra["interval_scale"].items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=PROJECT_ROOT / "bench" / "results" / "markets.json")
    parser.add_argument("--no-lstm", action="store_true", help="skip training (production = the baseline)")
    args = parser.parse_args()
    from emulators.settings import load_stand_in_settings

    tape = load_stand_in_settings(_env_file=None).emulator.tape_dir
    bars = read_tape(tape)
    days = sorted(bars["ts"].dt.date.unique())
    windows = [window(bars, d, lstm=not args.no_lstm) for d in days[3:]]
    n = sum(w["n"] for w in windows)
    pooled = sum(w["covered"] for w in windows) / n
    result = {
        "machine": machine(),
        "tape": str(tape),
        "sessions": [str(d) for d in days],
        "windows": windows,
        "pooled_coverage": pooled,
        "coverage_in_target": 0.77 <= pooled <= 0.83,
        "rmse_le_persistence_everywhere": all(w["rmse_le_persistence"] for w in windows),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"real tape {tape} ({len(days)} sessions, {bars['symbol'].nunique()} symbols), level {LEVEL:.0%}")
    print(
        f"{'held-out session':<18}{'production':<16}{'n':>6}{'RMSE bp':>9}{'persist.':>9}{'cover':>7}"
        f"{'IS bp':>8}{'const IS':>9}{'DM p':>8}"
    )
    for w in windows:
        print(
            f"{w['session']:<18}{w['production']:<16}{w['n']:>6}{w['rmse_bp']:>9.3f}{w['persistence_rmse_bp']:>9.3f}"
            f"{w['coverage']:>7.3f}{w['interval_score_bp']:>8.3f}{w['constant_interval_score_bp']:>9.3f}"
            f"{w['dm_p_interval_vs_constant']:>8.4f}"
        )
        if w["gate"]:
            print(f"    gate: {w['gate'][:150]}")
    print(
        f"pooled coverage {pooled:.4f} (target [0.77, 0.83]: {'ok' if result['coverage_in_target'] else 'MISSED'}); "
        f"production RMSE <= persistence on every window: {result['rmse_le_persistence_everywhere']}"
    )


if __name__ == "__main__":
    main()
