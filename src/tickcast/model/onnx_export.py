"""Export the Keras forecaster to ONNX and prove that ONNX Runtime computes the same thing.

Method: Keras 3's own exporter, ``model.export(path, format="onnx")``, with an explicit input
signature float32 ``[None, window, n_features]`` and opset :data:`OPSET`. Keras drives tf2onnx
(``from_function``) under the hood and first applies its NumPy-2 compatibility patch to tf2onnx 1.17
(which still references ``np.object`` and friends in its constant folding); calling tf2onnx's
``from_keras`` directly works for this model today but would skip that patch.

The exported graph has exactly one input, :data:`ONNX_INPUT_NAME` (``"x"``: float32
``[batch, window, n_features]``, standardised) and one output, :data:`ONNX_OUTPUT_NAME`
(``"forecast_z"``: float32 ``[batch, 2]``, location and scale of the standardised next-minute log
return). Keras names the output ``Identity:0``; it is renamed here so serving code can rely on a stable
name. The window,
feature count and target are recorded in the model's metadata properties.

:func:`check_parity` runs the bytes in ONNX Runtime beside Keras and raises
:class:`OnnxParityError` when they differ by more than 1e-4 (measured: ~1e-7).
"""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path

import numpy as np
import onnx
from numpy.typing import ArrayLike

from tickcast.errors import TickcastError
from tickcast.model.kinds import LSTM_ATTENTION, graph_props

OPSET = 17
ONNX_INPUT_NAME = "x"
ONNX_OUTPUT_NAME = "forecast_z"
PARITY_TOLERANCE = 1e-4


class OnnxParityError(TickcastError):
    """The ONNX model does not reproduce the Keras model (or does not have the expected interface)."""


def _rename_output(model_proto: onnx.ModelProto, new_name: str) -> None:
    graph = model_proto.graph
    old_name = graph.output[0].name
    if old_name == new_name:
        return
    for node in graph.node:
        for i, name in enumerate(node.output):
            if name == old_name:
                node.output[i] = new_name
        for i, name in enumerate(node.input):
            if name == old_name:
                node.input[i] = new_name
    graph.output[0].name = new_name


def io_names(onnx_bytes: bytes) -> tuple[list[str], list[str]]:
    """The graph's input and output names (initializers excluded)."""
    proto = onnx.load_from_string(onnx_bytes)
    initializers = {init.name for init in proto.graph.initializer}
    inputs = [i.name for i in proto.graph.input if i.name not in initializers]
    return inputs, [o.name for o in proto.graph.output]


def export_onnx(model: object, window: int, n_features: int, *, opset: int = OPSET) -> bytes:
    """Serialise ``model`` (a Keras model with input ``[batch, window, n_features]``) as ONNX bytes."""
    import tensorflow as tf

    signature = [tf.TensorSpec((None, window, n_features), tf.float32, name=ONNX_INPUT_NAME)]
    with tempfile.TemporaryDirectory(prefix="tickcast-onnx-") as tmp, warnings.catch_warnings():
        # Keras's tf2onnx patch probes `np.object`, which NumPy 2 answers with a FutureWarning
        warnings.filterwarnings("ignore", message=".*np.object.*", category=FutureWarning)
        path = Path(tmp) / "model.onnx"
        model.export(  # type: ignore[attr-defined]
            str(path), format="onnx", input_signature=signature, opset_version=opset, verbose=False
        )
        proto = onnx.load(str(path))
    inputs = [i.name for i in proto.graph.input if i.name not in {init.name for init in proto.graph.initializer}]
    if len(inputs) != 1 or len(proto.graph.output) != 1:
        raise OnnxParityError(
            f"exported graph has inputs {inputs} and outputs {[o.name for o in proto.graph.output]}; expected one each"
        )
    if inputs[0] != ONNX_INPUT_NAME:
        raise OnnxParityError(f"exported input is named {inputs[0]!r}, expected {ONNX_INPUT_NAME!r}")
    _rename_output(proto, ONNX_OUTPUT_NAME)
    onnx.helper.set_model_props(
        proto,
        graph_props(
            LSTM_ATTENTION,
            window=window,
            n_features=n_features,
            target="standardised next-minute log return: location and scale of a Gaussian",
            input_name=ONNX_INPUT_NAME,
            output_name=ONNX_OUTPUT_NAME,
        ),
    )
    onnx.checker.check_model(proto)
    return bytes(proto.SerializeToString())


def check_parity(model: object, onnx_bytes: bytes, x: ArrayLike, *, tolerance: float = PARITY_TOLERANCE) -> float:
    """Max |Keras - ONNX Runtime| over ``x``; raises :class:`OnnxParityError` above ``tolerance``.

    Also checks the ONNX interface: exactly one input and one output, output shape ``[batch, 2]``.
    """
    import onnxruntime as ort

    xa = np.asarray(x, dtype=np.float32)
    if xa.ndim != 3 or len(xa) == 0:
        raise ValueError(f"x must be a non-empty [batch, window, n_features] array, got shape {xa.shape}")
    session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if len(inputs) != 1 or len(outputs) != 1:
        raise OnnxParityError(f"ONNX model has {len(inputs)} inputs and {len(outputs)} outputs; expected one each")
    got = np.asarray(session.run(None, {inputs[0].name: xa})[0])
    want = np.asarray(model.predict(xa, batch_size=1024, verbose=0))  # type: ignore[attr-defined]
    if got.shape != want.shape or got.shape != (len(xa), 2):
        raise OnnxParityError(f"ONNX output shape {got.shape} != Keras output shape {want.shape} (expected [n, 2])")
    diff = float(np.max(np.abs(got.astype(np.float64) - want.astype(np.float64))))
    if not diff <= tolerance:  # also catches NaN
        raise OnnxParityError(f"ONNX Runtime differs from Keras by {diff:.3g} (> {tolerance:g}) on {len(xa)} windows")
    return diff
