"""Serving and evaluation: an ONNX model plus its ``preprocessing.json`` turn lake bars into next-minute closes.

:class:`Predictor` runs the exported model with ONNX Runtime on the CPU (one intra-op thread) and does
every other step through :class:`~tickcast.model.preprocessing.Preprocessing` — the same feature code path
training used. The model has ONE input, float32 ``[batch, window, n_features]`` (its name is read from the
session) and one output ``[batch, 2]``: location and scale of the SCALED next-minute log return (a Gaussian;
:mod:`tickcast.model.uncertainty` turns it into a price interval). A model exported before models had a
scale outputs ``[batch, 1]``; its scale is taken as 1, i.e. the standard deviation of the log returns it was
trained on (an unconditional interval). TensorFlow is never imported.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnxruntime as ort
import pandas as pd

from tickcast.features.windows import NotEnoughBars
from tickcast.market.columns import BarArrays
from tickcast.model.preprocessing import Preprocessing, UnknownSymbol
from tickcast.model.uncertainty import DEFAULT_LEVEL, check_level, price_interval

__all__ = ["MODEL_FILE", "PREPROCESSING_FILE", "NotEnoughBars", "Prediction", "Predictor", "UnknownSymbol"]

MODEL_FILE = "model.onnx"
PREPROCESSING_FILE = "preprocessing.json"
BATCH = 4096  # windows per ONNX Runtime call in predict_frame
FRAME_COLUMNS = ["symbol", "ts", "last_close", "predicted_close", "next_close", "sigma", "lower", "upper"]


@dataclass(frozen=True)
class Prediction:
    """The close forecast for the minute after ``as_of`` (``as_of`` = start of the last bar used, UTC).

    ``lower``/``upper``: the central ``level`` interval of the close; ``sigma``: the scale of the predicted
    log return.
    """

    symbol: str
    as_of: datetime
    predicted_close: float
    last_close: float
    horizon_minutes: int = 1
    lower: float = float("nan")
    upper: float = float("nan")
    level: float = DEFAULT_LEVEL
    sigma: float = float("nan")
    model_kind: str = "lstm-attention"

    def as_dict(self) -> dict[str, Any]:
        return {
            "symbol": self.symbol,
            "as_of": self.as_of.isoformat(),
            "horizon_minutes": self.horizon_minutes,
            "predicted_close": self.predicted_close,
            "last_close": self.last_close,
            "model_kind": self.model_kind,
            "interval": {"level": self.level, "lower": self.lower, "upper": self.upper},
        }


def _as_datetime(ts: np.datetime64) -> datetime:
    return datetime.fromtimestamp(int(ts.astype("datetime64[s]").astype(np.int64)), UTC)


def _batches(n: int, size: int) -> Iterator[slice]:
    for start in range(0, n, size):
        yield slice(start, min(n, start + size))


class Predictor:
    """``model.onnx`` + ``preprocessing.json`` -> predicted next-minute closes."""

    def __init__(self, onnx_model: bytes | Path | str, preprocessing: Preprocessing) -> None:
        self.preprocessing = preprocessing
        data = onnx_model if isinstance(onnx_model, bytes) else Path(onnx_model).read_bytes()
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(data, sess_options=options, providers=["CPUExecutionProvider"])
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs) != 1 or not outputs:
            raise ValueError(f"the ONNX model must have one input and an output; has {len(inputs)} input(s)")
        self.input_name: str = inputs[0].name
        self.output_name: str = outputs[0].name
        shape = list(inputs[0].shape)
        expected = [None, preprocessing.window, len(preprocessing.features)]
        fixed = [(d, e) for d, e in zip(shape, expected, strict=False) if isinstance(d, int) and e is not None]
        if len(shape) != 3 or any(d != e for d, e in fixed):
            raise ValueError(
                f"the ONNX model's input {self.input_name!r} has shape {shape}; preprocessing.json says "
                f"[batch, {preprocessing.window}, {len(preprocessing.features)}]"
            )

    @classmethod
    def from_dir(cls, path: Path | str) -> Predictor:
        """A model folder holding ``model.onnx`` and ``preprocessing.json``."""
        folder = Path(path)
        missing = [name for name in (MODEL_FILE, PREPROCESSING_FILE) if not (folder / name).is_file()]
        if missing:
            raise FileNotFoundError(f"{folder} lacks {', '.join(missing)}")
        prep = Preprocessing.from_json((folder / PREPROCESSING_FILE).read_text(encoding="utf-8"))
        return cls((folder / MODEL_FILE).read_bytes(), prep)

    @property
    def symbols(self) -> list[str]:
        return list(self.preprocessing.symbols)

    @property
    def model_kind(self) -> str:
        return self.preprocessing.model_kind

    def run(self, x_scaled: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
        """Scaled location, one value per window of ``x_scaled`` ``[n, window, n_features]``."""
        return self.run_dist(x_scaled)[0]

    def run_dist(self, x_scaled: npt.NDArray[np.float32]) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        """Scaled (location, scale) per window of ``x_scaled``; scale 1 for a location-only model."""
        x = np.ascontiguousarray(x_scaled, dtype=np.float32)
        loc = np.empty(len(x), dtype=np.float64)
        scale = np.ones(len(x), dtype=np.float64)
        for part in _batches(len(x), BATCH):
            y = self.session.run([self.output_name], {self.input_name: x[part]})[0]
            y = np.asarray(y, dtype=np.float64).reshape(len(x[part]), -1)
            if y.shape[1] not in (1, 2):
                raise ValueError(f"the ONNX model must output [batch, 2] (or [batch, 1]), got {list(y.shape)}")
            loc[part] = y[:, 0]
            if y.shape[1] == 2:
                scale[part] = y[:, 1]
        if not (np.isfinite(scale).all() and (scale > 0).all()):
            raise ValueError("the ONNX model output a scale that is not finite and positive")
        return loc, scale

    def predict_latest(
        self, bars: pd.DataFrame | BarArrays, symbol: str, *, level: float = DEFAULT_LEVEL
    ) -> Prediction:
        """The forecast for the minute after the last valid bar of one symbol's ``bars`` (a frame or arrays).

        Raises :class:`UnknownSymbol` or :class:`NotEnoughBars` (with the numbers needed and given).
        """
        level = check_level(level)
        prepared = self.preprocessing.prepare_latest(bars, symbol)
        loc, scale = self.run_dist(prepared.x)
        last_close = float(prepared.last_close[0])
        mu = float(self.preprocessing.unscale_y(loc, symbol)[0])
        sigma = float(self.preprocessing.sigma(scale, symbol)[0])
        lower, upper = price_interval(last_close, mu, sigma, level)
        return Prediction(
            symbol,
            _as_datetime(prepared.ts[0]),
            float(last_close * np.exp(mu)),
            last_close,
            self.preprocessing.horizon,
            lower=float(lower),
            upper=float(upper),
            level=level,
            sigma=sigma,
            model_kind=self.model_kind,
        )

    def predict_frame(self, bars: pd.DataFrame, *, level: float = DEFAULT_LEVEL) -> pd.DataFrame:
        """Every complete window of every symbol in ``bars`` (evaluation).

        Columns symbol, ts (as-of minute, UTC), last_close, predicted_close, next_close (NaN where the next
        minute's bar is unknown), sigma (scale of the log return), lower and upper (the ``level`` interval).
        A symbol the model does not know raises :class:`UnknownSymbol`.
        """
        level = check_level(level)
        if "symbol" not in bars.columns:
            raise ValueError("predict_frame needs a symbol column; use predict_latest for one symbol's bars")
        present = [str(s) for s in pd.unique(bars["symbol"].dropna())]
        for sym in present:
            self.preprocessing.check_symbol(sym)
        parts: list[pd.DataFrame] = []
        for sym in present:
            w = self.preprocessing.windows(bars[bars["symbol"] == sym], sym)
            if not len(w):
                continue
            loc, scale = self.run_dist(self.preprocessing.scale_x(w.x, sym))
            mu = self.preprocessing.unscale_y(loc, sym)
            sigma = self.preprocessing.sigma(scale, sym)
            lower, upper = price_interval(w.last_close, mu, sigma, level)
            parts.append(
                pd.DataFrame(
                    {
                        "symbol": sym,
                        "ts": w.ts_utc(),
                        "last_close": w.last_close,
                        "predicted_close": w.last_close * np.exp(mu),
                        "next_close": w.next_close,
                        "sigma": sigma,
                        "lower": lower,
                        "upper": upper,
                    }
                )
            )
        if not parts:
            empty = pd.DataFrame({c: pd.Series(dtype="float64") for c in FRAME_COLUMNS})
            empty["symbol"] = empty["symbol"].astype(object)
            empty["ts"] = pd.Series(pd.DatetimeIndex([], dtype="datetime64[s, UTC]"))
            return empty
        return pd.concat(parts, ignore_index=True)[FRAME_COLUMNS]
