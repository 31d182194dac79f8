"""Every setting tickcast reads, in one place.

Values come from environment variables prefixed ``TICKCAST_`` (nested groups use ``__``,
e.g. ``TICKCAST_STACK__KAFKA_PORT``), then from a ``.env`` file in the working directory,
then from the defaults below. Two profiles:

* ``local`` (default): every endpoint is derived from the local stack's host and ports;
  Blob is reached with Azurite's well-known development connection string.
* ``cloud``: endpoints come from the ARM deployment outputs (:data:`ARM_OUTPUT_SETTINGS`;
  ``tickcast deploy-cloud`` writes them to ``.tickcast/cloud/<env>.env``) and every Azure client
  authenticates with ``DefaultAzureCredential`` (managed identity). Account keys, SAS
  tokens, connection strings and endpoint keys are refused in this profile.

``load_settings()`` turns any wrong or missing value into a :class:`SettingsError` whose
message names the environment variable and says what to set.

What profile ``cloud`` requires is scoped per component: loading checks only what every
component shares (the lake's account URL, https) and what is refused everywhere (keys,
connection strings). Each component asks for the rest when it starts,
``settings.require("kafka.bootstrap_servers", purpose="the producer")``, and the derived
endpoints (:attr:`Settings.kafka_bootstrap`, :attr:`Settings.mlflow_tracking_uri`, ...) never fall
back to the local stack in profile cloud: they raise the same :class:`SettingsError`, naming the
variable and the ARM output to set it from. So the Function app needs only the lake and the
endpoint, never Kafka or MLflow.
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from tickcast.settings.groups import (
    AZURITE_ACCOUNT,
    AZURITE_KEY,
    ENV_PREFIX,
    NESTED_DELIMITER,
    PROJECT_ROOT,
    STACK_DATABASES,
    AirflowSettings,
    AmlSettings,
    AzureSettings,
    CloudDeploySettings,
    EvaluationSettings,
    GatewaySettings,
    IngestSettings,
    KafkaSettings,
    MlflowSettings,
    ModelSettings,
    ServingSettings,
    SettingsError,
    StackSettings,
    StorageSettings,
    YahooSettings,
    env_name,
)

__all__ = [
    "ARM_OUTPUT_SETTINGS",
    "AZURITE_ACCOUNT",
    "AZURITE_KEY",
    "DERIVED_LOCALLY",
    "ENV_PREFIX",
    "NESTED_DELIMITER",
    "PROJECT_ROOT",
    "STACK_DATABASES",
    "AirflowSettings",
    "AmlSettings",
    "AzureSettings",
    "CloudDeploySettings",
    "EvaluationSettings",
    "GatewaySettings",
    "IngestSettings",
    "KafkaSettings",
    "MlflowSettings",
    "ModelSettings",
    "ServingSettings",
    "Settings",
    "SettingsError",
    "StackSettings",
    "StorageSettings",
    "YahooSettings",
    "env_name",
    "format_validation_error",
    "get_settings",
    "load_settings",
]


class Settings(BaseSettings):
    """The whole configuration. Build it with :func:`load_settings`."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter=NESTED_DELIMITER,
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        validate_default=True,
    )

    profile: Literal["local", "cloud"] = Field("local", description="local (the process stack) or cloud (Azure)")
    symbols: list[str] = Field(
        default_factory=lambda: ["SPY", "IBM", "AIG", "BAC"],
        description='symbols to ingest and serve, as JSON, e.g. ["SPY","IBM"]',
    )
    interval_level: float = Field(
        0.8,
        gt=0,
        lt=1,
        description=(
            "central level of the served forecast interval (TICKCAST_INTERVAL_LEVEL: score.py, which cannot "
            "import settings, reads the same variable)"
        ),
    )
    stack: StackSettings = Field(default_factory=StackSettings)
    storage: StorageSettings = Field(default_factory=StorageSettings)
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    mlflow: MlflowSettings = Field(default_factory=MlflowSettings)
    model: ModelSettings = Field(default_factory=ModelSettings)
    airflow: AirflowSettings = Field(default_factory=AirflowSettings)
    yahoo: YahooSettings = Field(default_factory=YahooSettings)
    ingest: IngestSettings = Field(default_factory=IngestSettings)
    serving: ServingSettings = Field(default_factory=ServingSettings)
    gateway: GatewaySettings = Field(default_factory=GatewaySettings)
    azure: AzureSettings = Field(default_factory=AzureSettings)
    aml: AmlSettings = Field(default_factory=AmlSettings)
    evaluation: EvaluationSettings = Field(default_factory=EvaluationSettings)
    cloud_deploy: CloudDeploySettings = Field(default_factory=CloudDeploySettings)

    @model_validator(mode="after")
    def _check_profile(self) -> Settings:
        """Profile cloud: what EVERY component needs (the lake), and no key, SAS or connection string anywhere."""
        problems: list[str] = []
        if self.profile == "cloud":
            management = self.aml.management_url
            if not (management.startswith("https://") or _is_loopback_http(management)):
                problems.append(f"{env_name('aml', 'management_url')} must be an https:// URL in profile cloud")
            if not self.storage.account_url:
                problems.append(_missing(("storage", "account_url"), "is required when TICKCAST_PROFILE=cloud"))
            elif not self.storage.account_url.startswith("https://"):
                problems.append(f"{env_name('storage', 'account_url')} must be an https:// URL in profile cloud")
            refused = {
                ("storage", "connection_string"): (
                    self.storage.connection_string is not None,
                    "Blob is reached with the account URL and managed identity",
                ),
                ("serving", "endpoint_key"): (
                    "endpoint_key" in self.serving.model_fields_set and self.serving.endpoint_key is not None,
                    "the endpoint is called with an AML token that the managed identity gets from Azure Resource "
                    "Manager (docs/decisions/0020)",
                ),
                ("serving", "endpoint_admin_key"): (
                    "endpoint_admin_key" in self.serving.model_fields_set
                    and self.serving.endpoint_admin_key is not None,
                    "the endpoint's deployments and traffic are managed through Azure Resource Manager",
                ),
                ("gateway", "subscription_keys"): (
                    "subscription_keys" in self.gateway.model_fields_set and bool(self.gateway.subscription_keys),
                    "API Management issues the subscription keys (a client sends one as TICKCAST_GATEWAY__CLIENT_KEY)",
                ),
            }
            for loc, (is_set, why) in refused.items():
                if is_set:
                    problems.append(f"{env_name(*loc)} must not be set when TICKCAST_PROFILE=cloud, unset it: {why}")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def require(self, *fields: str, purpose: str | None = None) -> None:
        """Fail with one :class:`SettingsError` listing every field of ``fields`` that is not set.

        ``fields`` are dotted paths, e.g. ``require("storage.account_url", "serving.endpoint_url")``. In profile
        local the endpoints the stack provides (:data:`DERIVED_LOCALLY`) count as set. The message names each
        environment variable and, for a cloud endpoint, the ARM output to set it from.
        """
        missing: list[str] = []
        for path in fields:
            loc = tuple(path.split("."))
            value: Any = self
            for part in loc:
                if not isinstance(value, BaseModel) or part not in type(value).model_fields:
                    raise ValueError(f"require(): unknown setting {path!r}")
                value = getattr(value, part)
            if value is None or value == "":
                if self.profile == "local" and loc in DERIVED_LOCALLY:
                    continue
                missing.append(_missing(loc))
        if missing:
            what = f" for {purpose}" if purpose else ""
            raise SettingsError(
                f"tickcast configuration is incomplete{what} (TICKCAST_PROFILE={self.profile}):\n"
                + "\n".join(f"  {m}" for m in missing)
            )

    # --- endpoints, derived once here so no other module builds a URL by hand -------------------

    @property
    def blob_account_url(self) -> str:
        if self.storage.account_url:
            return self.storage.account_url.rstrip("/")
        return f"http://{self.stack.host}:{self.stack.azurite_port}/{AZURITE_ACCOUNT}"

    def blob_connection_string(self) -> str:
        """Azurite's connection string (profile local only)."""
        if self.profile != "local":
            raise SettingsError("connection strings are refused in profile cloud; use managed identity")
        if self.storage.connection_string is not None:
            return self.storage.connection_string.get_secret_value()
        return (
            f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};"
            f"BlobEndpoint={self.blob_account_url};"
        )

    # In profile cloud these never fall back to the local stack: an unset one raises SettingsError (require()).

    @property
    def kafka_bootstrap(self) -> str:
        if self.profile == "cloud":
            self.require("kafka.bootstrap_servers", purpose="Kafka")
        return self.kafka.bootstrap_servers or f"{self.stack.host}:{self.stack.kafka_port}"

    @property
    def mlflow_tracking_uri(self) -> str:
        if self.profile == "cloud":
            self.require("mlflow.tracking_uri", purpose="MLflow")
        return self.mlflow.tracking_uri or f"http://{self.stack.host}:{self.stack.mlflow_port}"

    @property
    def yahoo_base_url(self) -> str:
        if self.yahoo.base_url:
            return self.yahoo.base_url.rstrip("/")
        if self.profile == "cloud":
            return "https://query1.finance.yahoo.com"
        return f"http://{self.stack.host}:{self.stack.yahoo_port}"

    @property
    def serving_clock(self) -> Literal["wall", "source"]:
        """The API's clock, 'auto' resolved (see ``serving.clock``)."""
        if self.serving.clock != "auto":
            return self.serving.clock
        return "wall" if self.profile == "cloud" else "source"

    @property
    def endpoint_url(self) -> str:
        """The endpoint's base URL (``POST {endpoint_url}/score``).

        Unlike the other endpoints this one does not raise in profile cloud: the prediction API checks
        ``serving.endpoint_url`` itself and answers 503 naming the variable, so the Function app starts.
        """
        if self.serving.endpoint_url:
            return self.serving.endpoint_url.rstrip("/").removesuffix("/score")
        return f"http://{self.stack.host}:{self.stack.endpoint_port}"

    @property
    def aml_management_url(self) -> str:
        """Azure Resource Manager's base URL (no trailing slash): where the endpoint's AML tokens come from."""
        return self.aml.management_url.rstrip("/")

    @property
    def function_url(self) -> str:
        return f"http://{self.stack.host}:{self.stack.function_port}"

    @property
    def gateway_url(self) -> str:
        if self.gateway.url:
            return self.gateway.url.rstrip("/")
        if self.profile == "cloud":
            self.require("gateway.url", purpose="the API gateway")
        return f"http://{self.stack.host}:{self.stack.gateway_port}"

    def gateway_client_key(self) -> str | None:
        if self.gateway.client_key is not None:
            return self.gateway.client_key.get_secret_value()
        keys = self.gateway.subscription_keys
        return keys[0].get_secret_value() if keys and self.profile == "local" else None

    @property
    def airflow_url(self) -> str:
        if self.airflow.url:
            return self.airflow.url.rstrip("/")
        if self.profile == "cloud":
            self.require("airflow.url", purpose="Airflow")
        return f"http://{self.stack.host}:{self.stack.airflow_port}"

    def to_env(self) -> dict[str, str]:
        """These settings as TICKCAST_* variables, so child processes (services, DAG tasks) see the same."""
        out: dict[str, str] = {}

        def walk(prefix: tuple[str, ...], value: Any) -> None:
            is_group = isinstance(value, dict) and (not prefix or prefix[-1] not in _DICT_FIELDS)
            if is_group:
                for k, v in value.items():
                    walk((*prefix, k), v)
            elif value is not None:
                out[env_name(*prefix)] = json.dumps(value) if isinstance(value, list | dict) else str(value)

        data = self.model_dump(mode="python")
        secret = self.storage.connection_string
        data["storage"]["connection_string"] = secret.get_secret_value() if secret else None
        key = self.serving.endpoint_key
        data["serving"]["endpoint_key"] = key.get_secret_value() if key else None
        admin = self.serving.endpoint_admin_key
        data["serving"]["endpoint_admin_key"] = admin.get_secret_value() if admin else None
        data["gateway"]["subscription_keys"] = [k.get_secret_value() for k in self.gateway.subscription_keys]
        data["stack"]["postgres_password"] = self.stack.postgres_password.get_secret_value()
        if self.profile == "cloud":  # local-only secrets (their defaults) are refused when set in profile cloud
            data["serving"]["endpoint_key"] = None
            data["serving"]["endpoint_admin_key"] = None
            data["gateway"]["subscription_keys"] = None
        client = self.gateway.client_key
        data["gateway"]["client_key"] = client.get_secret_value() if client else None
        walk((), data)
        return out


