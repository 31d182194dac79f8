"""No code path of profile cloud reads an account key, a SAS or a connection string.

Two checks:

* **static** -- every Python file of ``src/``, ``dags/`` and ``cloud/function/`` is parsed and searched for the
  ways a key reaches an Azure client: ``*.from_connection_string(...)``, ``generate_*_sas(...)``,
  ``AzureNamedKeyCredential`` / ``AzureSasCredential`` / ``AzureKeyCredential``, ``blob_connection_string()``,
  keyword arguments ``account_key=`` / ``sas_token=`` / ``conn_str=`` / ``connection_string=`` /
  ``sasl_plain_password=`` (Event Hubs' Kafka endpoint takes a connection string there), ``credential=`` given a
  string or a name that looks like a key, and string literals holding ``AccountKey=``,
  ``SharedAccessSignature=``, ``SharedAccessKey=`` or ``sig=``. Each hit must be listed in :data:`ALLOWED`
  with its reason, and be guarded to profile local: inside ``if <settings>.profile == "local":``, or after an
  ``if <settings>.profile != "local": raise`` in the same function -- or live in the local stack's own
  modules (``tickcast_dev.stack``), which profile cloud never runs. A new hit anywhere else fails the test.
* **dynamic** -- with ``TICKCAST_PROFILE=cloud`` and fake endpoints, every client the app builds (Blob service,
  container, lake, the Function app's endpoint client, the AML deployer's MLClient, the ARM clients of
  ``deploy-cloud``) is built while ``from_connection_string``, the SAS generators and the key credentials
  are replaced by functions that record and raise; none is called, and each client holds the shared
  token credential of :func:`tickcast.azure.credential`.
"""

from __future__ import annotations

import ast
import asyncio
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from azure.core.credentials import AccessToken, TokenCredential

from tickcast import azure as factories
from tickcast.settings import PROJECT_ROOT, Settings, SettingsError, load_settings

SCANNED = [PROJECT_ROOT / "src", PROJECT_ROOT / "dags", PROJECT_ROOT / "cloud" / "function"]
LOCAL_STACK = "src/tickcast_dev/stack/"  # the local stack's supervisor and docker-compose renderer: never profile cloud

# (file, function): why it may touch a key. Everything here is Azurite's PUBLISHED development account.
ALLOWED: dict[tuple[str, str], str] = {
    ("src/tickcast/azure.py", "blob_service"): (
        "the `if s.profile == 'local'` branch: Blob through Azurite's development connection string"
    ),
    ("src/tickcast/settings/__init__.py", "Settings.blob_connection_string"): (
        "builds Azurite's connection string; raises SettingsError unless profile local"
    ),
    ("src/tickcast_dev/stack/definition.py", "process_context"): (
        "placeholders of the local stack's processes (Azurite for MLflow's artifacts); calls the guarded "
        "Settings.blob_connection_string, so it raises in profile cloud (checked below)"
    ),
    ("src/tickcast_dev/stack/definition.py", "container_context"): (
        "placeholders of docker-compose.local.yml: Azurite's development account inside the compose network"
    ),
}

KEY_CALLS = re.compile(
    r"^(from_connection_string|generate_\w*sas|AzureNamedKeyCredential|AzureSasCredential|AzureKeyCredential"
    r"|StorageSharedKeyCredential|blob_connection_string)$"
)
KEY_KEYWORDS = {"account_key", "sas_token", "conn_str", "connection_string", "sasl_plain_password"}
KEY_TEXT = re.compile(r"AccountKey=|SharedAccessSignature=|SharedAccessKey=|[?&]sig=", re.IGNORECASE)
KEYISH_NAME = re.compile(r"key|sas|secret|conn|password", re.IGNORECASE)


@dataclass(frozen=True)
class Hit:
    file: str
    line: int
    function: str  # qualified name of the enclosing function ("<module>" at top level)
    what: str
    guarded: bool

    def __str__(self) -> str:
        return f"{self.file}:{self.line} in {self.function}: {self.what}"


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    if isinstance(node, ast.Call):
        return _dotted(node.func) + "()"
    return ""


