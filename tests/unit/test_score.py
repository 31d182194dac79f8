"""score.py in-process: init() finds the (nested) model, run() answers the contract, errors say what to fix.

The helpers here (a handmade ONNX model + a hand-written preprocessing.json, request bars) are shared by
tests/unit/test_aml_endpoint.py and tests/integration/test_score_contract.py.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pandas as pd
import pytest

from tests.support.models import (
    NEEDED,
    SCORE_PY,
    SYMBOLS,
    load_score,
    make_bars,
    request_body,
    write_model,
)
from tickcast.model.predictor import MODEL_FILE, PREPROCESSING_FILE, Predictor
from tickcast.scoring import contract as schema
from tickcast.settings import ModelSettings

WINDOW = ModelSettings().window


@pytest.fixture
def score(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    module = load_score()
    monkeypatch.setenv("AZUREML_MODEL_DIR", str(write_model(tmp_path / "azureml-models", version="7")))
    monkeypatch.delenv("TICKCAST_MODEL_VERSION", raising=False)
    module.init()
    return module


def error_of(result: Any) -> tuple[int, dict[str, Any]]:
    assert not isinstance(result, dict), result
    return int(result.status_code), json.loads(result.get_data())


def test_run_answers_the_contract(score: ModuleType, tmp_path: Path) -> None:
    bars = make_bars()
    out = score.run(request_body(bars=bars))
    assert set(out) == {
        "symbol", "as_of", "horizon_minutes", "predicted_close", "model_version", "model_kind", "interval"
    }  # fmt: skip
    assert out["symbol"] == "SPY" and out["horizon_minutes"] == 1 and out["model_version"] == "7"
    assert out["model_kind"] == "lstm-attention" and out["interval"]["level"] == 0.8
    assert out["as_of"] == bars[-1]["ts"] == "2024-06-03T14:55:00Z"
    assert isinstance(out["predicted_close"], float) and math.isfinite(out["predicted_close"])
    # exactly the Predictor's answer on the same bars
    frame = pd.DataFrame(bars).assign(symbol="SPY", ts=lambda f: pd.to_datetime(f["ts"], utc=True))
    expected = Predictor.from_dir(tmp_path / "azureml-models" / "model").predict_latest(frame, "SPY")
    assert out["predicted_close"] == pytest.approx(expected.predicted_close, rel=1e-12)
    assert out["interval"]["lower"] == pytest.approx(expected.lower, rel=1e-12)
    assert out["interval"]["upper"] == pytest.approx(expected.upper, rel=1e-12)
    assert out["interval"]["lower"] < out["predicted_close"] < out["interval"]["upper"]
    schema.PredictResponse.model_validate(out)


def test_the_interval_level_comes_from_the_environment_and_a_bad_one_fails_init(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = load_score("score_level")
    monkeypatch.setenv("AZUREML_MODEL_DIR", str(write_model(tmp_path / "m", version="3")))
    monkeypatch.setenv("TICKCAST_INTERVAL_LEVEL", "0.95")
    module.init()
    wide = module.run(request_body())
    monkeypatch.setenv("TICKCAST_INTERVAL_LEVEL", "0.5")
    module.init()
    narrow = module.run(request_body())
    assert wide["interval"]["level"] == 0.95 and narrow["interval"]["level"] == 0.5
    assert (
        wide["interval"]["lower"]
        < narrow["interval"]["lower"]
        < narrow["interval"]["upper"]
        < wide["interval"]["upper"]
    )
    for bad in ("80", "abc", "0"):
        monkeypatch.setenv("TICKCAST_INTERVAL_LEVEL", bad)
        with pytest.raises(RuntimeError, match="TICKCAST_INTERVAL_LEVEL"):
            module.init()


def test_a_baseline_model_answers_with_its_kind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tickcast.model import baseline

    model, prep = baseline.build(SYMBOLS)
    folder = tmp_path / "b" / "model"
    folder.mkdir(parents=True)
    (folder / MODEL_FILE).write_bytes(model)
    (folder / PREPROCESSING_FILE).write_text(prep.to_json())
    module = load_score("score_baseline")
    monkeypatch.setenv("AZUREML_MODEL_DIR", str(tmp_path / "b"))
    monkeypatch.delenv("TICKCAST_INTERVAL_LEVEL", raising=False)
    module.init()
    bars = make_bars()
    out = module.run(request_body(bars=bars))
    assert out["model_kind"] == "baseline" and out["predicted_close"] == bars[-1]["close"]
    assert out["interval"]["lower"] < out["predicted_close"] < out["interval"]["upper"]


def test_run_accepts_bytes_a_dict_epoch_seconds_any_order_and_a_lower_case_symbol(score: ModuleType) -> None:
    reference = score.run(request_body())
    shuffled = make_bars(epoch=True)[::-1]
    assert score.run(request_body().encode()) == reference
    assert score.run({"symbol": " spy ", "bars": shuffled}) == reference


def test_too_few_bars_is_a_400_that_says_how_many(score: ModuleType) -> None:
    status, body = error_of(score.run(request_body(bars=make_bars(12))))
    assert status == 400 and body["code"] == "not_enough_bars"
    assert body["error"].startswith(f"bars: 12 given, the model needs {NEEDED} consecutive 1-minute bars")
    assert body["detail"]["needed"] == NEEDED and body["detail"]["given"] == 12


def test_a_gap_counts_only_the_bars_after_it(score: ModuleType) -> None:
    bars = make_bars(NEEDED + 10)
    del bars[20]
    status, body = error_of(score.run(request_body(bars=bars)))
    assert status == 400 and body["detail"]["consecutive"] == NEEDED + 10 - 21
    assert "without gaps" in body["error"]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("{not json", "the body is not valid JSON"),
        ("[1, 2]", "the body must be a JSON object"),
        ('{"bars": []}', "symbol: Field required"),
        ('{"symbol": "SPY", "bars": [], "extra": 1}', "extra: Extra inputs are not permitted"),
        ('{"symbol": "S P Y", "bars": []}', "symbol: symbol 'S P Y' is not a ticker"),
        ("[" * 100_000 + "]" * 100_000, "the body is nested too deeply"),
    ],
)
def test_malformed_requests_are_400_with_the_reason(score: ModuleType, raw: str, expected: str) -> None:
    status, body = error_of(score.run(raw))
    assert status == 400 and body["code"] == "invalid_request"
    assert expected in body["error"], body


def test_an_invalid_bar_names_its_index_and_the_rule(score: ModuleType) -> None:
    bars = make_bars()
    bars[3]["high"] = bars[3]["low"] / 2
    bars[5]["ts"] = "2024-06-03T13:35:00"  # naive
    bars[6]["volume"] = -1
    status, body = error_of(score.run(request_body(bars=bars)))
    assert status == 400
    assert "bars.3: high" in body["error"] and "is below max(open" in body["error"]
    assert "bars.5.ts: ts has no time zone; send UTC" in body["error"]
    assert "bars.6.volume: volume -1.0 is negative" in body["error"]
    assert [e["loc"] for e in body["detail"]] == ["bars.3", "bars.5.ts", "bars.6.volume"]


def test_duplicate_minutes_are_refused(score: ModuleType) -> None:
    bars = make_bars()
    bars.append(dict(bars[10]))
    status, body = error_of(score.run(request_body(bars=bars)))
    assert status == 400 and "have the same ts 2024-06-03T13:40:00+00:00" in body["error"]


def test_unknown_symbol_is_a_422_listing_the_known_ones(score: ModuleType) -> None:
    status, body = error_of(score.run(request_body(symbol="AIG")))
    assert status == 422 and body["code"] == "unknown_symbol"
    assert "'AIG'" in body["error"] and "SPY, IBM" in body["error"]
    assert body["detail"] == {"symbol": "AIG", "known": ["SPY", "IBM"]}


def test_run_before_init_is_a_503(tmp_path: Path) -> None:
    status, body = error_of(load_score("never_initialised").run(request_body()))
    assert status == 503 and body["code"] == "model_not_loaded"


def test_error_bodies_are_the_bytes_amlresponse_would_send(score: ModuleType) -> None:
    result = score.run("{")
    assert result.get_data() == json.dumps(result.body).encode()
    assert result.headers["Content-Type"] == "application/json" and result.mimetype == "application/json"


def test_model_files_directly_in_the_model_dir_and_the_version_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = load_score()
    monkeypatch.setenv("AZUREML_MODEL_DIR", str(write_model(tmp_path, nested=False)))
    monkeypatch.setenv("TICKCAST_MODEL_VERSION", "12")
    module.init()
    assert module.run(request_body())["model_version"] == "12"
    monkeypatch.delenv("TICKCAST_MODEL_VERSION")
    module.init()
    assert module.run(request_body())["model_version"] == "unknown"


def test_init_errors_say_what_is_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    module = load_score()
    monkeypatch.delenv("AZUREML_MODEL_DIR", raising=False)
    with pytest.raises(RuntimeError, match="AZUREML_MODEL_DIR is not set"):
        module.init()
    (tmp_path / "empty" / "model").mkdir(parents=True)
    (tmp_path / "empty" / "model" / MODEL_FILE).write_bytes(b"")
    monkeypatch.setenv("AZUREML_MODEL_DIR", str(tmp_path / "empty"))
    with pytest.raises(FileNotFoundError, match=r"holds both model.onnx and preprocessing.json; found: \['model'"):
        module.init()
    write_model(tmp_path / "two" / "a")
    write_model(tmp_path / "two" / "b")
    monkeypatch.setenv("AZUREML_MODEL_DIR", str(tmp_path / "two"))
    with pytest.raises(FileNotFoundError, match="more than one model"):
        module.init()
    broken = tmp_path / "broken"
    write_model(broken)
    (broken / "model" / MODEL_FILE).write_bytes(b"not onnx")
    monkeypatch.setenv("AZUREML_MODEL_DIR", str(broken))
    with pytest.raises(Exception, match=r"(?i)protobuf|onnx|load"):
        module.init()


def test_model_status_undoes_amls_424() -> None:
    assert schema.model_status(200, {}) == 200
    assert schema.model_status(424, {"ms-azureml-model-error-statuscode": "400"}) == 400
    assert schema.model_status(424, {"MS-AzureML-Model-Error-StatusCode": "422"}) == 422
    assert schema.model_status(424, {}) == 424
    assert schema.model_status(404, {"ms-azureml-model-error-statuscode": "400"}) == 404


def test_score_imports_neither_tensorflow_nor_settings() -> None:
    code = (
        "import importlib.util, sys; "
        f"spec = importlib.util.spec_from_file_location('entry_module', {str(SCORE_PY)!r}); "
        "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m); "
        "bad = sorted(n for n in sys.modules if n.split('.')[0] in ('tensorflow', 'keras', 'tf2onnx', 'mlflow') "
        "or n == 'tickcast.settings'); print(bad); sys.exit(1 if bad else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
