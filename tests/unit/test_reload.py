"""`tickcast up --reload`: an edited service answers with the new code within seconds; a broken edit is survived.

A tiny real HTTP service runs from a temporary folder (its answer comes from a module next to it) under
the real supervisor, with the watcher polling in a thread; the test edits that module like a developer
would. The last test checks that the real services' ``watch`` lists in local/stack.toml cover every
project file they import, so an edit to any of them restarts the right process.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tickcast.settings import PROJECT_ROOT, Settings, load_settings
from tickcast_dev.stack.definition import load_stack, parse_stack
from tickcast_dev.stack.procs import free_ports
from tickcast_dev.stack.reload import Reloader
from tickcast_dev.stack.supervisor import Supervisor

SERVER = '''\
"""Answers GET /health and GET /version (VERSION from version.py, read once at start)."""
import http.server, sys
sys.path.insert(0, sys.argv[1])
from version import VERSION

class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = VERSION.encode()
        self.send_response(200)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[2])), Handler).serve_forever()
'''


def stack_toml(app: Path) -> str:
    return textwrap.dedent(f"""
        [services.api]
        summary = "versioned test service"
        port = "function_port"
        after = ["steady"]
        command = ["{{venv_bin}}/python", "{app / "server.py"}", "{app}", "{{port}}"]
        ready = {{ http = "http://{{host}}:{{port}}/health", status = [200] }}
        url = "http://{{host}}:{{port}}/version"
        stop_grace_s = 2
        watch = ["{app}"]

        [services.steady]
        summary = "a dependency without watch: never restarted (it did not change)"
        port = "gateway_port"
        command = ["{{venv_bin}}/python", "{app / "server.py"}", "{app}", "{{port}}"]
        ready = {{ http = "http://{{host}}:{{port}}/health", status = [200] }}
        url = "http://{{host}}:{{port}}/version"
        stop_grace_s = 2
        """)


def eventually(what: str, check: Callable[[], bool], timeout_s: float = 30.0) -> float:
    """Poll ``check`` until it holds; returns the seconds it took, fails with ``what`` at the deadline."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if check():
            return time.monotonic() - started
        time.sleep(0.05)
    raise AssertionError(f"{what}: not within {timeout_s:.0f} s")


class Running:
    def __init__(self, sup: Supervisor, app: Path, messages: list[str]) -> None:
        self.sup, self.app, self.messages = sup, app, messages

    def answer(self, name: str = "api") -> str | None:
        try:
            return httpx.get(self.sup.services[name].url, timeout=1.0).text
        except httpx.HTTPError:
            return None

    def pid(self, name: str) -> int | None:
        record = self.sup.pid_file(name).read()
        return record.pid if record else None

    def edit(self, text: str) -> None:
        (self.app / "version.py").write_text(text)


@pytest.fixture
def running(tmp_path: Path) -> Iterator[Running]:
    app = tmp_path / "app"
    app.mkdir()
    (app / "server.py").write_text(SERVER)
    (app / "version.py").write_text('VERSION = "v1"\n')
    function_port, gateway_port = free_ports(2)
    settings: Settings = load_settings(
        _env_file=None,
        stack={
            "home": tmp_path / "home",
            "function_port": function_port,
            "gateway_port": gateway_port,
            "start_timeout_s": 15,
            "stop_timeout_s": 3,
        },
    )
    messages: list[str] = []
    sup = Supervisor(settings, report=messages.append, specs=parse_stack(stack_toml(app)))
    stop = threading.Event()
    try:
        sup.up()
        reloader = Reloader(sup)
        watcher = threading.Thread(target=reloader.run, kwargs={"stop": stop, "poll_s": 0.1}, daemon=True)
        watcher.start()
        yield Running(sup, app, messages)
        assert watcher.is_alive(), "the watcher died"
    finally:
        stop.set()
        sup.down()


def test_an_edit_is_served_within_seconds_and_only_its_service_restarts(running: Running) -> None:
    assert running.answer() == "v1"
    steady_pid, api_pid = running.pid("steady"), running.pid("api")
    running.edit('VERSION = "v2, edited"\n')
    took = eventually("the edited code answers", lambda: running.answer() == "v2, edited")
    assert took < 15, f"{took:.1f} s"
    assert running.pid("api") != api_pid
    assert running.pid("steady") == steady_pid, "the unchanged dependency was restarted too"
    assert any("version.py changed; restarting" in m for m in running.messages), running.messages


def test_a_broken_edit_is_reported_and_the_next_save_recovers(running: Running) -> None:
    running.edit("VERSION = (\n")  # a syntax error: the restarted process dies at import
    eventually("the failed restart is reported", lambda: any("restart failed" in m for m in running.messages))
    failure = next(m for m in running.messages if "restart failed" in m)
    assert "SyntaxError" in failure, failure  # the service's log tail says why
    running.edit('VERSION = "v3, fixed"\n')
    eventually("the fixed code answers", lambda: running.answer() == "v3, fixed")


@pytest.mark.slow
@pytest.mark.parametrize(
    ("service", "module"),
    [
        ("function", "tickcast.api.app"),
        ("endpoint", "emulators.aml_endpoint.__main__"),
        ("gateway", "emulators.apim.__main__"),
    ],
)
def test_the_watch_lists_cover_every_project_file_a_service_imports(service: str, module: str) -> None:
    probe = (
        "import importlib, sys, warnings; warnings.simplefilter('ignore'); sys.argv = ['probe', '--help']\n"
        f"try: importlib.import_module({module!r})\n"
        "except SystemExit: pass\n"
        "print('\\n'.join(sorted(f for m in list(sys.modules.values()) if (f := getattr(m, '__file__', None)))))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True)
    roots = (PROJECT_ROOT / "src", PROJECT_ROOT / "emulators")
    imported = {Path(f).resolve() for f in done.stdout.split()}
    mine = {f for f in imported if any(f.is_relative_to(r) for r in roots) and f.parent not in roots}
    # the top-level package markers (src/tickcast/__init__.py, emulators/__init__.py) hold docstrings only
    mine = {f for f in mine if not (f.name == "__init__.py" and f.parent.parent in roots)}
    watched = load_stack()[service].watched_paths()
    unwatched = sorted(str(f.relative_to(PROJECT_ROOT)) for f in mine if not any(f.is_relative_to(w) for w in watched))
    assert mine, "the probe found no project file at all"
    assert not unwatched, f"{service} imports files its watch list in local/stack.toml misses: {unwatched}"
