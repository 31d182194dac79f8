"""The model registry: the ONLY owner of MLflow in tickcast.

* :mod:`tickcast.registry.mlflow_registry` — runs, registered versions, tags, aliases (:class:`Registry`);
* :mod:`tickcast.registry.vocabulary` — the alias and tag names.
"""
