"""The supervisor's state handling and error paths, driven with tiny real processes (tests/support/fake_service.py).

No stack services are involved: each test declares its own stack in TOML, exactly like local/stack.toml.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tickcast.settings import Settings, load_settings
from tickcast_dev.stack.definition import StackDefinitionError, parse_stack
from tickcast_dev.stack.procs import free_ports
from tickcast_dev.stack.supervisor import PortTakenError, ServiceStartError, StackError, Supervisor


def free_port() -> int:
    return free_ports(1)[0]


FAKE = "{repo}/tests/support/fake_service.py"


def service(name: str, port_key: str, *flags: str, after: tuple[str, ...] = (), extra: str = "") -> str:
    args = ", ".join(f'"{f}"' for f in flags)
    return f"""
[services.{name}]
summary = "fake {name}"
port = "{port_key}"
after = {list(after)!r}
command = ["{{venv_bin}}/python", "{FAKE}", "--port", "{{port}}"{", " + args if args else ""}]
ready = {{ http = "http://{{host}}:{{port}}/health", status = [200] }}
url = "http://{{host}}:{{port}}"
{extra}
""".replace("'", '"')


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return load_settings(
        _env_file=None,
        stack={
            "home": tmp_path / "home",
            "azurite_port": free_port(),
            "kafka_port": free_port(),
            "mlflow_port": free_port(),
            "start_timeout_s": 15,
            "stop_timeout_s": 3,
        },
    )


@pytest.fixture
def make_sup(settings: Settings) -> Iterator[object]:
    made: list[Supervisor] = []
    messages: list[str] = []

    def make(toml: str) -> Supervisor:
        sup = Supervisor(settings, report=messages.append, specs=parse_stack(toml))
        sup.messages = messages  # type: ignore[attr-defined]
        made.append(sup)
        return sup

    yield make
    for sup in made:
        sup.down()


def test_up_starts_in_dependency_order_and_is_idempotent(make_sup) -> None:  # type: ignore[no-untyped-def]
    sup = make_sup(service("a", "azurite_port") + service("b", "kafka_port", after=("a",)))
    statuses = sup.up()
    assert [s.name for s in statuses] == ["a", "b"]
    assert all(s.healthy and s.pid for s in statuses)
    first_pids = {s.name: s.pid for s in statuses}
    started = [m for m in sup.messages if "started" in m]
    assert started[0].startswith("a:") and started[1].startswith("b:")

    again = sup.up()
    assert {s.name: s.pid for s in again} == first_pids, "a second up must adopt, not restart"
    assert any("already running" in m for m in sup.messages)


def test_each_service_has_its_own_log_pid_file_and_data_dir(make_sup, settings: Settings) -> None:  # type: ignore[no-untyped-def]
    sup = make_sup(service("a", "azurite_port"))
    sup.up()
    home = settings.stack.resolved_home()
    record = json.loads((home / "run" / "a.json").read_text())
    assert psutil.Process(record["pid"]).is_running()
    assert record["port"] == settings.stack.azurite_port
    assert "listening on" in (home / "logs" / "a.log").read_text()
    assert (home / "data" / "a").is_dir()


def test_port_taken_names_port_and_process(make_sup, settings: Settings) -> None:  # type: ignore[no-untyped-def]
    sup = make_sup(service("a", "azurite_port"))
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", settings.stack.azurite_port))
        blocker.listen()
        with pytest.raises(PortTakenError) as err:
            sup.up()
    msg = str(err.value)
    assert f"port {settings.stack.azurite_port}" in msg
    assert "TICKCAST_STACK__AZURITE_PORT" in msg
    assert f"pid {psutil.Process().pid}" in msg  # the owner is this very test process


def test_crash_on_start_reports_log_tail(make_sup) -> None:  # type: ignore[no-untyped-def]
    sup = make_sup(service("a", "azurite_port", "--crash"))
    with pytest.raises(ServiceStartError) as err:
        sup.up()
    assert err.value.service == "a"
    assert "exited" in str(err.value)
    assert "cannot open the database (simulated crash)" in err.value.log_tail
    assert not sup.pid_file("a").exists()


def test_unhealthy_service_times_out_and_is_stopped(make_sup, settings: Settings) -> None:  # type: ignore[no-untyped-def]
    toml = service("a", "azurite_port").replace("/health", "/never-200")
    sup = make_sup(toml)
    sup.settings = settings.model_copy(update={"stack": settings.stack.model_copy(update={"start_timeout_s": 2})})
    with pytest.raises(ServiceStartError) as err:
        sup.up()
    assert "not healthy within" in str(err.value) and "HTTP 404" in str(err.value)
    assert sup.status()[0].state == "stopped"


def test_stale_pid_file_is_detected_and_replaced(make_sup, settings: Settings) -> None:  # type: ignore[no-untyped-def]
    sup = make_sup(service("a", "azurite_port"))
    dead = psutil.Popen(["true"])
    dead.wait()
    pid_file = settings.stack.resolved_home() / "run" / "a.json"
    pid_file.parent.mkdir(parents=True)
    pid_file.write_text(
        json.dumps(
            {
                "service": "a",
                "pid": dead.pid,
                "create_time": 1.0,
                "port": 1,
                "command": [],
                "started_at": 1.0,
            }
        )
    )
    assert sup.status()[0].state == "stale"
    statuses = sup.up()
    assert any("stale PID file" in m for m in sup.messages)
    assert statuses[0].healthy and statuses[0].pid != dead.pid


def test_recycled_pid_is_not_mistaken_for_the_service(make_sup, settings: Settings) -> None:  # type: ignore[no-untyped-def]
    """A PID file naming a live process that started at another time (PID reuse) is stale, and is not killed."""
    sup = make_sup(service("a", "azurite_port"))
    bystander = psutil.Popen(["sleep", "30"])
    try:
        pid_file = settings.stack.resolved_home() / "run" / "a.json"
        pid_file.parent.mkdir(parents=True)
        pid_file.write_text(
            json.dumps(
                {
                    "service": "a",
                    "pid": bystander.pid,
                    "create_time": 12345.0,
                    "port": 1,
                    "command": [],
                    "started_at": 1.0,
                }
            )
        )
        assert sup.down() == []
        assert bystander.is_running(), "down must never kill a process it did not start"
    finally:
        bystander.kill()
        bystander.wait()


def test_down_stops_children_and_detached_grandchildren(make_sup, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    pid_out = tmp_path / "children.txt"
    sup = make_sup(service("a", "azurite_port", "--spawn-child", "--detached-child", "--pid-out", str(pid_out)))
    status = sup.up()[0]
    children = [int(p) for p in pid_out.read_text().split()]
    assert len(children) == 2 and all(psutil.pid_exists(p) for p in children)
    assert sup.down() == ["a"]
    for pid in [status.pid, *children]:
        assert not _alive(pid), f"pid {pid} survived down"
    assert not sup.pid_file("a").exists()


def test_down_kills_a_process_that_ignores_sigterm(make_sup) -> None:  # type: ignore[no-untyped-def]
    sup = make_sup(service("a", "azurite_port", "--ignore-term", extra="stop_grace_s = 0.5"))
    pid = sup.up()[0].pid
    assert sup.down() == ["a"]
    assert not _alive(pid)
    assert any("killed" in m for m in sup.messages)


def test_down_leaves_unrelated_processes_alone(make_sup) -> None:  # type: ignore[no-untyped-def]
    bystander = psutil.Popen(["sleep", "30"])
    try:
        sup = make_sup(service("a", "azurite_port"))
        sup.up()
        sup.down()
        assert bystander.is_running()
    finally:
        bystander.kill()
        bystander.wait()


def test_unknown_service_is_a_clear_error(make_sup) -> None:  # type: ignore[no-untyped-def]
    sup = make_sup(service("a", "azurite_port"))
    with pytest.raises(StackError, match="unknown service"):
        sup.up(["nope"])


def test_up_only_starts_requested_service_and_its_dependencies(make_sup) -> None:  # type: ignore[no-untyped-def]
    sup = make_sup(
        service("a", "azurite_port") + service("b", "kafka_port", after=("a",)) + service("c", "mlflow_port")
    )
    sup.up(["b"])
    states = {s.name: s.state for s in sup.status()}
    assert states == {"a": "running", "b": "running", "c": "stopped"}


def test_reset_wipes_data_but_keeps_installs(make_sup, settings: Settings) -> None:  # type: ignore[no-untyped-def]
    sup = make_sup(service("a", "azurite_port"))
    sup.up()
    cache = settings.stack.resolved_cache()
    removed = sup.reset()
    home = settings.stack.resolved_home()
    assert home / "data" in removed and not (home / "data").exists()
    assert sup.status()[0].state == "stopped"
    assert not str(cache).startswith(str(home / "data"))


def _alive(pid: int | None) -> bool:
    if pid is None:
        return False
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_a_stop_signal_goes_to_the_main_process_only_which_stops_its_own_children(  # type: ignore[no-untyped-def]
    make_sup, tmp_path: Path
) -> None:
    """PostgreSQL's way: SIGINT to the postmaster (fast shutdown), never a signal to its backends directly."""
    log, pids = tmp_path / "signals.txt", tmp_path / "children.txt"
    flags = ("--spawn-child", "--pid-out", str(pids), "--signal-log", str(log), "--linger", "0.3")
    sup = make_sup(service("db", "azurite_port", *flags, extra='stop_signal = "SIGINT"'))
    main = sup.up()[0].pid
    child = int(pids.read_text().split()[0])
    assert sup.down() == ["db"]
    assert [line.split()[0] for line in log.read_text().splitlines()] == ["SIGINT"]
    assert not _alive(main) and not _alive(child)
    assert not any("killed" in m for m in sup.messages), "it stopped itself within its grace period"


def test_stop_last_waits_until_its_clients_have_exited(make_sup, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    db_log, app_log = tmp_path / "db.txt", tmp_path / "app.txt"
    toml = service("db", "azurite_port", "--signal-log", str(db_log), extra="stop_last = true") + service(
        "app", "kafka_port", "--signal-log", str(app_log), "--linger", "0.5", after=("db",)
    )
    sup = make_sup(toml)
    sup.up()
    assert set(sup.down()) == {"db", "app"}
    app_signalled = float(app_log.read_text().split()[1])
    db_signalled = float(db_log.read_text().split()[1])
    assert db_signalled >= app_signalled + 0.5, "the database is signalled only after its client has exited"


def test_an_unknown_stop_signal_is_a_definition_error() -> None:
    with pytest.raises(StackDefinitionError, match="not a signal name"):
        parse_stack(service("a", "azurite_port", extra='stop_signal = "SIGNOPE"'))
