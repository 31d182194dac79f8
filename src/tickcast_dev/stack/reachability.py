"""Can this process reach the stack's services through the settings? Used by the stack_check DAG.

Each probe goes through the same factories the pipeline uses (``tickcast.azure`` for Blob, the
configured bootstrap servers for Kafka, the tracking URI for MLflow), so a pass means the pipeline's
own code paths are wired correctly in this process.
"""

from __future__ import annotations

from tickcast.settings import Settings, get_settings


def blob_containers(settings: Settings) -> list[str]:
    from tickcast.azure import blob_service

    return sorted(c.name for c in blob_service(settings).list_containers())


def kafka_topics(settings: Settings) -> list[str]:
    from tickcast.ingest.kafka import admin as kafka_admin

    admin = kafka_admin(settings)
    try:
        return sorted(admin.list_topics())
    finally:
        admin.close()


def mlflow_experiments(settings: Settings) -> list[str]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=settings.mlflow_tracking_uri)
    return sorted(e.name for e in client.search_experiments())


def reach_all(settings: Settings | None = None) -> dict[str, list[str]]:
    s = settings or get_settings()
    return {
        "blob_containers": blob_containers(s),
        "kafka_topics": kafka_topics(s),
        "mlflow_experiments": mlflow_experiments(s),
    }
