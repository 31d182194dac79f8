"""The forecaster: preprocessing, LSTM+attention network, training, ONNX export, evaluation, plots.

* :mod:`.architecture`: the Keras model (LSTM + additive attention + Dense(1)) and its training loop.
  Input: standardised feature windows ``[batch, window, n_features]``; output: the standardised
  next-minute log return ``[batch, 1]``, so predicting "no change" (persistence) is the natural floor.
* :mod:`.onnx_export`: Keras -> ONNX bytes (one input ``x``, one output ``return_z``) and a parity
  check against ONNX Runtime.
* :mod:`.evaluation`: RMSE / MAE / MAPE / directional accuracy on prices, always beside persistence
  (skill = 1 - RMSE_model / RMSE_persistence). Pure NumPy.
* :mod:`.plots`: training curve and predicted-vs-actual figures (matplotlib Agg).
* :mod:`.preprocessing`, :mod:`.predictor`, :mod:`.training`: scalers, the ONNX serving path and the
  end-to-end training run.

Importing this package imports nothing heavy; TensorFlow loads only with :mod:`.architecture` or
:func:`.onnx_export.export_onnx`.
"""
