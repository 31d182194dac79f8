"""The ``preprocessing.json`` contract: everything between lake bars and the model's tensor, and back to a price.

One :class:`Preprocessing` travels with each model (an MLflow artifact beside ``model.onnx``). It names the
feature list, the window length, the horizon (1 minute), the target (``log_return``), the symbols the model
knows, and per symbol the feature :class:`~tickcast.features.scaling.Standardizer` and the
:class:`~tickcast.features.scaling.TargetScaler` fit on that symbol's TRAIN windows only. Training, evaluation
and serving all go through the same methods here, on top of :mod:`tickcast.features` — there is no second
feature path. No TensorFlow here: serving is TF-free.

JSON schema (version 1)::

    {"version": 1, "features": ["ret_1", ...], "window": 30, "horizon": 1, "target": "log_return",
     "symbols": ["SPY", ...],
     "x_scalers": {"SPY": {"mean": [...one per feature], "std": [...]}, ...},
     "y_scalers": {"SPY": {"mean": 0.0, "std": 0.0005}, ...},
     "data_window": {"start": "<ISO-8601 UTC>", "end": "<ISO-8601 UTC>"},
     "extra": {...free-form JSON, e.g. train_end...}}

Two keys of ``extra`` have a meaning (both optional, so older files still load):

* ``model_kind``: ``"baseline"`` or ``"lstm-attention"`` (the default: every model before the baseline was one);
* ``interval_scale``: ``{"SPY": k, ...}``, a per-symbol factor on the model's scale, calibrated so the served
  interval covers its nominal level (:func:`tickcast.model.uncertainty.calibrate_scale`); 1 where absent.

The model's scale output is in standardised units like its location: the log-return scale is
``y_scalers[sym].std · scale_z · interval_scale[sym]`` (:meth:`Preprocessing.sigma`).

``features`` may be any subset of :data:`tickcast.features.indicators.FEATURES`, in any order (an older model
keeps working when features are added); a name this code does not compute is refused when loading.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple, overload

import numpy as np
import numpy.typing as npt
import pandas as pd

from tickcast.features.indicators import (
    FEATURES,
    LOOKBACK,
    bar_arrays,
    bars_needed,
    clean_arrays,
    compute_features,
    feature_rows,
)
from tickcast.features.scaling import Standardizer, TargetScaler
from tickcast.features.windows import NotEnoughBars, Windows, latest_window_of_rows, make_windows, trailing_run
from tickcast.market.columns import BarArrays
from tickcast.model.kinds import LSTM_ATTENTION, MODEL_KINDS

__all__ = ["SCHEMA_VERSION", "TARGET", "NotEnoughBars", "Prepared", "Preprocessing", "UnknownSymbol"]

SCHEMA_VERSION = 1
TARGET = "log_return"
HORIZON = 1


class UnknownSymbol(LookupError):
    """The model was not trained on this symbol; the message lists the symbols it knows."""

    def __init__(self, symbol: str, known: Sequence[str]) -> None:
        super().__init__(f"the model does not know symbol {symbol!r}; it was trained on {', '.join(known)}")
        self.symbol = symbol
        self.known = list(known)

    def __str__(self) -> str:  # LookupError would repr() the message
        return str(self.args[0])


class Prepared(NamedTuple):
    """Scaled model inputs: ``x`` float32 ``[n, window, n_features]``, ``ts`` (as-of minutes, UTC), last close."""

    x: npt.NDArray[np.float32]
    ts: npt.NDArray[np.datetime64]
    last_close: npt.NDArray[np.float64]


def _iso(value: Any) -> str:
    """ISO-8601 in UTC (a naive time is taken as UTC)."""
    ts = pd.Timestamp(value)
    return str((ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")).isoformat())


@dataclass
class Preprocessing:
    """The preprocessing of one model (see the module docstring)."""

    version: int
    features: list[str]
    window: int
    horizon: int
    target: str
    symbols: list[str]
    x_scalers: dict[str, Standardizer]
    y_scalers: dict[str, TargetScaler]
    data_window: dict[str, str]
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        problems: list[str] = []
        if self.version != SCHEMA_VERSION:
            problems.append(f"version {self.version} is not supported (this tickcast reads version {SCHEMA_VERSION})")
        unknown = [f for f in self.features if f not in FEATURES]
        if not self.features or unknown or len(set(self.features)) != len(self.features):
            problems.append(
                f"features must be distinct names among {list(FEATURES)}; got {self.features}"
                + (f" (unknown: {unknown})" if unknown else "")
            )
        if self.window < 1:
            problems.append(f"window must be ≥ 1, got {self.window}")
        if self.horizon != HORIZON:
            problems.append(f"horizon must be {HORIZON} (minute), got {self.horizon}")
        if self.target != TARGET:
            problems.append(f"target must be {TARGET!r}, got {self.target!r}")
        if not self.symbols or len(set(self.symbols)) != len(self.symbols):
            problems.append(f"symbols must be a non-empty list of distinct names, got {self.symbols}")
        for name, scalers in (("x_scalers", self.x_scalers), ("y_scalers", self.y_scalers)):
            if set(scalers) != set(self.symbols):
                problems.append(f"{name} has symbols {sorted(scalers)}, expected exactly {sorted(self.symbols)}")
        for sym, sc in self.x_scalers.items():
            if sc.n_features != len(self.features):
                problems.append(f"x_scalers[{sym}] has {sc.n_features} features, expected {len(self.features)}")
        if set(self.data_window) != {"start", "end"}:
            problems.append(f"data_window must have exactly start and end, got {sorted(self.data_window)}")
        if self.extra.get("model_kind", LSTM_ATTENTION) not in MODEL_KINDS:
            problems.append(f"extra.model_kind must be one of {list(MODEL_KINDS)}, got {self.extra['model_kind']!r}")
        scales = self.extra.get("interval_scale", {})
        if not isinstance(scales, dict) or not all(
            s in self.symbols and isinstance(k, int | float) and math.isfinite(k) and k > 0 for s, k in scales.items()
        ):
            problems.append(f"extra.interval_scale must map known symbols to finite factors > 0, got {scales!r}")
        if problems:
            raise ValueError("invalid preprocessing: " + "; ".join(problems))

    # --- building ------------------------------------------------------------------------------

    @classmethod
    def fit(
        cls,
        x_train: Mapping[str, npt.ArrayLike],
        y_train: Mapping[str, npt.ArrayLike],
        *,
        window: int,
        data_window: tuple[datetime | pd.Timestamp | str, datetime | pd.Timestamp | str] | Mapping[str, Any],
        features: Sequence[str] = FEATURES,
        extra: Mapping[str, Any] | None = None,
    ) -> Preprocessing:
        """Fit per-symbol scalers on TRAIN windows only: ``x_train[sym]`` [n, window, f] unscaled, ``y_train[sym]``."""
        if set(x_train) != set(y_train):
            raise ValueError(f"x_train symbols {sorted(x_train)} differ from y_train symbols {sorted(y_train)}")
        symbols = list(x_train)
        if isinstance(data_window, Mapping):
            start, end = data_window["start"], data_window["end"]
        else:
            start, end = data_window
        return cls(
            version=SCHEMA_VERSION,
            features=list(features),
            window=window,
            horizon=HORIZON,
            target=TARGET,
            symbols=symbols,
            x_scalers={s: Standardizer.fit(x_train[s]) for s in symbols},
            y_scalers={s: TargetScaler.fit(y_train[s]) for s in symbols},
            data_window={"start": _iso(start), "end": _iso(end)},
            extra=dict(extra or {}),
        )

    # --- JSON ----------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "features": list(self.features),
            "window": self.window,
            "horizon": self.horizon,
            "target": self.target,
            "symbols": list(self.symbols),
            "x_scalers": {s: self.x_scalers[s].to_dict() for s in self.symbols},
            "y_scalers": {s: self.y_scalers[s].to_dict() for s in self.symbols},
            "data_window": dict(self.data_window),
            "extra": dict(self.extra),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, allow_nan=False) + "\n"

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Preprocessing:
        required = ["version", "features", "window", "horizon", "target", "symbols", "x_scalers", "y_scalers"]
        missing = [k for k in required if k not in data]
        if missing:
            raise ValueError(f"preprocessing.json lacks {missing}")
        return cls(
            version=int(data["version"]),
            features=[str(f) for f in data["features"]],
            window=int(data["window"]),
            horizon=int(data["horizon"]),
            target=str(data["target"]),
            symbols=[str(s) for s in data["symbols"]],
            x_scalers={str(s): Standardizer.from_dict(v) for s, v in dict(data["x_scalers"]).items()},
            y_scalers={str(s): TargetScaler.from_dict(v) for s, v in dict(data["y_scalers"]).items()},
            data_window={str(k): str(v) for k, v in dict(data.get("data_window") or {}).items()},
            extra=dict(data.get("extra") or {}),
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> Preprocessing:
        return cls.from_dict(json.loads(text))

    # --- numbers -------------------------------------------------------------------------------

    @property
    def bars_needed(self) -> int:
        """Consecutive bars of one session one prediction needs (window + indicator warm-up)."""
        return bars_needed(self.window)

    def check_symbol(self, symbol: str) -> None:
        if symbol not in self.x_scalers:
            raise UnknownSymbol(symbol, self.symbols)

    def scale_x(self, x: npt.ArrayLike, symbol: str) -> npt.NDArray[np.float32]:
        self.check_symbol(symbol)
        return self.x_scalers[symbol].transform(x)

    def scale_y(self, y: npt.ArrayLike, symbol: str) -> npt.NDArray[np.float32]:
        self.check_symbol(symbol)
        return self.y_scalers[symbol].transform(y)

    def unscale_y(self, y_scaled: npt.ArrayLike, symbol: str) -> npt.NDArray[np.float64]:
        """Scaled model output -> predicted log return."""
        self.check_symbol(symbol)
        return self.y_scalers[symbol].inverse(y_scaled)

    @property
    def model_kind(self) -> str:
        """``"baseline"`` or ``"lstm-attention"`` (see the module docstring)."""
        return str(self.extra.get("model_kind", LSTM_ATTENTION))

    def interval_scale(self, symbol: str) -> float:
        """The calibrated factor on ``symbol``'s scale (1 when the model has none)."""
        self.check_symbol(symbol)
        return float(self.extra.get("interval_scale", {}).get(symbol, 1.0))

    def sigma(self, scale_z: npt.ArrayLike, symbol: str) -> npt.NDArray[np.float64]:
        """Model scale output (standardised) -> scale of the predicted log return."""
        self.check_symbol(symbol)
        k = self.y_scalers[symbol].std * self.interval_scale(symbol)
        return np.asarray(scale_z, dtype=np.float64) * k

    @overload
    def to_close(self, y_scaled: float, last_close: float, symbol: str) -> float: ...
    @overload
    def to_close(self, y_scaled: npt.ArrayLike, last_close: npt.ArrayLike, symbol: str) -> npt.NDArray[np.float64]: ...
    def to_close(self, y_scaled: Any, last_close: Any, symbol: str) -> Any:
        """Predicted close: ``last_close · exp(r)`` with ``r`` the un-scaled predicted log return."""
        r = self.unscale_y(np.asarray(y_scaled, dtype=np.float64).reshape(np.shape(last_close)), symbol)
        close = np.asarray(last_close, dtype=np.float64) * np.exp(r)
        if np.ndim(close) == 0:
            return float(close)
        return close

    # --- bars -> model inputs ------------------------------------------------------------------

    def _bars_of(self, bars: pd.DataFrame, symbol: str) -> pd.DataFrame:
        self.check_symbol(symbol)
        if "symbol" in bars.columns:
            others = sorted({str(s) for s in pd.unique(bars["symbol"].dropna())} - {symbol})
            if others:
                raise ValueError(f"bars passed as {symbol} contain other symbols: {others}")
        return bars

    def windows(self, bars: pd.DataFrame, symbol: str) -> Windows:
        """Every complete window of one symbol's bars: UNSCALED inputs with their targets (training/evaluation)."""
        feats = compute_features(self._bars_of(bars, symbol))
        return make_windows(feats, self.window, self.features)

    def prepare(self, bars: pd.DataFrame, symbol: str) -> Prepared:
        """Scaled inputs of EVERY complete window of one symbol's bars (evaluation)."""
        w = self.windows(bars, symbol)
        return Prepared(self.scale_x(w.x, symbol), w.ts, w.last_close)

    def latest_windows(self, bars: pd.DataFrame | BarArrays, symbol: str) -> Windows:
        """The window ending at the last valid bar given (serving), or :class:`NotEnoughBars`.

        ``bars``: one symbol's bars as a lake-shaped frame or as :class:`BarArrays` (the request fast path;
        no pandas). Only the last :attr:`bars_needed` bars are used: the indicators have a finite look-back,
        so the result is identical to the same window in :meth:`windows` of the whole tape.
        """
        if isinstance(bars, BarArrays):
            self.check_symbol(symbol)
            given, clean = bars.size, clean_arrays(bars)
        else:
            given, clean = len(bars), clean_arrays(*bar_arrays(self._bars_of(bars, symbol)))
        needed = self.bars_needed
        run = trailing_run(clean.ts, clean.ts // 86_400)
        if run < needed:
            as_of = datetime.fromtimestamp(int(clean.ts[-1]), UTC).isoformat() if clean.size else "the last minute"
            raise NotEnoughBars(
                f"{symbol}: a prediction as of {as_of} needs {needed} consecutive 1-minute bars of that session "
                f"ending there ({self.window} for the window + {LOOKBACK - 1} of indicator warm-up); got {run} "
                f"({given} bar(s) given in all)",
                needed=needed,
                given=run,
            )
        rows = feature_rows(clean.tail(needed))
        return latest_window_of_rows(rows, self.window, self.features)

    def prepare_latest(self, bars: pd.DataFrame | BarArrays, symbol: str) -> Prepared:
        """Scaled input of the one window ending at the last valid bar (serving)."""
        w = self.latest_windows(bars, symbol)
        return Prepared(self.scale_x(w.x, symbol), w.ts, w.last_close)
