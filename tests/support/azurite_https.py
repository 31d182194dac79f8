"""Azurite's Blob service over HTTPS with ``--oauth basic``, on a free loopback port, for tests.

Azurite only accepts Bearer tokens over HTTPS, and with ``--oauth basic`` it decodes (never
verifies) the JWT and checks ``iat``/``nbf``/``exp``, an ``iss`` starting with an Entra STS URL
(``https://sts.windows.net/`` ...) and a storage ``aud`` (``https://storage.azure.com``,
``https://<account>.blob.core.windows.net`` ...). The TLS certificate comes from a throwaway
``trustme`` CA; point ``REQUESTS_CA_BUNDLE``/``SSL_CERT_FILE`` at :attr:`TlsFiles.ca` to trust it.

    tls = make_tls(tmp / "tls")
    with azurite_https(tmp / "azurite", tls) as az:
        az.account_url   # https://127.0.0.1:<port>/devstoreaccount1

Readiness is polled with a deadline (no fixed sleeps); stopping is SIGTERM then wait (SIGKILL
after a grace period). ``--debug`` writes Azurite's debug log, which records which authenticator
accepted each request (see :meth:`AzuriteHttps.wait_for_log`).
"""

from __future__ import annotations

import http.client
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import trustme

from tickcast.settings import AZURITE_ACCOUNT, load_settings
from tickcast_dev.stack.definition import node_binary
from tickcast_dev.stack.install import ensure_installed

HOST = "127.0.0.1"
POLL_INTERVAL_S = 0.05


class AzuriteStartError(RuntimeError):
    """Azurite exited or did not answer before the deadline; the message carries its output."""


@dataclass(frozen=True)
class TlsFiles:
    """PEM files: the CA to trust, and the server certificate (localhost, 127.0.0.1, ::1) and key."""

    ca: Path
    cert: Path
    key: Path


def make_tls(directory: Path) -> TlsFiles:
    """A fresh CA and a server certificate for loopback, written under ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA()
    server = ca.issue_cert("localhost", "127.0.0.1", "::1")
    files = TlsFiles(ca=directory / "ca.pem", cert=directory / "server.pem", key=directory / "server-key.pem")
    ca.cert_pem.write_to_path(str(files.ca))
    files.cert.write_bytes(b"".join(blob.bytes() for blob in server.cert_chain_pems))
    server.private_key_pem.write_to_path(str(files.key))
    return files


def azurite_main_js() -> Path:
    """Azurite's Blob entry point, installed (idempotently) by the stack's npm installer."""
    settings = load_settings(profile="local")
    ensure_installed({"npm"}, settings)
    node_dir = settings.stack.resolved_cache() / "node"
    main_js = node_dir.joinpath("node_modules", "azurite", "dist", "src", "blob", "main.js")
    if not main_js.is_file():
        raise AzuriteStartError(f"Azurite is not installed: {main_js} is missing")
    return main_js


def free_port(host: str = HOST) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@dataclass
class AzuriteHttps:
    """A running Azurite Blob service (HTTPS, OAuth basic)."""

    proc: subprocess.Popen[bytes]
    port: int
    workdir: Path
    tls: TlsFiles

    @property
    def url(self) -> str:
        return f"https://{HOST}:{self.port}"

    @property
    def account_url(self) -> str:
        return f"{self.url}/{AZURITE_ACCOUNT}"

    @property
    def output_path(self) -> Path:
        return self.workdir / "azurite.out"

    @property
    def debug_log_path(self) -> Path:
        return self.workdir / "azurite-debug.log"

    def output(self) -> str:
        return self.output_path.read_text(errors="replace") if self.output_path.exists() else ""

    def debug_log(self) -> str:
        return self.debug_log_path.read_text(errors="replace") if self.debug_log_path.exists() else ""

    def ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.tls.ca))

    def probe(self, timeout_s: float = 1.0) -> int | None:
        """The HTTP status of an anonymous list-containers call, or None if nothing answers."""
        conn = http.client.HTTPSConnection(HOST, self.port, timeout=timeout_s, context=self.ssl_context())
        try:
            conn.request("GET", f"/{AZURITE_ACCOUNT}?comp=list")
            return conn.getresponse().status
        except (OSError, http.client.HTTPException):
            return None
        finally:
            conn.close()

    def wait_for_log(self, needle: str, *, timeout_s: float = 10.0) -> str:
        """The debug log once it contains ``needle`` (it is flushed asynchronously)."""
        deadline = time.monotonic() + timeout_s
        while True:
            text = self.debug_log()
            if needle in text:
                return text
            if time.monotonic() >= deadline:
                raise AssertionError(f"{needle!r} not in Azurite's debug log after {timeout_s} s")
            try:
                self.proc.wait(timeout=POLL_INTERVAL_S)
            except subprocess.TimeoutExpired:
                continue
            text = self.debug_log()
            if needle in text:
                return text
            raise AssertionError(f"Azurite exited ({self.proc.returncode}) before logging {needle!r}")

    def stop(self, grace_s: float = 5.0) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=grace_s)


def start_azurite_https(workdir: Path, tls: TlsFiles, *, timeout_s: float = 30.0, attempts: int = 3) -> AzuriteHttps:
    """Start Azurite on a free port and return once it answers HTTPS (any HTTP status)."""
    main_js = azurite_main_js()
    node = node_binary()
    last_error = ""
    for attempt in range(attempts):
        run_dir = workdir / f"run{attempt}"
        data = run_dir / "data"
        data.mkdir(parents=True, exist_ok=True)
        port = free_port()
        argv = [
            str(node), str(main_js),
            "--blobHost", HOST, "--blobPort", str(port), "--location", str(data),
            "--loose", "--skipApiVersionCheck", "--disableTelemetry",
            "--oauth", "basic", "--cert", str(tls.cert), "--key", str(tls.key),
            "--debug", str(run_dir / "azurite-debug.log"),
        ]  # fmt: skip
        with (run_dir / "azurite.out").open("wb") as out:
            proc = subprocess.Popen(argv, cwd=run_dir, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        az = AzuriteHttps(proc=proc, port=port, workdir=run_dir, tls=tls)
        deadline = time.monotonic() + timeout_s
        exited = False
        while time.monotonic() < deadline:
            if az.probe() is not None:
                return az
            try:
                proc.wait(timeout=POLL_INTERVAL_S)
            except subprocess.TimeoutExpired:
                continue
            exited = True
            break
        az.stop()
        why = f"it exited with code {proc.returncode}" if exited else f"no answer within {timeout_s} s"
        last_error = f"{why}; output:\n{az.output()[-4000:]}"
        if "EADDRINUSE" not in az.output():  # only a lost port race is worth another try
            break
    raise AzuriteStartError(f"Azurite (HTTPS, OAuth) on {HOST} did not become ready: {last_error}")


@contextmanager
def azurite_https(workdir: Path, tls: TlsFiles, *, timeout_s: float = 30.0) -> Iterator[AzuriteHttps]:
    """Azurite over HTTPS with OAuth, stopped (terminate + wait) on exit."""
    az = start_azurite_https(workdir, tls, timeout_s=timeout_s)
    try:
        yield az
    finally:
        az.stop()
