"""Scoring: the AML online endpoint's entry script and the request/response contract it serves.

* :mod:`tickcast.scoring.contract` — the bodies of ``POST /score`` (and of the public ``POST /api/predict``),
  shared by every side; the AML 424 model-error headers;
* :mod:`tickcast.scoring.score` — Azure ML's entry script (``init()`` / ``run()``), served unmodified by
  Microsoft's ``azmlinfsrv`` in the cloud and by ``emulators/aml_endpoint`` locally.

Dependencies: features, the TensorFlow-free predictor and the contract — nothing else of tickcast.
Importing this package imports nothing (the stand-in loads ``score.py`` by file path, one copy per deployment).
"""
