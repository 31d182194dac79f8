"""The local stack of real services: every service healthy and usable through the settings layer."""

from __future__ import annotations

import json
import time
import uuid

import pytest

from tickcast.settings import Settings

pytestmark = pytest.mark.integration


def test_every_service_is_healthy(stack: Settings) -> None:
    from tests.support.stack import stack_flavour

    if stack_flavour()[0] != "processes":
        pytest.skip("supervisor status applies to the process stack; compose reports its own health")
    from tickcast_dev.stack.supervisor import Supervisor

    statuses = Supervisor(stack).status()
    assert {s.name for s in statuses} == {
        "postgres",
        "azurite",
        "kafka",
        "mlflow",
        "airflow",
        "yahoo",
        "producer",
        "endpoint",
        "function",
        "gateway",
    }
    unhealthy = [(s.name, s.detail) for s in statuses if not s.healthy]
    assert not unhealthy


def test_blob_round_trip_through_the_settings_factory(stack: Settings) -> None:
    from tickcast.azure import container, lake_container

    lake = lake_container(stack)
    assert lake.exists(), "`up` creates the lake container"
    probe = container(f"it-{uuid.uuid4().hex[:8]}", stack, create=True)
    try:
        payload = b"symbol,close\nSPY,501.25\n"
        probe.upload_blob("bars/probe.csv", payload)
        assert probe.download_blob("bars/probe.csv").readall() == payload
        assert [b.name for b in probe.list_blobs(name_starts_with="bars/")] == ["bars/probe.csv"]
    finally:
        probe.delete_container()


def test_topics_exist_with_configured_partitions(stack: Settings) -> None:
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(bootstrap_servers=stack.kafka_bootstrap)
    try:
        for topic in (stack.kafka.bars_topic, stack.kafka.dlq_topic):
            partitions = consumer.partitions_for_topic(topic)
            assert partitions is not None and len(partitions) == stack.kafka.partitions, topic
    finally:
        consumer.close()


def _consume(group: str, topic: str, bootstrap: str, want: int, deadline_s: float = 60.0) -> list[dict[str, object]]:
    """Poll in a consumer group until ``want`` records arrived (or the deadline), committing each batch."""
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=6000,
        heartbeat_interval_ms=1000,
        fetch_max_wait_ms=50,
        value_deserializer=lambda b: json.loads(b),
    )
    got: list[dict[str, object]] = []
    try:
        deadline = time.monotonic() + deadline_s
        while len(got) < want and time.monotonic() < deadline:
            batch = consumer.poll(timeout_ms=500, max_records=want - len(got))
            for records in batch.values():
                got.extend(r.value for r in records)
            if batch:
                consumer.commit()
    finally:
        consumer.close()
    return got


def test_kafka_consumer_group_commits_and_resumes(stack: Settings) -> None:
    from kafka import KafkaProducer
    from kafka.admin import NewTopic

    from tickcast.ingest.kafka import admin

    run = uuid.uuid4().hex[:8]
    topic = f"it.{run}.groups"  # its own topic: the stack's producer is publishing to the bars topic
    client = admin(stack)
    client.create_topics([NewTopic(name=topic, num_partitions=3, replication_factor=1)])
    client.close()
    producer = KafkaProducer(
        bootstrap_servers=stack.kafka_bootstrap,
        acks="all",
        key_serializer=str.encode,
        value_serializer=lambda v: json.dumps(v).encode(),
    )
    first = [{"run": run, "n": i, "symbol": "SPY"} for i in range(10)]
    for msg in first:
        producer.send(topic, key="SPY", value=msg)
    producer.flush()

    group = f"it-{run}"
    got = _consume(group, topic, stack.kafka_bootstrap, want=10)
    assert [m["n"] for m in got if m["run"] == run] == list(range(10)), "one key keeps its order"

    second = [{"run": run, "n": i, "symbol": "SPY"} for i in range(10, 15)]
    for msg in second:
        producer.send(topic, key="SPY", value=msg)
    producer.flush()
    producer.close()

    resumed = _consume(group, topic, stack.kafka_bootstrap, want=5)
    assert [m["n"] for m in resumed if m["run"] == run] == list(range(10, 15)), (
        "a new consumer in the same group resumes after the committed offset"
    )


