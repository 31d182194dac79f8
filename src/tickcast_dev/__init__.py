"""The local development harness: what runs tickcast on one machine, and nothing the product needs.

* :mod:`tickcast_dev.stack` — the supervisor of the local stack (``local/stack.toml``), its compose rendering,
  installs, health checks, hooks and ``doctor``;
* :mod:`tickcast_dev.main_job` — ``tickcast run``: backfill → ingest → retrain → deploy → predict on the stack;
* :mod:`tickcast_dev.status` — ``tickcast status``: the stack and the pipeline in one table;
* :mod:`tickcast_dev.airflow_client` — the Airflow REST client the main job and status use.

The product (``src/tickcast``) never imports this package; only :mod:`tickcast.cli` reaches it.
"""
