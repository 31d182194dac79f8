"""The setting groups of :class:`tickcast.settings.Settings` (one typed model per part of the system), the
constants they share, and the error type. Import them from :mod:`tickcast.settings`."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Literal
from urllib.parse import quote

from pydantic import AwareDatetime, BaseModel, Field, SecretStr

from tickcast.errors import ConfigurationError

ENV_PREFIX = "TICKCAST_"
NESTED_DELIMITER = "__"

# Azurite's published development account (documented by Microsoft; not a secret).
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="

# The checkout this package runs from (src layout: src/tickcast/settings/ -> repo root).
PROJECT_ROOT = Path(__file__).resolve().parents[3]


# The databases the stack's PostgreSQL holds: Airflow's metadata and MLflow's backend store.
STACK_DATABASES = ("airflow", "mlflow")


class SettingsError(ConfigurationError):
    """A configuration value is wrong or missing; the message says which variable to set."""


def env_name(*loc: str | int) -> str:
    """The environment variable that sets the field at ``loc`` (e.g. ``("stack", "kafka_port")``)."""
    return ENV_PREFIX + NESTED_DELIMITER.join(str(part).upper() for part in loc)


class StackSettings(BaseModel):
    """Where the local stack lives and listens (profile ``local`` only)."""

    home: Path = Field(PROJECT_ROOT / ".tickcast", description="directory for the stack's data, logs and PID files")
    cache: Path = Field(
        PROJECT_ROOT / ".tickcast" / "cache", description="directory for installed service packages (Node, ...)"
    )
    host: str = Field("127.0.0.1", description="loopback address the local services bind to")
    azurite_port: int = Field(10000, ge=1, le=65535, description="TCP port of Azurite's Blob service")
    kafka_port: int = Field(9092, ge=1, le=65535, description="TCP port of the Kafka-protocol broker")
    mlflow_port: int = Field(5000, ge=1, le=65535, description="TCP port of the MLflow tracking server")
    airflow_port: int = Field(8080, ge=1, le=65535, description="TCP port of the Airflow API server and UI")
    yahoo_port: int = Field(8765, ge=1, le=65535, description="TCP port of the Yahoo chart-API emulator")
    producer_port: int = Field(8766, ge=1, le=65535, description="TCP port of the producer's health/status page")
    gateway_port: int = Field(8770, ge=1, le=65535, description="TCP port of the APIM gateway stand-in")
    function_port: int = Field(8771, ge=1, le=65535, description="TCP port of the Function app (uvicorn)")
    endpoint_port: int = Field(8772, ge=1, le=65535, description="TCP port of the AML online endpoint stand-in")
    postgres_port: int = Field(
        5433, ge=1, le=65535, description="TCP port of the stack's PostgreSQL (Airflow's and MLflow's own state)"
    )
    airflow_log_server_port: int = Field(
        8793, ge=1, le=65535, description="TCP port of Airflow's task log server (loopback; Airflow's 8793)"
    )
    airflow_trigger_log_server_port: int = Field(
        8794, ge=1, le=65535, description="TCP port of Airflow's triggerer log server (Airflow's 8794)"
    )
    airflow_health_port: int = Field(
        8974, ge=1, le=65535, description="TCP port of the Airflow scheduler's health check (loopback; Airflow's 8974)"
    )
    postgres_user: str = Field("tickcast", min_length=1, description="PostgreSQL role the stack's services use")
    postgres_password: SecretStr = Field(
        SecretStr("tickcast-local"), description="password of that role (loopback only; local stack only)"
    )
    start_timeout_s: float = Field(120.0, gt=0, description="seconds to wait for one service to become healthy")
    stop_timeout_s: float = Field(10.0, gt=0, description="seconds to wait after SIGTERM before SIGKILL")

    def resolved_home(self) -> Path:
        return self.home.expanduser().resolve()

    def database_url(self, database: str, *, host: str | None = None, driver: str = "psycopg2") -> str:
        """SQLAlchemy URL of one of the stack's databases (:data:`STACK_DATABASES`) on its PostgreSQL.

        ``host`` defaults to :attr:`host` (the process stack); docker-compose passes its service name.
        """
        if database not in STACK_DATABASES:
            raise ValueError(f"unknown stack database {database!r}; known: {STACK_DATABASES}")
        password = quote(self.postgres_password.get_secret_value(), safe="")
        user = quote(self.postgres_user, safe="")
        return f"postgresql+{driver}://{user}:{password}@{host or self.host}:{self.postgres_port}/{database}"

    def resolved_cache(self) -> Path:
        return self.cache.expanduser().resolve()


class StorageSettings(BaseModel):
    """The Blob account that holds the lake and MLflow's artifacts."""

    account_url: str | None = Field(
        None,
        description="Blob endpoint, e.g. https://<account>.blob.core.windows.net "
        "(ARM output lakeAccountUrl); required in profile cloud",
    )
    connection_string: SecretStr | None = Field(
        None, description="profile local only: overrides the Azurite development connection string"
    )
    lake_container: str = Field("lake", min_length=3, description="container of the Parquet lake")
    mlflow_container: str = Field("mlflow", min_length=3, description="container of MLflow artifacts")


