"""The forecasters: baseline and LSTM+attention, preprocessing, training, ONNX export, evaluation, plots.

* :mod:`.baseline`: persistence + a recent-realized-volatility interval, as an ONNX graph with the same
  artifact contract as the LSTM (no training, no TensorFlow).
* :mod:`.architecture`: the Keras model (LSTM + additive attention + Gaussian head) and its training loop.
  Input: standardised feature windows ``[batch, window, n_features]``; output: location and scale of the
  standardised next-minute log return ``[batch, 2]``, so predicting "no change" (persistence) is the
  natural floor.
* :mod:`.onnx_export`: Keras -> ONNX bytes (one input ``x``, one output ``forecast_z``) and a parity
  check against ONNX Runtime.
* :mod:`.uncertainty`: location + scale -> price interval; coverage, interval score, calibration.
* :mod:`.kinds`: the two model kinds (``baseline``, ``lstm-attention``).
* :mod:`.evaluation`: RMSE / MAE / MAPE / directional accuracy on prices, always beside persistence
  (skill = 1 - RMSE_model / RMSE_persistence). Pure NumPy.
* :mod:`.plots`: training curve and predicted-vs-actual figures (matplotlib Agg).
* :mod:`.preprocessing`, :mod:`.predictor`, :mod:`.training`: scalers, the ONNX serving path and the
  end-to-end training run.

Importing this package imports nothing heavy; TensorFlow loads only with :mod:`.architecture` or
:func:`.onnx_export.export_onnx`.
"""
