"""The forecaster's network: LSTM + additive (Bahdanau) attention over time + a Gaussian head.

Input ``x``: float32 ``[batch, window, n_features]``, already standardised per symbol.
Output: float32 ``[batch, 2]`` = (location, scale) of the standardised next-minute LOG RETURN, a Gaussian.
The caller un-scales it and converts it back to a price (``predicted_close = last_close * exp(r)``) and an
interval (:mod:`tickcast.model.uncertainty`), so "predict zero change" (persistence) is the natural floor
of this model: an untrained or unlucky model sits near zero, and whatever it learns beyond that shows up
as skill against persistence.

Layers (Keras 3 functional API, built-in layers only; the loss is registered under ``tickcast>`` so
``model.save("model.keras")`` reloads with plain ``keras.models.load_model`` once this module is imported)::

    x                [B, T, F]
    lstm             LSTM(U, return_sequences=True, return_state=True)
                       -> states h_1..h_T [B, T, U], last state h_T [B, U]
    att_keys         Dense(U)(states)                      [B, T, U]   W·h_t + b
    att_query        Dense(U, no bias)(h_T)                [B, U]      V·h_T
    att_query_rep    RepeatVector(T)                       [B, T, U]
    att_energy       tanh(keys + query)                    [B, T, U]
    att_score        Dense(1, no bias)                     [B, T, 1]   e_t = v·tanh(W·h_t + V·h_T + b)
    att_weights      Softmax over the time axis            [B, T, 1]   a_t, sum_t a_t = 1
    att_context      Dot(axes=1)(weights, states), Flatten [B, U]      c = sum_t a_t·h_t
    concat           [c, h_T]                              [B, 2U]
    loc_z            Dense(1) (linear)                     [B, 1]      location
    scale_raw        Dense(1), softplus, + SCALE_FLOOR     [B, 1]      scale > 0 (starts near 1)
    forecast_z       Concatenate                           [B, 2]

Why attention: the LSTM's last state summarises the window, but a few specific minutes (a burst of
volume, a gap) may matter more than the recency-weighted summary; additive attention lets the head
look back at every step's state, weighted by how relevant it is given the current state. The last
state is concatenated with the context so the model can never do worse than a plain LSTM head.
Bahdanau-style attention uses only MatMul/Add/Tanh/Softmax/batched MatMul, which tf2onnx exports
op-for-op (parity with ONNX Runtime ~1e-7); the layer named ``att_weights`` can be read out with a
sub-model to inspect which minutes the model attends to.

Parameter count, with T = window, F = n_features, U = lstm_units:
LSTM 4·U·(F + U + 1) + keys U·U + U + query U·U + score U + two heads 2·(2U + 1).
For window 30 x 10 features x 32 units: 5,504 + 1,056 + 1,024 + 32 + 130 = **7,746** (the window
length does not change the count).

Training (:func:`fit`): Adam on :func:`gaussian_loss` — the location is fit by squared error exactly as
before (so point skill does not trade against the scale), the scale by the Gaussian negative
log-likelihood of the residual with the location held fixed (its gradient stopped) (decision 0051).
Early stopping on ``val_loss`` with the best epoch's weights restored, shuffling only within the training
split (windows are built causally beforehand, and the validation split comes after the training split in
time). With :func:`set_seeds` two trainings on the same data give bit-identical weights on CPU; TensorFlow
op determinism costs no measurable time on this model (1.8-2.4 s/epoch either way for 22k windows of
30 x 10, batch 256, 2 cores).
"""

from __future__ import annotations

import os
import random
import sys
import time
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # TF_CPP_MIN_LOG_LEVEL (above) must be set before TensorFlow loads

# Names other modules rely on (ONNX export, inspection).
INPUT_NAME = "x"
OUTPUT_LAYER = "forecast_z"
ATTENTION_LAYER = "att_weights"
SCALE_FLOOR = 1e-3  # smallest scale, in units of the training returns' standard deviation
_SOFTPLUS_INV_1 = 0.5413248546129181  # softplus(x) = 1: the scale head starts at the returns' own spread

