"""Tiny hand-made models and the bars they score: shared by the scoring, endpoint, API and deploy tests and by
bench/serve.py.
"""

from __future__ import annotations

import importlib.util
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from tickcast.features.indicators import FEATURES, bars_needed
from tickcast.model.predictor import MODEL_FILE, PREPROCESSING_FILE
from tickcast.settings import ModelSettings

WINDOW = ModelSettings().window


GAIN = 0.5  # the handmade model predicts GAIN x (scaled ret_1 of the last minute)


def handmade_onnx(window: int = WINDOW, n_features: int = len(FEATURES), gain: float = GAIN) -> bytes:
    """y[b, 0] = gain · x[b, -1, 0]: a tiny graph with one input [batch, window, f] and one output [batch, 1]."""
    ints = {"s1": [-1], "e1": [2**62], "a1": [1], "s2": [0], "e2": [1], "a2": [2], "sq": [2]}
    inits = [numpy_helper.from_array(np.array(v, dtype=np.int64), name) for name, v in ints.items()]
    inits.append(numpy_helper.from_array(np.array(gain, dtype=np.float32), "gain"))
    nodes = [
        helper.make_node("Slice", ["windows", "s1", "e1", "a1"], ["last_step"]),
        helper.make_node("Slice", ["last_step", "s2", "e2", "a2"], ["first_feature"]),
        helper.make_node("Squeeze", ["first_feature", "sq"], ["squeezed"]),
        helper.make_node("Mul", ["squeezed", "gain"], ["scaled_return"]),
    ]
    graph = helper.make_graph(
        nodes,
        "handmade",
        [helper.make_tensor_value_info("windows", TensorProto.FLOAT, ["batch", window, n_features])],
        [helper.make_tensor_value_info("scaled_return", TensorProto.FLOAT, ["batch", 1])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return bytes(model.SerializeToString())


SCORE_PY = Path(__file__).resolve().parents[2] / "src" / "tickcast" / "scoring" / "score.py"


NEEDED = bars_needed(WINDOW)


SYMBOLS = ("SPY", "IBM")


SESSION_OPEN = datetime(2024, 6, 3, 13, 30, tzinfo=UTC)


def preprocessing_json(symbols: tuple[str, ...] = SYMBOLS, window: int = WINDOW) -> str:
    """A valid preprocessing.json without training: identity feature scaling, y std 1e-3."""
    n = len(FEATURES)
    return json.dumps(
        {
            "version": 1,
            "features": list(FEATURES),
            "window": window,
            "horizon": 1,
            "target": "log_return",
            "symbols": list(symbols),
            "x_scalers": {s: {"mean": [0.0] * n, "std": [1.0] * n} for s in symbols},
            "y_scalers": {s: {"mean": 0.0, "std": 1e-3} for s in symbols},
            "data_window": {"start": "2024-06-03T13:30:00+00:00", "end": "2024-06-04T20:00:00+00:00"},
            "extra": {},
        }
    )


def write_model(folder: Path, *, version: str | None = None, gain: float = 0.5, nested: bool = True) -> Path:
    """An AML-style model dir: ``folder/model/{model.onnx, preprocessing.json}`` (+ ``folder/version.txt``)."""
    files = folder / "model" if nested else folder
    files.mkdir(parents=True, exist_ok=True)
    (files / MODEL_FILE).write_bytes(handmade_onnx(gain=gain))
    (files / PREPROCESSING_FILE).write_text(preprocessing_json())
    if version is not None:
        (folder / "version.txt").write_text(version + "\n")
    return folder


def make_bars(n: int = NEEDED + 5, *, seed: int = 1, epoch: bool = False) -> list[dict[str, Any]]:
    """``n`` consecutive 1-minute bars of one session (a seeded random walk)."""
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 1e-3, n)))
    open_ = np.concatenate([[100.0], close[:-1]])
    bars = []
    for i in range(n):
        ts = SESSION_OPEN + timedelta(minutes=i)
        o, c = float(open_[i]), float(close[i])
        bars.append(
            {
                "ts": int(ts.timestamp()) if epoch else ts.isoformat().replace("+00:00", "Z"),
                "open": o,
                "high": max(o, c) * 1.0005,
                "low": min(o, c) * 0.9995,
                "close": c,
                "volume": float(rng.integers(1_000, 50_000)),
            }
        )
    return bars


def request_body(symbol: str = "SPY", bars: list[dict[str, Any]] | None = None) -> str:
    return json.dumps({"symbol": symbol, "bars": make_bars() if bars is None else bars})


def load_score(name: str = "score_under_test") -> ModuleType:
    """A fresh copy of score.py, loaded the way azmlinfsrv does (by path, not registered in sys.modules)."""
    spec = importlib.util.spec_from_file_location(name, SCORE_PY)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
