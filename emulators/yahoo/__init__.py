"""Emulator of Yahoo Finance's v8 chart API (``GET /v8/finance/chart/{symbol}``), 1-minute bars only.

Two sources of bars: a deterministic synthetic market with a known forecasting oracle
(:mod:`emulators.yahoo.synthetic`) and a replay of real recorded bars (:mod:`emulators.yahoo.tape`),
both served on an emulated clock (:mod:`emulators.yahoo.clock`). Build the app with
:func:`emulators.yahoo.app.create_app`; run it with ``python -m emulators.yahoo``.
"""