_DICT_FIELDS: frozenset[str] = frozenset()  # dict-valued settings (none today) travel as one JSON variable


def _is_loopback_http(url: str) -> bool:
    """``http://127.0.0.1:...`` / ``http://localhost:...``: a local stand-in of a cloud service (tests)."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return parts.scheme == "http" and parts.hostname in ("127.0.0.1", "localhost", "::1")


# ARM output of cloud/arm/main.json -> the setting it configures. THE one table: `tickcast deploy-cloud` writes
# these to .tickcast/cloud/<env>.env, require() names the output to copy, docs/cloud.md lists them.
ARM_OUTPUT_SETTINGS: dict[str, tuple[str, str]] = {
    "lakeAccountUrl": ("storage", "account_url"),
    "lakeContainer": ("storage", "lake_container"),
    "kafkaBootstrapServers": ("kafka", "bootstrap_servers"),
    "mlflowTrackingUri": ("mlflow", "tracking_uri"),
    "airflowUrl": ("airflow", "url"),
    "amlScoringUri": ("serving", "endpoint_url"),
    "subscriptionId": ("aml", "subscription_id"),
    "resourceGroupName": ("aml", "resource_group"),
    "amlWorkspaceName": ("aml", "workspace"),
    "amlEndpointName": ("aml", "endpoint_name"),
    "amlComputeName": ("aml", "compute"),
    "apimGatewayUrl": ("gateway", "url"),
}
_OUTPUT_OF = {loc: output for output, loc in ARM_OUTPUT_SETTINGS.items()}

# Endpoints the local stack provides when unset (profile local); in profile cloud they come from ARM outputs.
DERIVED_LOCALLY: frozenset[tuple[str, ...]] = frozenset(
    {
        ("storage", "account_url"),
        ("kafka", "bootstrap_servers"),
        ("mlflow", "tracking_uri"),
        ("airflow", "url"),
        ("serving", "endpoint_url"),
        ("gateway", "url"),
        ("yahoo", "base_url"),
    }
)


def _missing(loc: tuple[str, ...], why: str = "is not set") -> str:
    """``TICKCAST_X__Y is not set: set it from the ARM output Z (...)`` -- the one wording for a missing value."""
    var = env_name(*loc)
    output = _OUTPUT_OF.get(loc) if len(loc) == 2 else None
    if output:
        return (
            f"{var} {why}: set it from the ARM output {output} "
            "(`tickcast deploy-cloud` writes them all to .tickcast/cloud/<env>.env)"
        )
    hint = _describe(loc)
    return f"{var} {why}" + (f": set it to the {hint}" if hint else "")


def _describe(loc: tuple[str | int, ...]) -> str:
    """The field description at ``loc``, used to say what to set."""
    model: Any = Settings
    info = None
    for part in loc:
        fields = getattr(model, "model_fields", None)
        if not fields or part not in fields:
            return ""
        info = fields[part]
        model = info.annotation
    return info.description or "" if info is not None else ""


def format_validation_error(err: ValidationError) -> str:
    lines = ["tickcast configuration is invalid:"]
    for e in err.errors():
        loc = tuple(p for p in e["loc"] if isinstance(p, str | int))
        msg = e["msg"].removeprefix("Value error, ")
        if loc:
            var = env_name(*loc)
            got = e.get("input")
            shown = f"={got!r}" if isinstance(got, str | int | float) else ""
            hint = _describe(loc)
            lines.append(f"  {var}{shown}: {msg}." + (f" Set it to the {hint}." if hint else ""))
        else:
            lines.extend(f"  {part.strip()}" for part in msg.split("; "))
    return "\n".join(lines)


def load_settings(**overrides: Any) -> Settings:
    """Read the configuration, or raise :class:`SettingsError` naming what to fix."""
    try:
        return Settings(**overrides)
    except ValidationError as err:
        raise SettingsError(format_validation_error(err)) from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (read once)."""
    return load_settings()
