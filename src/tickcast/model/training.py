"""One training: lake bars -> causal features -> temporal split with embargo -> LSTM+attention -> ONNX.

The split is by TIME, shared by all symbols: the oldest windows train, the next validate (early
stopping), the most recent are held out for the test. Between splits an embargo of one window drops
every window whose inputs overlap the previous split's targets. Scalers are fit per symbol on the
TRAIN windows only and stored as JSON parameters in ``preprocessing.json``.

The interval is calibrated on the VALIDATION windows: one factor on the model's scale, pooled over the
symbols, that makes its ``level`` interval cover ``level`` there (``extra.interval_scale`` of
``preprocessing.json``; decision 0051). Pooled, because per symbol a few hundred validation windows put
about ±3 points of noise on the coverage the factor is fit to (measured on the synthetic market).

The held-out window is scored through the serving path — the exported ONNX model with its own
preprocessing (:class:`tickcast.model.predictor.Predictor`) — beside persistence, the baseline (its
interval calibrated on the minutes before the test window) and, on the synthetic market, the oracle.
What is trained is what is measured is what is served.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd

from tickcast.errors import RefusedError
from tickcast.settings import ModelSettings

OracleFn = Callable[[str, pd.Series], np.ndarray]  # (symbol, ts of the as-of minutes) -> oracle close forecasts


class NotEnoughData(RefusedError):
    """Too little data to train; the message says how much there is and how much is needed."""

    exit_code = 3  # not a failure of the tool: nothing to learn from yet


@dataclass
class TrainingResult:
    keras_model: Any
    onnx_model: bytes
    preprocessing: Any  # tickcast.model.preprocessing.Preprocessing
    history: dict[str, list[float]]
    params: dict[str, Any]
    metrics: dict[str, float]
    test_frame: pd.DataFrame
    data_window: tuple[datetime, datetime]
    train_end: datetime
    test_window: tuple[datetime, datetime]
    dataset_hash: str
    figures: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    comparison: Any = None  # tickcast.model.evaluation.Comparison


def dataset_hash(bars: pd.DataFrame) -> str:
    cols = ["symbol", "ts", "open", "high", "low", "close", "volume"]
    frame = bars[cols].sort_values(["symbol", "ts"]).reset_index(drop=True)
    return hashlib.sha256(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes()).hexdigest()[:16]


def split_times(ts: np.ndarray, cfg: ModelSettings) -> tuple[np.datetime64, np.datetime64]:
    """Cut points (end of train, end of validation) at quantiles of the distinct window times."""
    uniq = np.unique(ts)
    n = len(uniq)
    train_end = uniq[int(n * (1 - cfg.val_fraction - cfg.test_fraction)) - 1]
    val_end = uniq[int(n * (1 - cfg.test_fraction)) - 1]
    return train_end, val_end


def assign_splits(ts: np.ndarray, train_end: np.datetime64, val_end: np.datetime64, window: int) -> np.ndarray:
    """0 = train, 1 = validation, 2 = test, -1 = embargoed (inputs overlap the previous split's targets)."""
    embargo = np.timedelta64(window, "m")
    split = np.full(len(ts), -1, dtype=np.int8)
    split[ts <= train_end] = 0
    split[(ts > train_end + embargo) & (ts <= val_end)] = 1
    split[ts > val_end + embargo] = 2
    return split


def train(
    bars: pd.DataFrame,
    cfg: ModelSettings,
    *,
    symbols: list[str] | None = None,
    oracle: OracleFn | None = None,
    progress: bool = False,
    level: float = 0.8,
) -> TrainingResult:
    """Train, export and evaluate one model on lake bars of one or more symbols (``level``: the served interval)."""
    from tickcast.features.windows import make_windows
    from tickcast.model import architecture, baseline, evaluation, onnx_export, plots
    from tickcast.model.kinds import LSTM_ATTENTION
    from tickcast.model.predictor import Predictor
    from tickcast.model.preprocessing import Preprocessing
    from tickcast.model.uncertainty import calibrate_scale

    t0 = time.monotonic()
    notes: list[str] = []
    wanted = symbols or sorted(bars["symbol"].unique())
    per_symbol: dict[str, Any] = {}
    from tickcast.features.indicators import FEATURES, compute_features

    for sym in wanted:
        sym_bars = bars[bars["symbol"] == sym]
        if sym_bars.empty:
            notes.append(f"{sym}: no bars in the window; left out of this model")
            continue
        w = make_windows(compute_features(sym_bars), cfg.window).trainable()
        if len(w.ts) == 0:
            notes.append(f"{sym}: {len(sym_bars)} bars give no complete window; left out")
            continue
        per_symbol[sym] = w
    if not per_symbol:
        raise NotEnoughData(f"no symbol has a complete {cfg.window}-minute window ({len(bars)} bars in total)")

    all_ts = np.concatenate([np.asarray(w.ts, dtype="datetime64[ns]") for w in per_symbol.values()])
    train_end, val_end = split_times(all_ts, cfg)
    splits = {
        s: assign_splits(np.asarray(w.ts, dtype="datetime64[ns]"), train_end, val_end, cfg.window)
        for s, w in per_symbol.items()
    }
    for sym in [s for s, sp in splits.items() if not (sp == 0).any()]:
        notes.append(f"{sym}: no windows in the training period (data starts too late); left out")
        del per_symbol[sym], splits[sym]
    n_train = int(sum((sp == 0).sum() for sp in splits.values()))
    if n_train < cfg.min_train_windows:
        raise NotEnoughData(
            f"{n_train} training windows across {len(per_symbol)} symbol(s); need at least {cfg.min_train_windows} "
            f"(TICKCAST_MODEL__MIN_TRAIN_WINDOWS) — ingest more days or lower the minimum"
        )

    prep = Preprocessing.fit(
        {s: w.x[splits[s] == 0] for s, w in per_symbol.items()},
        {s: w.target[splits[s] == 0] for s, w in per_symbol.items()},
        features=list(FEATURES),
        window=cfg.window,
        data_window=(bars["ts"].min().to_pydatetime(), bars["ts"].max().to_pydatetime()),
        extra={"train_end": pd.Timestamp(train_end, tz="UTC").isoformat(), "model_kind": LSTM_ATTENTION},
    )

    def stack(part: int) -> tuple[np.ndarray, np.ndarray]:
        xs, ys = [], []
        for s, w in per_symbol.items():
            mask = splits[s] == part
            xs.append(prep.scale_x(w.x[mask], s))
            ys.append(prep.scale_y(w.target[mask], s))
        return np.concatenate(xs).astype(np.float32), np.concatenate(ys).astype(np.float32)

    x_train, y_train = stack(0)
    x_val, y_val = stack(1)
    x_test, _ = stack(2)
    if len(x_val) == 0 or len(x_test) == 0:
        raise NotEnoughData(f"validation ({len(x_val)}) or test ({len(x_test)}) split is empty after the embargo")
    t_prep = time.monotonic()

    model = architecture.build_model(
        cfg.window, x_train.shape[2], lstm_units=cfg.lstm_units, learning_rate=cfg.learning_rate, seed=cfg.seed
    )
    history = architecture.fit(
        model,
        x_train,
        y_train,
        x_val,
        y_val,
        epochs=cfg.epochs,
        batch_size=cfg.batch_size,
        patience=cfg.patience,
        seed=cfg.seed,
        progress=progress,
    )
    t_fit = time.monotonic()

    onnx_bytes = onnx_export.export_onnx(model, cfg.window, x_train.shape[2])
    parity = onnx_export.check_parity(model, onnx_bytes, x_test[:512])
    t_export = time.monotonic()

    # the interval's calibration on the validation windows, through the serving path
    known = bars[bars["symbol"].isin(list(per_symbol))]
    full = Predictor(onnx_bytes, prep).predict_frame(known, level=level)
    val_start = pd.Timestamp(train_end, tz="UTC") + pd.Timedelta(minutes=cfg.window)
    val = full[(full["ts"] > val_start) & (full["ts"] <= pd.Timestamp(val_end, tz="UTC")) & full["next_close"].notna()]
    residual = np.log(val["next_close"].to_numpy() / val["predicted_close"].to_numpy())
    pooled = max(calibrate_scale(residual, val["sigma"].to_numpy(), level), 1e-3)
    prep.extra["interval_scale"] = dict.fromkeys(per_symbol, pooled)
    prep.extra["calibration"] = {"level": level, "windows": len(val), "on": "validation split"}

    # held-out window, scored through the serving path (ONNX + its own preprocessing)
    predictor = Predictor(onnx_bytes, prep)
    frame = predictor.predict_frame(known, level=level)
    test_start = pd.Timestamp(val_end, tz="UTC") + pd.Timedelta(minutes=cfg.window)
    frame = frame[(frame["ts"] > test_start) & frame["next_close"].notna()].reset_index(drop=True)
    base_onnx, base_prep = baseline.build(
        list(per_symbol), bars=known[known["ts"] <= pd.Timestamp(val_end, tz="UTC")], level=level
    )
    base = Predictor(base_onnx, base_prep).predict_frame(known, level=level)[["symbol", "ts", "lower", "upper"]]
    base = frame[["symbol", "ts"]].merge(base, on=["symbol", "ts"], how="left")
    oracle_pred = None
    if oracle is not None and len(frame):
        try:
            parts = [
                pd.Series(oracle(str(sym), grp["ts"]), index=grp.index)
                for sym, grp in frame.groupby("symbol", sort=False)
            ]
            values = pd.concat(parts).sort_index()
        except Exception as err:  # the oracle is a yardstick, never a reason to fail a training
            notes.append(f"oracle unavailable ({type(err).__name__}: {err}); no oracle metrics")
        else:
            if values.notna().all():
                frame["oracle"] = values
                oracle_pred = frame["oracle"].to_numpy()
            else:
                notes.append(f"oracle unknown for {int(values.isna().sum())} held-out minutes; no oracle metrics")
    comparison = evaluation.compare(
        frame["next_close"].to_numpy(), frame["last_close"].to_numpy(), frame["predicted_close"].to_numpy(), oracle_pred
    )
    metrics = comparison.flat_metrics()
    if len(frame):
        actual, last = frame["next_close"].to_numpy(), frame["last_close"].to_numpy()
        for name, lo, hi in (
            ("model", frame["lower"], frame["upper"]),
            ("baseline", base["lower"], base["upper"]),
        ):
            if lo.notna().all():
                for key, value in evaluation.interval_metrics(actual, lo, hi, last, level).items():
                    metrics[f"{name}_{key}"] = value
    metrics["interval_level"] = level
    metrics["onnx_max_abs_diff"] = parity
    metrics["epochs_run"] = float(len(history["loss"]))
    figures = {
        "training_curve": plots.training_curve(history),
        "predicted_vs_actual": plots.predicted_vs_actual(
            frame["ts"].to_numpy(),
            frame["next_close"].to_numpy(),
            frame["predicted_close"].to_numpy(),
            persistence=frame["last_close"].to_numpy(),
            symbol=str(frame["symbol"].iloc[0]) if len(frame) else "",
            symbols=frame["symbol"].to_numpy(),
        ),
    }
    t_end = time.monotonic()
    params = {
        **cfg.model_dump(),
        "symbols": ",".join(per_symbol),
        "n_train": len(x_train),
        "n_val": len(x_val),
        "n_test": len(frame),
        "n_features": int(x_train.shape[2]),
        "target": "log_return",
        "split_train_end": pd.Timestamp(train_end, tz="UTC").isoformat(),
        "split_val_end": pd.Timestamp(val_end, tz="UTC").isoformat(),
    }
    return TrainingResult(
        keras_model=model,
        onnx_model=onnx_bytes,
        preprocessing=prep,
        history=history,
        params=params,
        metrics=metrics,
        test_frame=frame,
        data_window=(bars["ts"].min().to_pydatetime(), bars["ts"].max().to_pydatetime()),
        train_end=pd.Timestamp(train_end, tz="UTC").to_pydatetime(),
        test_window=(test_start.to_pydatetime(), frame["ts"].max().to_pydatetime() if len(frame) else test_start),
        dataset_hash=dataset_hash(bars),
        figures=figures,
        notes=notes,
        comparison=comparison,
        timings={
            "prepare_s": t_prep - t0,
            "fit_s": t_fit - t_prep,
            "export_s": t_export - t_fit,
            "evaluate_s": t_end - t_export,
            "total_s": t_end - t0,
        },
    )


def lake_window(bars_last_ts: datetime, days: int) -> tuple[datetime, datetime]:
    """[start, end) covering the last ``days`` days of data up to and including ``bars_last_ts``."""
    return bars_last_ts - timedelta(days=days), bars_last_ts + timedelta(minutes=1)