def test_mlflow_log_register_alias_and_load(stack: Settings) -> None:
    import mlflow
    import pandas as pd
    from mlflow.tracking import MlflowClient

    from tickcast.azure import container

    mlflow.set_tracking_uri(stack.mlflow_tracking_uri)
    name = f"it-model-{uuid.uuid4().hex[:8]}"

    class Doubler(mlflow.pyfunc.PythonModel):  # type: ignore[misc,name-defined]
        def predict(self, context, model_input, params=None):  # type: ignore[no-untyped-def]
            return model_input["x"] * 2

    mlflow.set_experiment("integration")
    with mlflow.start_run() as run:
        mlflow.log_metric("rmse", 0.5)
        info = mlflow.pyfunc.log_model(name="model", python_model=Doubler(), registered_model_name=name)
    client = MlflowClient(stack.mlflow_tracking_uri)
    version = (
        client.get_latest_versions(name)[0].version
        if info.registered_model_version is None
        else (info.registered_model_version)
    )
    client.set_registered_model_alias(name, "production", str(version))
    assert client.get_model_version_by_alias(name, "production").run_id == run.info.run_id

    model = mlflow.pyfunc.load_model(f"models:/{name}@production")
    out = model.predict(pd.DataFrame({"x": [1.0, 2.5]}))
    assert list(out) == [2.0, 5.0]

    blobs = list(container(stack.storage.mlflow_container, stack).list_blobs(name_starts_with="mlflow/"))
    assert blobs, "artifacts are stored in Azurite's mlflow container, not on local disk"


def test_airflow_parses_dags_without_import_errors_and_runs_a_task(stack: Settings) -> None:
    from tests.support.stack import stack_flavour
    from tickcast_dev.airflow_client import AirflowClient

    if stack_flavour()[0] != "processes":
        pytest.skip("the stock Airflow image has no tickcast package to run stack_check; the process stack runs it")

    with AirflowClient(stack) as af:
        af.wait_for_dag("stack_check", timeout_s=90)
        assert af.import_errors() == []
        af.unpause("stack_check")
        run_id = af.trigger("stack_check")
        assert af.wait_for_run("stack_check", run_id, timeout_s=180) == "success"


def test_airflow_and_mlflow_keep_their_state_in_the_stacks_postgres(stack: Settings) -> None:
    """Both schemas are migrated in their own database; no SQLite file is written anywhere."""
    import psycopg2

    s = stack.stack
    for database, table in (("airflow", "dag"), ("mlflow", "experiments")):
        conn = psycopg2.connect(
            host=s.host,
            port=s.postgres_port,
            user=s.postgres_user,
            password=s.postgres_password.get_secret_value(),
            dbname=database,
            connect_timeout=5,
        )
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT version_num FROM alembic_version")
                assert cur.fetchone(), f"{database}: no schema revision"
                cur.execute(f"SELECT count(*) FROM {table}")
                assert cur.fetchone() is not None
        finally:
            conn.close()
    from tests.support.stack import stack_flavour

    if stack_flavour()[0] == "processes":
        assert not list(s.resolved_home().rglob("*.db")), "a service still writes a SQLite database"
    with pytest.raises(psycopg2.OperationalError, match="password authentication failed"):
        psycopg2.connect(host=s.host, port=s.postgres_port, user=s.postgres_user, password="wrong", dbname="mlflow")


def test_every_port_the_stack_opens_is_on_loopback_and_airflow_uses_the_configured_ones(stack: Settings) -> None:
    """No service listens on 0.0.0.0 or ::; Airflow's scheduler health check is on its own (free) port."""
    import psutil

    from tests.support.stack import stack_flavour, stack_processes
    from tickcast_dev.stack.supervisor import Supervisor

    if stack_flavour()[0] != "processes":
        pytest.skip("containers publish on loopback (tests/unit/test_compose.py); here: the processes")
    s = stack.stack
    expected = {s.airflow_port, s.airflow_health_port, s.airflow_log_server_port, s.postgres_port}
    # Airflow's task log server starts a little after its API server (airflow_launcher.AFTER_API): poll for it
    deadline = time.monotonic() + 30
    while True:
        pids = {p.pid for p in stack_processes(Supervisor(stack))}
        listening = [
            (c.pid, c.laddr.ip, c.laddr.port)
            for c in psutil.net_connections(kind="inet")
            if c.status == psutil.CONN_LISTEN and c.pid in pids
        ]
        ports = {port for _, _, port in listening}
        if expected <= ports or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert listening
    assert [x for x in listening if x[1] not in ("127.0.0.1", "::1")] == []
    assert expected <= ports
    assert not {8793, 8794, 8974} & ports, "Airflow's default ports would collide with a second stack"
