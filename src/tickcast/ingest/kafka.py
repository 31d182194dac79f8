"""Kafka client factories: the one place that configures producers, consumers and admin clients.

Settings that matter (and why):
* producer: ``acks="all"`` and idempotence, so a retried send is not duplicated and nothing counts as
  sent before every in-sync replica has it; bounded retries so a dead broker fails loudly;
* consumer: manual commits (``enable_auto_commit=False``) — offsets are committed only after the lake
  write; ``session_timeout_ms=6000`` (the first poll otherwise waits ~23 s on Tansu) and a short
  ``fetch_max_wait_ms`` for freshness.
"""

from __future__ import annotations

from typing import Any

from tickcast.settings import Settings

CONSUMER_DEFAULTS: dict[str, Any] = {
    "enable_auto_commit": False,
    "auto_offset_reset": "earliest",
    "session_timeout_ms": 6000,
    "heartbeat_interval_ms": 1000,
    "fetch_max_wait_ms": 100,
    "max_poll_records": 5000,
}


def producer(settings: Settings, **overrides: Any) -> Any:
    from kafka import KafkaProducer

    options: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap,
        "acks": "all",
        "enable_idempotence": True,
        "retries": 5,
        "retry_backoff_ms": 200,
        "delivery_timeout_ms": 30000,
        "request_timeout_ms": 10000,
        "linger_ms": 5,
        "batch_size": 256 * 1024,
        "max_in_flight_requests_per_connection": 5,
    }
    options.update(overrides)
    return KafkaProducer(**options)


def consumer(settings: Settings, *topics: str, group: str | None = None, **overrides: Any) -> Any:
    from kafka import KafkaConsumer

    options = {"bootstrap_servers": settings.kafka_bootstrap, "group_id": group or settings.kafka.consumer_group}
    options.update(CONSUMER_DEFAULTS)
    options.update(overrides)
    return KafkaConsumer(*topics, **options)


def admin(settings: Settings, timeout_ms: int = 5000) -> Any:
    from kafka import KafkaAdminClient

    return KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap, request_timeout_ms=timeout_ms)