def _profile_test(test: ast.AST) -> str | None:
    """``x.profile == "local"`` -> "local"; ``x.profile != "local"`` -> "not-local"; else None."""
    if not (isinstance(test, ast.Compare) and len(test.ops) == 1 and len(test.comparators) == 1):
        return None
    left, right = test.left, test.comparators[0]
    sides = [(left, right), (right, left)]
    for name, value in sides:
        if _dotted(name).endswith("profile") and isinstance(value, ast.Constant) and value.value == "local":
            if isinstance(test.ops[0], ast.Eq):
                return "local"
            if isinstance(test.ops[0], ast.NotEq):
                return "not-local"
    return None


def _exits(body: list[ast.stmt]) -> bool:
    return bool(body) and isinstance(body[-1], ast.Raise | ast.Return)


class _Scanner(ast.NodeVisitor):
    def __init__(self, file: str) -> None:
        self.file = file
        self.hits: list[Hit] = []
        self.scope: list[str] = []
        self.guards: list[bool] = []  # per enclosing statement block: is the current point local-only?

    # -- scopes -----------------------------------------------------------------------------------------------
    def _scoped(self, node: ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        self.scope.append(node.name)
        saved = self.guards
        self.guards = []
        self._block(node.body)
        self.guards = saved
        self.scope.pop()

    visit_ClassDef = _scoped
    visit_FunctionDef = _scoped
    visit_AsyncFunctionDef = _scoped

    def _block(self, body: list[ast.stmt]) -> None:
        """Statements in order; after ``if <profile> != "local": raise`` the rest of the block is local-only."""
        early_exit = False
        for stmt in body:
            self.guards.append(early_exit)
            self.visit(stmt)
            self.guards.pop()
            if isinstance(stmt, ast.If) and _profile_test(stmt.test) == "not-local" and _exits(stmt.body):
                early_exit = True

    def visit_If(self, node: ast.If) -> None:
        self.visit(node.test)
        kind = _profile_test(node.test)
        for branch, local in ((node.body, kind == "local"), (node.orelse, kind == "not-local")):
            self.guards.append(local)
            self._block(branch)
            self.guards.pop()

    def visit_Module(self, node: ast.Module) -> None:
        self._block(node.body)

    # -- hits -------------------------------------------------------------------------------------------------
    def _hit(self, node: ast.AST, what: str) -> None:
        function = ".".join(self.scope) or "<module>"
        self.hits.append(Hit(self.file, getattr(node, "lineno", 0), function, what, any(self.guards)))

    def visit_Call(self, node: ast.Call) -> None:
        name = node.func.attr if isinstance(node.func, ast.Attribute) else _dotted(node.func)
        if KEY_CALLS.match(name):
            self._hit(node, f"call {_dotted(node.func)}()")
        for kw in node.keywords:
            if kw.arg in KEY_KEYWORDS:
                self._hit(node, f"keyword {kw.arg}=")
            elif kw.arg == "credential":
                value = kw.value
                text = _dotted(value)
                if isinstance(value, ast.Constant | ast.JoinedStr) or (
                    text and not text.endswith("()") and KEYISH_NAME.search(text)
                ):
                    self._hit(node, f"credential={ast.unparse(value)}")
        self.generic_visit(node)

    def visit_Constant(self, node: ast.Constant) -> None:
        if isinstance(node.value, str) and KEY_TEXT.search(node.value):
            self._hit(node, f"string {node.value[:40]!r}")


def scan_source(source: str, file: str = "<snippet>") -> list[Hit]:
    scanner = _Scanner(file)
    scanner.visit(ast.parse(source))
    return scanner.hits


def python_files() -> Iterator[Path]:
    for root in SCANNED:
        for path in sorted(root.rglob("*.py")):
            if "__pycache__" not in path.parts:
                yield path


def scan_tree() -> list[Hit]:
    hits: list[Hit] = []
    for path in python_files():
        hits.extend(scan_source(path.read_text(encoding="utf-8"), path.relative_to(PROJECT_ROOT).as_posix()))
    return hits


# --- static -------------------------------------------------------------------------------------------------


def test_every_key_or_connection_string_path_is_listed_and_local_only() -> None:
    hits = scan_tree()
    assert len(list(python_files())) > 50, "the scan must see the source tree"
    unlisted = [str(h) for h in hits if (h.file, h.function) not in ALLOWED]
    assert not unlisted, (
        "new code that reads an account key, SAS or connection string (profile cloud must use "
        "tickcast.azure.credential(); a local-only path needs a profile guard and an entry in ALLOWED):\n  "
        + "\n  ".join(unlisted)
    )
    unguarded = [str(h) for h in hits if not h.guarded and not h.file.startswith(LOCAL_STACK)]
    assert not unguarded, "not guarded to profile local:\n  " + "\n  ".join(unguarded)
    stale = sorted(set(ALLOWED) - {(h.file, h.function) for h in hits})
    assert not stale, f"ALLOWED lists paths that no longer touch a key; remove them: {stale}"


def test_the_function_app_files_hold_no_secret() -> None:
    for path in sorted((PROJECT_ROOT / "cloud" / "function").iterdir()):
        if path.is_file() and path.suffix in {".json", ".txt", ".py", ".md"}:
            assert not KEY_TEXT.search(path.read_text(encoding="utf-8")), path


GUARDED_EARLY = """
def conn(settings):
    if settings.profile != "local":
        raise SettingsError("no")
    return "AccountKey=abc"
"""


@pytest.mark.parametrize(
    ("source", "found", "guarded"),
    [
        ("c = BlobServiceClient.from_connection_string(os.environ['CONN'])", "call", False),
        ("if s.profile == 'local':\n    c = BlobServiceClient.from_connection_string(x)", "call", True),
        ("if s.profile != 'local':\n    pass\nelse:\n    c = ContainerClient.from_connection_string(x)", "call", True),
        ("if s.profile == 'cloud':\n    c = BlobClient.from_connection_string(x)", "call", False),
        (GUARDED_EARLY, "string", True),
        ("c = BlobServiceClient(url, credential=settings.storage.account_key)", "credential=", False),
        ("c = BlobServiceClient(url, credential='abc==')", "credential=", False),
        ("t = generate_blob_sas(account, container, blob, account_key=k)", "call", False),
        ("u = f'{url}?sv=2024&sig=' + sig", "string", False),
        ("p = KafkaProducer(bootstrap_servers=b, sasl_plain_password=conn)", "keyword", False),
        ("k = AzureNamedKeyCredential(name, key)", "call", False),
        ("s = settings.blob_connection_string()", "call", False),
    ],
)
def test_the_scanner_finds_each_way_a_key_can_come_in(source: str, found: str, guarded: bool) -> None:
    """Adding any of these to src/ fails the test above (unless it is guarded AND listed)."""
    hits = scan_source(source)
    assert hits, f"not detected: {source}"
    assert any(h.what.startswith(found) for h in hits), hits
    assert all(h.guarded is guarded for h in hits), hits


@pytest.mark.parametrize(
    "source",
    [
        "c = BlobServiceClient(account_url=url, credential=credential(settings))",
        "c = BlobServiceClient(url, credential=self.credential)",
        "c = MLClient(credential(s), subscription_id=sub)",
        "secret = self.storage.connection_string",
    ],
)
def test_the_token_credential_path_is_not_a_hit(source: str) -> None:
    assert scan_source(source) == []


# --- dynamic ------------------------------------------------------------------------------------------------

CLOUD: dict[str, Any] = {
    "profile": "cloud",
    "symbols": ["SPY"],
    "storage": {"account_url": "https://tickcastdevlake.blob.core.windows.net"},
    "kafka": {"bootstrap_servers": "tickcast-dev.servicebus.windows.net:9093"},
    "mlflow": {"tracking_uri": "https://mlflow.tickcast-dev.example"},
    "serving": {"endpoint_url": "https://tickcast-dev.westeurope.inference.ml.azure.com/score"},
    "gateway": {"url": "https://tickcast-dev-apim.azure-api.net"},
    "aml": {"subscription_id": "0000-sub", "resource_group": "tickcast-dev", "workspace": "tickcast-dev-mlw"},
}


class RecordingCredential:
    """A TokenCredential (azure-core's protocol) that records the scopes asked for; never a network call."""

    def __init__(self) -> None:
        self.scopes: list[tuple[str, ...]] = []

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        self.scopes.append(scopes)
        return AccessToken("token-from-the-managed-identity", 2**31)


@pytest.fixture
def forbidden(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every key/SAS/connection-string entry point replaced by one that records and raises."""
    import azure.core.credentials as core_credentials
    import azure.storage.blob as blob

    calls: list[str] = []

    def refuse(name: str) -> Any:
        def raising(*args: Any, **kwargs: Any) -> Any:
            calls.append(name)
            raise AssertionError(f"profile cloud called {name}")

        return raising

    for cls in (blob.BlobServiceClient, blob.ContainerClient, blob.BlobClient):
        monkeypatch.setattr(cls, "from_connection_string", refuse(f"{cls.__name__}.from_connection_string"))
    for name in ("generate_account_sas", "generate_container_sas", "generate_blob_sas"):
        monkeypatch.setattr(blob, name, refuse(name))
    for name in ("AzureNamedKeyCredential", "AzureSasCredential", "AzureKeyCredential"):
        monkeypatch.setattr(core_credentials, name, refuse(name))
    monkeypatch.setattr(Settings, "blob_connection_string", refuse("Settings.blob_connection_string"))
    return calls


@pytest.fixture
def cloud(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Settings]:
    monkeypatch.chdir(tmp_path)
    for name in list(os.environ):
        if name.upper().startswith(("TICKCAST_", "AZURE_", "IDENTITY_", "MSI_", "IMDS_")):
            monkeypatch.delenv(name)
    factories._credential.cache_clear()
    yield load_settings(_env_file=None, **CLOUD)
    factories._credential.cache_clear()


def _is_the_shared_credential(credential: Any, settings: Settings) -> bool:
    return isinstance(credential, TokenCredential) and credential is factories.credential(settings)


def test_cloud_builds_every_client_with_the_token_credential(cloud: Settings, forbidden: list[str]) -> None:
    from azure.identity import DefaultAzureCredential

    from tickcast.cloud_deploy import AzureControlPlane
    from tickcast.lake.store import Lake
    from tickcast.release.aml import AzureMLDeployer
    from tickcast.release.targets import deployer_for

    shared = factories.credential(cloud)
    assert isinstance(shared, DefaultAzureCredential)

    service = factories.blob_service(cloud)
    assert service.url.startswith("https://tickcastdevlake.blob.core.windows.net")
    lake = factories.lake_container(cloud)
    clients = [service, factories.container("mlflow", cloud), lake, Lake(lake).container]
    for client in clients:
        assert _is_the_shared_credential(client.credential, cloud), client
        assert getattr(client.credential, "account_key", None) is None and "sig=" not in client.url

    deployer = deployer_for(cloud)
    assert isinstance(deployer, AzureMLDeployer)
    ml_client: Any = deployer.ml_client  # built offline, like on the AML compute
    assert _is_the_shared_credential(ml_client._credential, cloud)

    plane = AzureControlPlane(shared, "0000-sub")
    for sdk_client in (plane._resources, plane._deployments):
        assert _is_the_shared_credential(sdk_client._config.credential, cloud)

    assert forbidden == []


def test_the_function_app_calls_the_endpoint_with_an_aml_token(
    cloud: Settings, forbidden: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The managed identity's token goes to Azure Resource Manager only; the endpoint gets the AML token."""
    from tickcast.api.app import create_app

    recording = RecordingCredential()
    monkeypatch.setattr(factories, "credential", lambda settings=None: recording)
    arm: list[httpx.Request] = []

    def token_api(request: httpx.Request) -> httpx.Response:
        arm.append(request)
        return httpx.Response(200, json={"accessToken": "aml-token", "expiryTimeUtc": 2**31, "tokenType": "Bearer"})

    # what cloud/function/function_app.py builds, with the same settings (the ARM call replaced)
    app = create_app(cloud, token_transport=httpx.MockTransport(token_api))
    assert app.state.endpoint.problem is None
    header = asyncio.run(app.state.endpoint.auth.aheader("score"))
    assert header == "Bearer aml-token"
    assert recording.scopes == [("https://management.azure.com/.default",)]
    (call,) = arm
    assert call.headers["authorization"] == "Bearer token-from-the-managed-identity"
    assert str(call.url).startswith("https://management.azure.com/subscriptions/0000-sub/resourceGroups/tickcast-dev/")
    assert forbidden == []


def test_the_local_stack_paths_refuse_profile_cloud(cloud: Settings) -> None:
    """The allowed local-stack path calls the guarded builder, which refuses profile cloud."""
    from tickcast_dev.stack.definition import process_context

    with pytest.raises(SettingsError, match="refused in profile cloud"):
        process_context(cloud)
    with pytest.raises(SettingsError, match="refused in profile cloud"):
        cloud.blob_connection_string()
