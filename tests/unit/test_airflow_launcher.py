"""The Airflow launcher's decisions that need no Airflow running: when to migrate, what to start and where."""

from __future__ import annotations

import json
import time
from importlib.metadata import version
from pathlib import Path

import pytest

from tickcast.settings import load_settings
from tickcast_dev.stack.airflow_launcher import AFTER_API, STAMP, _stamp_matches, components


def stamp(home: Path, revision: str, airflow: str | None = None) -> None:
    (home / STAMP).write_text(json.dumps({"airflow": airflow or version("apache-airflow"), "revision": revision}))
    (home / "airflow.cfg").write_text("[core]\n")


def test_a_warm_start_skips_the_migration_only_when_the_stamp_matches_the_database(tmp_path: Path) -> None:
    assert not _stamp_matches(tmp_path, "abc"), "no stamp: migrate"
    stamp(tmp_path, "abc")
    assert _stamp_matches(tmp_path, "abc")
    assert not _stamp_matches(tmp_path, None), "a fresh database (no schema) always migrates"
    assert not _stamp_matches(tmp_path, "older"), "a reset or restored database migrates"
    stamp(tmp_path, "abc", airflow="0.0.1")
    assert not _stamp_matches(tmp_path, "abc"), "a new Airflow version migrates"
    stamp(tmp_path, "abc")
    (tmp_path / "airflow.cfg").unlink()
    assert not _stamp_matches(tmp_path, "abc"), "no airflow.cfg yet: db migrate writes it before the components"


def test_components_log_server_on_loopback_and_no_triggerer_unless_asked() -> None:
    s = load_settings(_env_file=None, stack={"airflow_log_server_port": 41234, "airflow_port": 41235})
    started = components(s)
    assert set(started) == {"api-server", "dag-processor", "scheduler", "log-server"}
    assert set(AFTER_API) == {"log-server"}, "only the log server waits in the launcher"
    for name in ("api-server", "dag-processor"):
        assert started[name][-3:] == ["--run", "--", name], "every component starts GC-tuned through the launcher"
    log_server = " ".join(started["log-server"])
    assert "host='127.0.0.1'" in log_server and "port=41234" in log_server
    scheduler = started["scheduler"]
    assert scheduler[-2:] == ["scheduler", "--skip-serve-logs"] and "127.0.0.1:41235" in scheduler
    with_triggerer = components(load_settings(_env_file=None, airflow={"triggerer": True}))
    assert with_triggerer["triggerer"][-2:] == ["triggerer", "--skip-serve-logs"]


def test_gc_tuning_raises_the_start_up_threshold_and_settles_back(monkeypatch: pytest.MonkeyPatch) -> None:
    import gc

    from tickcast_dev.stack import airflow_launcher

    monkeypatch.setattr(airflow_launcher, "GC_SETTLE_S", 0.05)
    default = gc.get_threshold()
    try:
        airflow_launcher.tune_gc()
        assert gc.get_threshold() == airflow_launcher.GC_START_THRESHOLD
        deadline = time.monotonic() + 5
        while gc.get_threshold() != default and time.monotonic() < deadline:
            time.sleep(0.01)
        assert gc.get_threshold() == default
    finally:
        gc.set_threshold(*default)
