"""Features: causal indicators, windows and scalers — ONE code path used by training AND serving.

* :mod:`tickcast.features.indicators` — per-session indicators of one symbol's 1-minute bars;
* :mod:`tickcast.features.windows` — sliding windows and the next-minute log-return target;
* :mod:`tickcast.features.scaling` — per-symbol scalers with plain-JSON parameters.
"""
