"""Named steps that stack.toml runs around a service's start (``before_start`` / ``on_ready``).

Each hook is idempotent: running ``up`` twice creates nothing twice.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

from tickcast.settings import Settings


def create_containers(settings: Settings) -> None:
    """The lake container and MLflow's artifact container in Blob."""
    from tickcast.azure import container

    for name in (settings.storage.lake_container, settings.storage.mlflow_container):
        container(name, settings, create=True)


def create_topics(settings: Settings) -> None:
    """The bars topic and its dead-letter topic, with explicit partitions (no auto-creation)."""
    from kafka.admin import NewTopic
    from kafka.errors import TopicAlreadyExistsError

    from tickcast.ingest.kafka import admin as kafka_admin

    admin = kafka_admin(settings)
    try:
        existing = set(admin.list_topics())
        wanted = [
            NewTopic(name=t, num_partitions=settings.kafka.partitions, replication_factor=1)
            for t in (settings.kafka.bars_topic, settings.kafka.dlq_topic)
            if t not in existing
        ]
        if wanted:
            with contextlib.suppress(TopicAlreadyExistsError):  # a concurrent `up` created it first
                admin.create_topics(wanted)
    finally:
        admin.close()


def create_databases(settings: Settings) -> None:
    """Airflow's and MLflow's databases on the stack's PostgreSQL (each service migrates its own schema)."""
    from tickcast.settings import STACK_DATABASES
    from tickcast_dev.stack.postgres import create_databases as create

    s = settings.stack
    create(s.host, s.postgres_port, s.postgres_user, s.postgres_password.get_secret_value(), STACK_DATABASES)


def unpause_dags(settings: Settings) -> None:
    """Switch on the DAGs in ``settings.airflow.unpause`` once the DAG processor has parsed them."""
    from tickcast_dev.airflow_client import AirflowClient

    if not settings.airflow.unpause:
        return
    with AirflowClient(settings) as af:
        for dag_id in settings.airflow.unpause:
            af.wait_for_dag(dag_id, timeout_s=120)
            af.unpause(dag_id)


HOOKS: dict[str, Callable[[Settings], None]] = {
    "create_containers": create_containers,
    "create_topics": create_topics,
    "create_databases": create_databases,
    "unpause_dags": unpause_dags,
}