History = dict[str, list[float]]
"""Per-epoch values: ``loss``, ``val_loss`` (:func:`gaussian_loss` on the standardised return) and ``epoch_time_s``."""


@keras.saving.register_keras_serializable(package="tickcast")  # type: ignore[untyped-decorator]  # keras is untyped
def gaussian_loss(y_true: Any, y_pred: Any) -> Any:
    """½(y − μ)² + log σ + ½·sg(y − μ)²/σ², per window (``y_pred`` = [μ, σ]; sg = stop gradient).

    The first term trains the location exactly like mean squared error; the other two are the Gaussian
    negative log-likelihood of the scale given that location.
    """
    ops = keras.ops
    y = ops.reshape(ops.cast(y_true, "float32"), (-1, 1))
    mu, sigma = y_pred[:, 0:1], y_pred[:, 1:2]
    err = y - mu
    point = 0.5 * ops.square(err)
    nll = ops.log(sigma) + 0.5 * ops.square(ops.stop_gradient(err)) / ops.square(sigma)
    return ops.mean(point + nll, axis=-1)


def param_count(window: int, n_features: int, lstm_units: int) -> int:
    """Trainable parameters of :func:`build_model` (``window`` does not change it)."""
    del window
    u, f = lstm_units, n_features
    return 4 * u * (f + u + 1) + (u * u + u) + u * u + u + 2 * (2 * u + 1)


def set_seeds(seed: int, *, deterministic_ops: bool = True) -> None:
    """Seed Python, NumPy, Keras and TensorFlow; optionally switch on TensorFlow op determinism.

    Op determinism is process-wide and stays on once enabled (measured: no slowdown for this model).
    """
    random.seed(seed)
    np.random.seed(seed)
    keras.utils.set_random_seed(seed)
    if deterministic_ops:
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()


def build_model(window: int, n_features: int, *, lstm_units: int, learning_rate: float, seed: int) -> keras.Model:
    """LSTM + additive attention + Gaussian head, compiled with Adam and :func:`gaussian_loss` (module docstring).

    Every initializer is seeded from ``seed``, so the initial weights do not depend on global state.
    """
    if window < 1 or n_features < 1 or lstm_units < 1:
        raise ValueError(f"window, n_features and lstm_units must be >= 1 (got {window}, {n_features}, {lstm_units})")
    seeds = iter(range(seed * 16, seed * 16 + 16))

    def glorot() -> keras.initializers.Initializer:
        return keras.initializers.GlorotUniform(seed=next(seeds))

    u = lstm_units
    inputs = keras.Input(shape=(window, n_features), dtype="float32", name=INPUT_NAME)
    states, last, _ = keras.layers.LSTM(
        u,
        return_sequences=True,
        return_state=True,
        kernel_initializer=glorot(),
        recurrent_initializer=keras.initializers.Orthogonal(seed=next(seeds)),
        seed=next(seeds),
        name="lstm",
    )(inputs)
    keys = keras.layers.Dense(u, kernel_initializer=glorot(), name="att_keys")(states)
    query = keras.layers.Dense(u, use_bias=False, kernel_initializer=glorot(), name="att_query")(last)
    query = keras.layers.RepeatVector(window, name="att_query_rep")(query)
    energy = keras.layers.Add(name="att_sum")([keys, query])
    energy = keras.layers.Activation("tanh", name="att_energy")(energy)
    score = keras.layers.Dense(1, use_bias=False, kernel_initializer=glorot(), name="att_score")(energy)
    weights = keras.layers.Softmax(axis=1, name=ATTENTION_LAYER)(score)
    context = keras.layers.Dot(axes=1, name="att_context")([weights, states])
    context = keras.layers.Flatten(name="att_context_flat")(context)
    both = keras.layers.Concatenate(name="concat")([context, last])
    loc = keras.layers.Dense(1, kernel_initializer=glorot(), name="loc_z")(both)
    raw = keras.layers.Dense(
        1,
        kernel_initializer=glorot(),
        bias_initializer=keras.initializers.Constant(_SOFTPLUS_INV_1),
        name="scale_raw",
    )(both)
    scale = keras.layers.Activation("softplus", name="scale_softplus")(raw)
    scale = keras.layers.Rescaling(1.0, offset=SCALE_FLOOR, name="scale_z")(scale)
    output = keras.layers.Concatenate(name=OUTPUT_LAYER)([loc, scale])

    model = keras.Model(inputs, output, name="lstm_attention")
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=learning_rate), loss=gaussian_loss)
    return model


