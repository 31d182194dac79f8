"""What the stand-ins (the Yahoo emulator, the AML endpoint, the APIM gateway) read: one settings model.

The stand-ins are not the product, so they do not read :mod:`tickcast.settings`; they read the same
``TICKCAST_*`` environment variables (nested groups with ``__``, then a ``.env`` file in the working directory,
then the defaults below), so the stack definition, the supervisor and docker-compose configure both sides with
one set of variables. The ``emulator`` group (synthetic market or tape replay, the emulated clock) exists only
here. Keys and ports default to the same values as the product's settings, so a local client and its stand-in
agree without configuration.

:func:`load_stand_in_settings` turns a wrong value into a :class:`StandInSettingsError` naming the variable.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "TICKCAST_"
NESTED_DELIMITER = "__"

# The checkout the stand-ins run from (emulators/settings.py -> repo root).
PROJECT_ROOT = Path(__file__).resolve().parents[1]


class StandInSettingsError(ValueError):
    """A stand-in's setting is wrong or missing; the message names the variable to set."""


def env_name(*loc: str | int) -> str:
    """The environment variable that sets the field at ``loc`` (e.g. ``("emulator", "mode")``)."""
    return ENV_PREFIX + NESTED_DELIMITER.join(str(part).upper() for part in loc)


class StackPlaces(BaseModel):
    """Where the local stack lives and where each stand-in (and the gateway's backend) listens."""

    home: Path = Field(PROJECT_ROOT / ".tickcast", description="directory for the stack's data, logs and PID files")
    host: str = Field("127.0.0.1", description="loopback address the local services bind to")
    yahoo_port: int = Field(8765, ge=1, le=65535, description="TCP port of the Yahoo chart-API emulator")
    endpoint_port: int = Field(8772, ge=1, le=65535, description="TCP port of the AML online endpoint stand-in")
    gateway_port: int = Field(8770, ge=1, le=65535, description="TCP port of the APIM gateway stand-in")
    function_port: int = Field(8771, ge=1, le=65535, description="TCP port of the Function app (the gateway's backend)")
    mlflow_port: int = Field(5000, ge=1, le=65535, description="TCP port of the MLflow tracking server")

    def resolved_home(self) -> Path:
        return self.home.expanduser().resolve()


class MarketSettings(BaseModel):
    """The Yahoo chart-API emulator's market and clock (emulators/yahoo)."""

    mode: Literal["synthetic", "tape"] = Field("synthetic", description="synthetic market or tape replay")
    seed: int = Field(7, description="seed of the synthetic market (same seed, same prices)")
    phi: dict[str, float] = Field(
        default_factory=dict, description='AR(1) coefficient of 1-minute log returns per symbol, JSON e.g. {"SPY":0.3}'
    )
    default_phi: float = Field(
        0.4,
        gt=-1,
        lt=1,
        description="AR(1) coefficient for symbols not in phi (0.4: the oracle beats persistence ~8 %)",
    )
    tape_dir: Path = Field(
        PROJECT_ROOT.parent / "shared" / "data" / "tape", description="directory of SYMBOL.csv.gz tape files"
    )
    clock_start: str = Field(
        "session",
        description="emulator clock at start: 'session' (inside the latest regular session), 'now', "
        "or an ISO-8601 UTC time",
    )
    clock_speed: float = Field(1.0, ge=0, description="emulated seconds per real second (0 = frozen)")
    null_fraction: float = Field(
        0.002, ge=0, lt=1, description="share of minutes served as Yahoo-style nulls (synthetic mode)"
    )


class EndpointStandIn(BaseModel):
    """The AML endpoint stand-in's scoring and management keys and request timeout (variables its clients read too)."""

    endpoint_key: SecretStr | None = Field(
        SecretStr("local-endpoint-key"), description="key /score accepts (Authorization: Bearer <key>)"
    )
    endpoint_admin_key: SecretStr | None = Field(
        SecretStr("local-endpoint-admin-key"),
        description="key of the management routes (deployments, traffic); never the scoring key",
    )
    request_timeout_ms: int = Field(5000, ge=100, description="scoring request timeout (AML's default is 5000)")


