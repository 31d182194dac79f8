"""Validation: judging models on unseen minutes.

* :mod:`tickcast.validation.gate` — the pure promotion rule (no I/O): thresholds as data, a verdict with reasons;
* :mod:`tickcast.validation.judge` — scores each model through its own preprocessing on the same new minutes.
"""
