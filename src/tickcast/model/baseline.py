"""The baseline forecaster: persistence for the point, recent realized volatility for the interval.

A first-class model with the LSTM's artifact contract (``model.onnx`` + ``preprocessing.json``), so scoring,
azmlinfsrv, blue/green deploy and rollback treat it like any other version — and it needs no training, so a
fresh stack can serve it from its first minute (decision 0050).

* **Point**: the next close is the last close (log-return location 0).
* **Scale**: the root mean square of the last :data:`WINDOW` one-minute log returns of the same session
  (``ret_1`` of :mod:`tickcast.features.indicators`, so windows never span a gap or two sessions), floored at
  :data:`SIGMA_FLOOR`, times a per-symbol factor ``k``. RMS rather than the sample standard deviation: the
  mean of 30 returns is noise, and the location is 0 anyway.
* **Interval**: Gaussian quantiles of that scale (:mod:`tickcast.model.uncertainty`). One-minute returns have
  fat tails, so ``z·RMS`` alone over-covers a central interval; :func:`build` with history calibrates ``k``
  per symbol so the interval covers its nominal level on that history (without history ``k = 1``).

The ONNX graph (built with ``onnx.helper``; no TensorFlow) takes ``x`` float32 ``[batch, WINDOW, 1]`` — the
``ret_1`` window, scaled by an identity :class:`~tickcast.features.scaling.Standardizer` — and outputs
``forecast_z`` ``[batch, 2]`` = (0, sqrt(mean(x²) + floor²)). The target scaler is the identity too, so the
served log-return scale is ``k · RMS``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import numpy as np
import onnx
import pandas as pd
from onnx import TensorProto, helper

from tickcast.features.scaling import Standardizer, TargetScaler
from tickcast.model.kinds import BASELINE, graph_props
from tickcast.model.preprocessing import SCHEMA_VERSION, TARGET, Preprocessing
from tickcast.model.uncertainty import DEFAULT_LEVEL, calibrate_scale

WINDOW = 30
FEATURE = "ret_1"
SIGMA_FLOOR = 1e-5  # 0.1 bp: a session with no move at all still gets an interval of nonzero width
OPSET = 17
INPUT_NAME = "x"
OUTPUT_NAME = "forecast_z"
MIN_CALIBRATION_MINUTES = 100  # fewer minutes of a symbol's history: k stays 1


def onnx_graph(window: int = WINDOW) -> bytes:
    """The baseline's ONNX model: ``x`` [batch, window, 1] -> ``forecast_z`` [batch, 2] = (0, RMS)."""
    x = helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, [None, window, 1])
    out = helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, [None, 2])
    floor2 = helper.make_tensor("floor2", TensorProto.FLOAT, [], [SIGMA_FLOOR**2])
    zero = helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0])
    nodes = [
        helper.make_node("Mul", [INPUT_NAME, INPUT_NAME], ["sq"]),  # [B, T, 1]
        helper.make_node("ReduceMean", ["sq"], ["mean_sq"], axes=[1], keepdims=0),  # [B, 1]
        helper.make_node("Add", ["mean_sq", "floor2"], ["var"]),
        helper.make_node("Sqrt", ["var"], ["scale"]),  # [B, 1]
        helper.make_node("Mul", ["scale", "zero"], ["loc"]),  # [B, 1] zeros, batch-shaped
        helper.make_node("Concat", ["loc", "scale"], [OUTPUT_NAME], axis=1),
    ]
    graph = helper.make_graph(nodes, "tickcast_baseline", [x], [out], initializer=[floor2, zero])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="tickcast")
    model.ir_version = 8  # readable by every ONNX Runtime the project pins
    helper.set_model_props(
        model,
        graph_props(
            BASELINE,
            window=window,
            n_features=1,
            target="standardised next-minute log return: location 0, scale RMS of the window",
            input_name=INPUT_NAME,
            output_name=OUTPUT_NAME,
        ),
    )
    onnx.checker.check_model(model)
    return bytes(model.SerializeToString())


def _history_scale(bars: pd.DataFrame, symbol: str, window: int, level: float) -> tuple[float, int]:
    """(k, minutes used) for one symbol's bars: calibrated ``k``, or 1 with too little history."""
    from tickcast.features.indicators import compute_features
    from tickcast.features.windows import make_windows

    w = make_windows(compute_features(bars), window, (FEATURE,)).trainable()
    if len(w) < MIN_CALIBRATION_MINUTES:
        return 1.0, len(w)
    rms = np.sqrt(np.mean(w.x[:, :, 0].astype(np.float64) ** 2, axis=1) + SIGMA_FLOOR**2)
    return max(calibrate_scale(w.target, rms, level), 1e-3), len(w)


def build(
    symbols: Iterable[str],
    *,
    bars: pd.DataFrame | None = None,
    level: float = DEFAULT_LEVEL,
    window: int = WINDOW,
    now: datetime | None = None,
) -> tuple[bytes, Preprocessing]:
    """The baseline's ``model.onnx`` bytes and :class:`Preprocessing` for ``symbols``.

    ``bars`` (lake-shaped, any symbols): history to calibrate each symbol's interval factor on; a symbol
    with fewer than :data:`MIN_CALIBRATION_MINUTES` usable minutes keeps ``k = 1``. What was used is
    recorded in ``extra.calibration``.
    """
    names = list(dict.fromkeys(symbols))
    if not names:
        raise ValueError("the baseline needs at least one symbol")
    scales: dict[str, float] = {}
    used: dict[str, int] = {}
    start = end = (now or datetime.now(UTC)).isoformat()
    if bars is not None and len(bars):
        for sym in names:
            k, n = _history_scale(bars[bars["symbol"] == sym], sym, window, level)
            scales[sym], used[sym] = k, n
        start = pd.Timestamp(bars["ts"].min()).isoformat()
        end = pd.Timestamp(bars["ts"].max()).isoformat()
    extra: dict[str, Any] = {
        "model_kind": BASELINE,
        "interval_scale": scales,
        "calibration": {"level": level, "minutes": used},
    }
    prep = Preprocessing(
        version=SCHEMA_VERSION,
        features=[FEATURE],
        window=window,
        horizon=1,
        target=TARGET,
        symbols=names,
        x_scalers={s: Standardizer((0.0,), (1.0,)) for s in names},
        y_scalers={s: TargetScaler(0.0, 1.0) for s in names},
        data_window={"start": start, "end": end},
        extra=extra,
    )
    return onnx_graph(window), prep


def params_of(prep: Preprocessing) -> Mapping[str, Any]:
    """What to log for a baseline version (MLflow params)."""
    scales = prep.extra.get("interval_scale", {})
    return {
        "model_kind": BASELINE,
        "window": prep.window,
        "feature": FEATURE,
        "sigma_floor": SIGMA_FLOOR,
        "symbols": ",".join(prep.symbols),
        "calibration_level": prep.extra.get("calibration", {}).get("level"),
        **{f"interval_scale_{s}": round(float(k), 6) for s, k in scales.items()},
    }
