"""Serving: the scoring contract and its two hosts.

* :mod:`tickcast.serving.schema` — the request/response/error bodies of ``POST /score`` (and of the public
  ``POST /api/predict``), shared by every side;
* :mod:`tickcast.serving.score` — Azure ML's entry script (``init()`` / ``run()``), served unmodified by
  Microsoft's ``azmlinfsrv`` in the cloud and by ``emulators/aml_endpoint`` locally.

Importing this package imports nothing (the stand-in loads ``score.py`` by file path, one copy per deployment).
"""