class KafkaSettings(BaseModel):
    """The broker and the topics of the market-data path."""

    bootstrap_servers: str | None = Field(
        None, description="host:port[,host:port]; derived from the stack in profile local, required in cloud"
    )
    bars_topic: str = Field("market.bars.1m", description="topic of validated 1-minute bars")
    dlq_topic: str = Field("market.bars.1m.dlq", description="dead-letter topic for undecodable bars")
    partitions: int = Field(3, ge=1, description="partitions per topic, created up front")
    consumer_group: str = Field("tickcast-ingest", description="consumer group of the lake ingest job")


class MlflowSettings(BaseModel):
    """The tracking server, the registered model and the promotion gate."""

    tracking_uri: str | None = Field(
        None, description="MLflow tracking URL; derived from the stack in profile local, required in cloud"
    )
    model_name: str = Field("tickcast-lstm-attention", description="registered model name")
    experiment: str = Field("tickcast-retrain", description="MLflow experiment of the retrain runs")
    promotion_margin: float = Field(
        0.01, ge=0, lt=1, description="a challenger must have RMSE < production RMSE x (1 - margin) to be promoted"
    )
    promotion_alpha: float = Field(
        0.05, gt=0, lt=1, description="significance level of the gate's Diebold-Mariano tests (point and interval)"
    )
    coverage_tolerance: float = Field(
        0.03, gt=0, lt=1, description="a challenger's interval coverage on unseen minutes must be this close to nominal"
    )


class EvaluationSettings(BaseModel):
    """Live evaluation: the prediction log, the evaluate job and when it rolls production back."""

    log_predictions: bool = Field(True, description="record every served forecast in the lake's prediction log")
    log_batch: int = Field(200, ge=1, description="served forecasts buffered before one write to the prediction log")
    log_flush_s: float = Field(5.0, gt=0, description="seconds at most a served forecast waits in the buffer")
    log_buffer_max: int = Field(
        20_000, ge=1, description="forecasts held while the lake is unwritable; beyond it the oldest are dropped"
    )
    lookback_minutes: int = Field(
        390, ge=10, description="minutes of the prediction log each evaluation reads (one session by default)"
    )
    min_minutes: int = Field(60, ge=10, description="evaluated minutes needed before live evaluation may roll back")
    coverage_tolerance: float = Field(
        0.10, gt=0, lt=1, description="live coverage further than this from nominal rolls production back"
    )
    alpha: float = Field(0.01, gt=0, lt=1, description="significance of 'production is worse than persistence live'")
    rollback: bool = Field(True, description="roll production back to previous when live evaluation says so")


class ModelSettings(BaseModel):
    """The forecaster: features window, LSTM+attention size, training loop, data split."""

    window: int = Field(30, ge=2, description="minutes of features the model sees per prediction")
    lstm_units: int = Field(32, ge=1, description="units of the LSTM layer")
    epochs: int = Field(40, ge=1, description="maximum training epochs (early stopping usually ends sooner)")
    batch_size: int = Field(256, ge=1, description="training batch size")
    patience: int = Field(5, ge=1, description="epochs without validation improvement before stopping")
    learning_rate: float = Field(1e-3, gt=0, description="Adam learning rate")
    seed: int = Field(7, description="seed for weights, shuffling and TensorFlow ops")
    val_fraction: float = Field(0.15, gt=0, lt=0.5, description="share of windows for validation (after train)")
    test_fraction: float = Field(0.15, gt=0, lt=0.5, description="share of windows held out (the most recent)")
    lookback_days: int = Field(7, ge=1, description="calendar days of lake data one retrain reads (7 = ~5 sessions)")
    min_train_windows: int = Field(300, ge=10, description="fewer training windows than this: the retrain stops")


class YahooSettings(BaseModel):
    """The Yahoo chart-API source (the real one, or the emulator in profile local)."""

    base_url: str | None = Field(
        None, description="chart API base URL, e.g. https://query1.finance.yahoo.com; derived from the stack in local"
    )
    timeout_s: float = Field(10.0, gt=0, description="seconds before one chart request times out")
    retries: int = Field(5, ge=0, description="retries of a failed chart request (exponential backoff with jitter)")
    backoff_s: float = Field(0.5, gt=0, description="first backoff delay in seconds (doubles per retry)")
    backoff_max_s: float = Field(30.0, gt=0, description="longest backoff delay in seconds")


