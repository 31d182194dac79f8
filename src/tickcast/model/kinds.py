"""The two kinds of registered model (one vocabulary for the artifact, the registry tag and the API)."""

from __future__ import annotations

from typing import Final, Literal

BASELINE: Final = "baseline"
"""Persistence point forecast + an interval from recent realized volatility (:mod:`tickcast.model.baseline`)."""
LSTM_ATTENTION: Final = "lstm-attention"
"""The trained LSTM with attention and a Gaussian head (:mod:`tickcast.model.architecture`)."""

ModelKind = Literal["baseline", "lstm-attention"]
MODEL_KINDS: Final[tuple[str, ...]] = (BASELINE, LSTM_ATTENTION)