class _EpochTimer(keras.callbacks.Callback):  # type: ignore[misc]  # keras is untyped
    """Wall-clock seconds per epoch."""

    def __init__(self) -> None:
        super().__init__()
        self.seconds: list[float] = []
        self._start = 0.0

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.seconds.append(time.perf_counter() - self._start)


def _as_xy(x: ArrayLike, y: ArrayLike, what: str) -> tuple[np.ndarray, np.ndarray]:
    xa = np.asarray(x, dtype=np.float32)
    ya = np.asarray(y, dtype=np.float32).reshape(-1, 1)
    if xa.ndim != 3:
        raise ValueError(f"{what}: x must be [batch, window, n_features], got shape {xa.shape}")
    if len(xa) != len(ya):
        raise ValueError(f"{what}: {len(xa)} windows but {len(ya)} targets")
    if len(xa) == 0:
        raise ValueError(f"{what}: no windows")
    if not (np.isfinite(xa).all() and np.isfinite(ya).all()):
        raise ValueError(f"{what}: x or y contains NaN or infinity")
    return xa, ya


def fit(
    model: keras.Model,
    x_train: ArrayLike,
    y_train: ArrayLike,
    x_val: ArrayLike,
    y_val: ArrayLike,
    *,
    epochs: int,
    batch_size: int,
    patience: int,
    seed: int,
    progress: bool = False,
) -> History:
    """Train with early stopping on ``val_loss``; the best epoch's weights are restored at the end.

    Shuffles the training windows each epoch (only within the training split); the validation split
    is passed separately and never mixed in. ``progress`` shows Keras's progress bar (one line per
    epoch when stdout is not a terminal, e.g. in Airflow logs). Returns the per-epoch history as a
    plain dict (``loss``, ``val_loss``, ``epoch_time_s``), ready for MLflow and :mod:`.plots`.
    """
    xt, yt = _as_xy(x_train, y_train, "training split")
    xv, yv = _as_xy(x_val, y_val, "validation split")
    set_seeds(seed)
    timer = _EpochTimer()
    stop = keras.callbacks.EarlyStopping(monitor="val_loss", patience=patience, restore_best_weights=True)
    verbose = (1 if sys.stdout.isatty() else 2) if progress else 0
    keras_history = model.fit(
        xt,
        yt,
        validation_data=(xv, yv),
        epochs=epochs,
        batch_size=batch_size,
        shuffle=True,
        callbacks=[stop, timer],
        verbose=verbose,
    )
    history: History = {k: [float(v) for v in vals] for k, vals in keras_history.history.items()}
    history["epoch_time_s"] = list(timer.seconds)
    return history


def predict(model: keras.Model, x: ArrayLike, *, batch_size: int = 1024) -> np.ndarray:
    """Standardised (location, scale) forecasts ``[batch, 2]`` as float32 (Keras path; serving uses ONNX)."""
    xa = np.asarray(x, dtype=np.float32)
    return np.asarray(model.predict(xa, batch_size=batch_size, verbose=0), dtype=np.float32)
