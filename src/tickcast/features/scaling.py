"""Per-symbol scalers with plain-JSON parameters (never pickles): features (:class:`Standardizer`) and target.

Both are fit on the TRAIN split only (the caller chooses the rows) and stored in ``preprocessing.json``.
A standard deviation below :data:`STD_FLOOR` (a constant column) is replaced by 1, so a constant feature is
only centred and a later change in it cannot explode into a huge scaled value.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

STD_FLOOR = 1e-8


def _std(values: npt.NDArray[np.float64], axis: int | None = None) -> npt.NDArray[np.float64]:
    std = np.asarray(values.std(axis=axis), dtype=np.float64)
    return np.where(std < STD_FLOOR, 1.0, std)


def _floats(values: Any, name: str) -> list[float]:
    if not isinstance(values, list) or not values:
        raise ValueError(f"scaler {name} must be a non-empty list of numbers, got {values!r}")
    out = [float(v) for v in values]
    if not all(math.isfinite(v) for v in out):
        raise ValueError(f"scaler {name} has a non-finite value: {values!r}")
    return out


@dataclass(frozen=True)
class Standardizer:
    """Per-feature ``(x − mean) / std`` over the last axis of 2-D or 3-D arrays."""

    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __post_init__(self) -> None:
        if len(self.mean) != len(self.std) or not self.mean:
            raise ValueError(f"mean ({len(self.mean)}) and std ({len(self.std)}) must have the same, non-zero length")
        if any(not s > 0 for s in self.std):
            raise ValueError(f"std must be > 0: {self.std}")

    @property
    def n_features(self) -> int:
        return len(self.mean)

    @classmethod
    def fit(cls, x: npt.ArrayLike) -> Standardizer:
        """Fit on ``[n, window, f]`` windows or ``[n, f]`` rows (all finite)."""
        arr = np.asarray(x, dtype=np.float64)
        if arr.ndim not in (2, 3):
            raise ValueError(f"fit needs a 2-D or 3-D array, got shape {arr.shape}")
        rows = arr.reshape(-1, arr.shape[-1])
        if not len(rows):
            raise ValueError("cannot fit a Standardizer on zero rows")
        if not np.isfinite(rows).all():
            raise ValueError("cannot fit a Standardizer on non-finite values")
        return cls(tuple(float(v) for v in rows.mean(axis=0)), tuple(float(v) for v in _std(rows, axis=0)))

    def _check(self, arr: npt.NDArray[np.float64]) -> None:
        if arr.shape[-1] != self.n_features:
            raise ValueError(f"expected {self.n_features} features in the last axis, got shape {arr.shape}")

    def transform(self, x: npt.ArrayLike) -> npt.NDArray[np.float32]:
        arr = np.asarray(x, dtype=np.float64)
        self._check(arr)
        out: npt.NDArray[np.float32] = ((arr - np.array(self.mean)) / np.array(self.std)).astype(np.float32)
        return out

    def inverse(self, x: npt.ArrayLike) -> npt.NDArray[np.float64]:
        arr = np.asarray(x, dtype=np.float64)
        self._check(arr)
        out: npt.NDArray[np.float64] = arr * np.array(self.std) + np.array(self.mean)
        return out

    def to_dict(self) -> dict[str, list[float]]:
        return {"mean": [float(v) for v in self.mean], "std": [float(v) for v in self.std]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Standardizer:
        return cls(tuple(_floats(data.get("mean"), "mean")), tuple(_floats(data.get("std"), "std")))


@dataclass(frozen=True)
class TargetScaler:
    """``(y − mean) / std`` of the next-minute log return."""

    mean: float
    std: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.mean) and math.isfinite(self.std) and self.std > 0):
            raise ValueError(f"target scaler needs a finite mean and a std > 0, got {self.mean}, {self.std}")

    @classmethod
    def fit(cls, y: npt.ArrayLike) -> TargetScaler:
        """Fit on the finite values of ``y`` (NaN targets, i.e. no next bar, are ignored)."""
        arr = np.asarray(y, dtype=np.float64).ravel()
        arr = arr[np.isfinite(arr)]
        if not len(arr):
            raise ValueError("cannot fit a TargetScaler on zero finite targets")
        return cls(float(arr.mean()), float(_std(arr)))

    def transform(self, y: npt.ArrayLike) -> npt.NDArray[np.float32]:
        out: npt.NDArray[np.float32] = ((np.asarray(y, dtype=np.float64) - self.mean) / self.std).astype(np.float32)
        return out

    def inverse(self, y: npt.ArrayLike) -> npt.NDArray[np.float64]:
        out: npt.NDArray[np.float64] = np.asarray(y, dtype=np.float64) * self.std + self.mean
        return out

    def to_dict(self) -> dict[str, float]:
        return {"mean": float(self.mean), "std": float(self.std)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TargetScaler:
        mean, std = data.get("mean"), data.get("std")
        if not isinstance(mean, int | float) or not isinstance(std, int | float):
            raise ValueError(f"target scaler needs numbers mean and std, got {dict(data)!r}")
        return cls(float(mean), float(std))