class IngestSettings(BaseModel):
    """The market-data path: how often the producer polls and how long one ingest run consumes."""

    poll_interval_s: float = Field(60.0, gt=0, description="seconds between producer polls of the source")
    poll_offset_s: float = Field(1.5, ge=0, description="seconds after each minute boundary to poll (lets it close)")
    consume_slice_s: float = Field(45.0, gt=0, description="seconds one ingest DAG run consumes before it ends")
    repair_every_polls: int = Field(
        5, ge=0, description="every N producer polls, publish again the session's minutes the lake lost (0 = never)"
    )
    max_backfill_days: int = Field(7, ge=1, le=30, description="days one chart request may span (Yahoo: ~8)")
    repair_settle_s: float = Field(
        300.0,
        gt=0,
        description="a minute after the lake's newest counts as lost (and gap repair publishes it again, once) when it "
        "closed this many seconds ago at the source and is still not in the lake",
    )
    repair_lookback_every: int = Field(
        12,
        ge=0,
        description="the first gap repair and every N-th one after it compare the whole lookback (max_backfill_days) "
        "instead of the current session (0 = only the first)",
    )
    # what one message from outside may hold (decision 0030); a message beyond these goes to the DLQ
    max_future_s: float = Field(
        300.0,
        ge=0,
        description="bars starting later than the source clock (UTC now) plus this many seconds are refused; "
        "raise it for an emulator running faster than real time",
    )
    min_bar_ts: AwareDatetime = Field(
        datetime(2000, 1, 1, tzinfo=UTC), description="bars starting before this UTC time are refused (ISO-8601)"
    )
    max_days_per_message: int = Field(8, ge=1, description="day files one message may touch (more: refused)")
    max_batch_bytes: int = Field(
        16 * 1024 * 1024,
        ge=1024 * 1024,
        description="bytes one Kafka record batch may decompress to (more: skipped and dead-lettered, a zip bomb)",
    )


class ServingSettings(BaseModel):
    """The online endpoint the Function app calls (AML in the cloud, emulators/aml_endpoint locally)."""

    endpoint_url: str | None = Field(
        None,
        description="scoring URI of the endpoint (ARM output amlScoringUri); derived from the stack in local, "
        "required by the Function app in cloud",
    )
    endpoint_key: SecretStr | None = Field(
        SecretStr("local-endpoint-key"),
        description="endpoint key (local stand-in only; refused in cloud, where the Function sends an AML token "
        "its managed identity gets from Azure Resource Manager)",
    )
    endpoint_admin_key: SecretStr | None = Field(
        SecretStr("local-endpoint-admin-key"),
        description="key of the local stand-in's management API (deployments, traffic); never the scoring key "
        "(local stand-in only; refused in cloud, where Azure Resource Manager is the management plane)",
    )
    request_timeout_ms: int = Field(5000, ge=100, description="scoring request timeout (AML's default is 5000)")
    min_bars: int = Field(0, ge=0, description="bars a caller must send at least (0 = what the model's window needs)")
    max_body_bytes: int = Field(
        1_048_576,
        ge=1024,
        le=4 * 1024 * 1024,
        description="longest request body the Function app reads (413 past it); the default equals the gateway's "
        "validate-content max-size in cloud/apim/policy.xml (APIM allows at most 4 MB)",
    )
    max_data_age_s: float = Field(
        180.0,
        ge=0,
        description="during the regular session, GET predictions answers 503 stale_data when the lake's newest bar "
        "closed longer ago than this (0 = never); outside the session an old bar is normal",
    )
    clock: Literal["auto", "wall", "source"] = Field(
        "auto",
        description="the API's 'now' for data age: 'wall' (this machine's UTC clock), 'source' (meta.regularMarketTime "
        "of the chart API at yahoo.base_url, the clock the bars are produced on), 'auto' = source in profile "
        "local (the emulator runs its own clock), wall in cloud",
    )
    clock_refresh_s: float = Field(
        10.0, gt=0, description="with clock 'source': seconds between two readings of the source's clock"
    )


