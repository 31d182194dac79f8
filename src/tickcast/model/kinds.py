"""The two kinds of registered model (one vocabulary for the artifact, the registry tag and the API), and the
metadata every exported ONNX graph carries."""

from __future__ import annotations

from typing import Final, Literal

BASELINE: Final = "baseline"
"""Persistence point forecast + an interval from recent realized volatility (:mod:`tickcast.model.baseline`)."""
LSTM_ATTENTION: Final = "lstm-attention"
"""The trained LSTM with attention and a Gaussian head (:mod:`tickcast.model.architecture`)."""

ModelKind = Literal["baseline", "lstm-attention"]
MODEL_KINDS: Final[tuple[str, ...]] = (BASELINE, LSTM_ATTENTION)


def graph_props(
    kind: str, *, window: int, n_features: int, target: str, input_name: str, output_name: str
) -> dict[str, str]:
    """The ``tickcast.*`` metadata of an exported ONNX graph (``onnx.helper.set_model_props``), for either kind."""
    return {
        "tickcast.model_kind": kind,
        "tickcast.window": str(window),
        "tickcast.n_features": str(n_features),
        "tickcast.target": target,
        "tickcast.input": input_name,
        "tickcast.output": output_name,
    }