class MlflowSource(BaseModel):
    """Where the endpoint stand-in fetches a model version from."""

    tracking_uri: str | None = Field(
        None, description="MLflow tracking URL; default http://<stack.host>:<stack.mlflow_port>"
    )
    model_name: str = Field("tickcast-lstm-attention", description="registered model name")


class AmlCoordinates(BaseModel):
    """The endpoint's Azure coordinates; where set, AML token requests must name the same ones."""

    subscription_id: str | None = Field(None, description="Azure subscription ID of the AML workspace")
    resource_group: str | None = Field(None, description="resource group of the AML workspace")
    workspace: str | None = Field(None, description="AML workspace name")
    endpoint_name: str = Field("tickcast", min_length=3, description="AML online endpoint name")


class GatewayStandIn(BaseModel):
    """The APIM gateway stand-in: the keys it accepts and the policy it enforces."""

    subscription_keys: list[SecretStr] = Field(
        default_factory=lambda: [SecretStr("local-subscription-key")],
        description='subscription keys the local gateway accepts, JSON e.g. ["key1","key2"]',
    )
    policy_file: Path = Field(
        PROJECT_ROOT / "cloud" / "apim" / "policy.xml", description="APIM policy shared by cloud/ and the local gateway"
    )


class StandInSettings(BaseSettings):
    """Everything the three stand-ins read. Build it with :func:`load_stand_in_settings`."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter=NESTED_DELIMITER,
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        validate_default=True,
    )

    symbols: list[str] = Field(
        default_factory=lambda: ["SPY", "IBM", "AIG", "BAC"],
        description='symbols of the synthetic market, as JSON, e.g. ["SPY","IBM"]',
    )
    stack: StackPlaces = Field(default_factory=StackPlaces)
    emulator: MarketSettings = Field(default_factory=MarketSettings)
    serving: EndpointStandIn = Field(default_factory=EndpointStandIn)
    mlflow: MlflowSource = Field(default_factory=MlflowSource)
    aml: AmlCoordinates = Field(default_factory=AmlCoordinates)
    gateway: GatewayStandIn = Field(default_factory=GatewayStandIn)

    @property
    def mlflow_tracking_uri(self) -> str:
        return (self.mlflow.tracking_uri or f"http://{self.stack.host}:{self.stack.mlflow_port}").rstrip("/")

    @property
    def function_url(self) -> str:
        """The gateway's default backend: the local Function app."""
        return f"http://{self.stack.host}:{self.stack.function_port}"

    def emulator_env(self) -> dict[str, str]:
        """The ``emulator`` group as ``TICKCAST_EMULATOR__*`` variables, for a process started elsewhere."""
        out: dict[str, str] = {}
        for name, value in self.emulator.model_dump(mode="json").items():
            out[env_name("emulator", name)] = json.dumps(value) if isinstance(value, dict) else str(value)
        return out


def _describe(loc: tuple[str | int, ...]) -> str:
    """The field description at ``loc``, used to say what to set."""
    model: Any = StandInSettings
    info = None
    for part in loc:
        fields = getattr(model, "model_fields", None)
        if not fields or part not in fields:
            return ""
        info = fields[part]
        model = info.annotation
    return (info.description or "") if info is not None else ""


def format_validation_error(err: ValidationError) -> str:
    """One line per wrong value: the variable, what it got, what is wrong and what to set it to."""
    lines = ["stand-in configuration is invalid:"]
    for e in err.errors():
        loc = tuple(p for p in e["loc"] if isinstance(p, str | int))
        msg = e["msg"].removeprefix("Value error, ")
        got = e.get("input")
        shown = f"={got!r}" if isinstance(got, str | int | float) else ""
        hint = _describe(loc)
        lines.append(f"  {env_name(*loc)}{shown}: {msg}." + (f" Set it to the {hint}." if hint else ""))
    return "\n".join(lines)


def load_stand_in_settings(**overrides: Any) -> StandInSettings:
    """Read the stand-ins' configuration, or raise :class:`StandInSettingsError` naming what to fix."""
    try:
        return StandInSettings(**overrides)
    except ValidationError as err:
        raise StandInSettingsError(format_validation_error(err)) from None


@lru_cache(maxsize=1)
def get_stand_in_settings() -> StandInSettings:
    """The process-wide stand-in settings (read once)."""
    return load_stand_in_settings()