class GatewaySettings(BaseModel):
    """API Management: the public entry point (emulators/apim locally, enforcing cloud/apim/policy.xml)."""

    url: str | None = Field(
        None,
        description="gateway base URL; derived from the stack in local, APIM URL in cloud (ARM output apimGatewayUrl)",
    )
    subscription_keys: list[SecretStr] = Field(
        default_factory=lambda: [SecretStr("local-subscription-key")],
        description='keys the local gateway accepts, JSON e.g. ["key1","key2"] (APIM issues them in the cloud)',
    )
    client_key: SecretStr | None = Field(
        None, description="key `tickcast predict`/`just smoke` send; default: the first local subscription key"
    )
    policy_file: Path = Field(
        PROJECT_ROOT / "cloud" / "apim" / "policy.xml", description="APIM policy shared by cloud/ and the local gateway"
    )


class AirflowSettings(BaseModel):
    """Airflow 3: the local instance (the stack's airflow service), or the cloud's Airflow host."""

    url: str | None = Field(
        None, description="Airflow API server base URL; derived from the stack in local (ARM output airflowUrl)"
    )
    parallelism: int = Field(4, ge=1, description="AIRFLOW__CORE__PARALLELISM for the local scheduler")
    triggerer: bool = Field(
        False, description="also run Airflow's triggerer locally (only deferrable tasks need it; tickcast has none)"
    )
    unpause: list[str] = Field(
        default_factory=lambda: ["ingest", "retrain", "evaluate"],
        description='DAGs `up` switches on (new DAGs start paused), JSON e.g. ["ingest"]; [] keeps all paused',
    )


class AzureSettings(BaseModel):
    """Identity used in profile ``cloud``."""

    managed_identity_client_id: str | None = Field(
        None, description="client ID of a user-assigned managed identity; unset = system-assigned"
    )


class AmlSettings(BaseModel):
    """The Azure ML workspace and Kubernetes online endpoint the model is deployed to (profile ``cloud``)."""

    subscription_id: str | None = Field(
        None, description="Azure subscription ID of the AML workspace (ARM output subscriptionId)"
    )
    resource_group: str | None = Field(
        None, description="resource group of the AML workspace (ARM output resourceGroupName)"
    )
    workspace: str | None = Field(None, description="AML workspace name (ARM output amlWorkspaceName)")
    endpoint_name: str = Field(
        "tickcast", min_length=3, description="AML online endpoint name (ARM output amlEndpointName)"
    )
    compute: str = Field(
        "tickcast-aks", min_length=2, description="AKS compute attached to the workspace (ARM output amlComputeName)"
    )
    management_url: str = Field(
        "https://management.azure.com",
        description="Azure Resource Manager of this cloud, whose token API issues the endpoint's AML tokens "
        "(the Function app setting comes from environment().resourceManager)",
    )
    instance_type: str = Field(
        "defaultinstancetype", min_length=1, description="instance type of the Kubernetes compute for a deployment"
    )
    instance_count: int = Field(1, ge=1, description="replicas per deployment colour")
    operation_timeout_s: float = Field(
        1800.0, gt=0, description="seconds to wait for one AML operation (endpoint/deployment create, traffic)"
    )


class CloudDeploySettings(BaseModel):
    """``tickcast deploy-cloud`` / ``destroy-cloud``: where the ARM template goes and the per-user parameters."""

    subscription_id: str | None = Field(
        None, description="subscription to deploy to (else AZURE_SUBSCRIPTION_ID); e.g. from `az account show`"
    )
    env: Literal["dev", "test", "prod"] = Field(
        "dev", description="environment: picks cloud/arm/parameters/<env>.json and the resource group"
    )
    resource_group: str | None = Field(None, description="resource group to deploy into (default: tickcast-<env>)")
    location: str = Field("westeurope", min_length=2, description="Azure region of the resource group and resources")
    name_prefix: str | None = Field(
        None, description="template parameter namePrefix (default: the parameters file's value)"
    )
    ssh_public_key_path: Path = Field(
        Path("~/.ssh/id_rsa.pub"), description="OpenSSH public key for the VMs (template parameter sshPublicKey)"
    )
    apim_publisher_email: str | None = Field(
        None, description="API Management publisher email (template parameter apimPublisherEmail)"
    )
    apim_publisher_name: str | None = Field(
        None, description="API Management publisher name (template parameter apimPublisherName)"
    )
    template: Path = Field(PROJECT_ROOT / "cloud" / "arm" / "main.json", description="the ARM template")
    parameters_dir: Path = Field(
        PROJECT_ROOT / "cloud" / "arm" / "parameters", description="directory of the <env>.json parameter files"
    )
    output_dir: Path = Field(
        PROJECT_ROOT / ".tickcast" / "cloud", description="where the outputs are written as <env>.env / <env>.json"
    )
    timeout_s: float = Field(7200.0, gt=0, description="seconds to wait for the deployment (AKS and APIM are slow)")

    def resolved_resource_group(self) -> str:
        return self.resource_group or f"tickcast-{self.env}"
