"""Azure ML entry script: ``init()`` loads the ONNX model once, ``run(raw_data)`` answers one ``POST /score``.

The same file runs unmodified under Microsoft's ``azmlinfsrv`` (azureml-inference-server-http, in the AML
serving environment of ``cloud/aml/requirements.txt``) and inside the local endpoint stand-in
(``emulators/aml_endpoint``, which imports it once per deployment under a unique module name). Hence:

* no TensorFlow, no ``tickcast.settings``: only :class:`tickcast.model.predictor.Predictor` (ONNX Runtime,
  NumPy, pandas) and :mod:`tickcast.scoring.contract` (pydantic);
* the hot path is pandas- and model-free: the body is validated column-wise into arrays
  (:func:`~tickcast.scoring.contract.parse_scoring_request`) and the features of the latest window are
  computed on those arrays by the same kernels training uses (``Preprocessing.latest_windows``);
* no dataclasses or pydantic models defined here: azmlinfsrv loads this file as module ``entry_module``
  without registering it in ``sys.modules``;
* if ``tickcast`` is not importable (AML copies the code folder but need not put it on ``sys.path``), the
  ``src`` folder this file lives in is appended to ``sys.path``.

**init()** reads ``AZUREML_MODEL_DIR``. The model files ``model.onnx`` + ``preprocessing.json`` may lie in
that folder or in exactly one folder below it (AML nests a registered model's files, e.g.
``<dir>/model/``); anything else is an error that lists what was found. The **model version** reported in
every answer is, first found: a ``version.txt`` in the model folder or in a folder between it and
``AZUREML_MODEL_DIR`` (the deployer writes it — the stand-in does, next to ``model/``), else the
environment variable ``TICKCAST_MODEL_VERSION`` (set it in the AML deployment's ``environment_variables``),
else ``"unknown"``. The **interval level** of every answer is ``TICKCAST_INTERVAL_LEVEL`` (default 0.8; the
same variable as the ``interval_level`` setting, which this file cannot import); a value outside (0, 1) makes
``init()`` fail with a message that says so.

**run(raw_data)** takes the raw body as ``str`` (what azmlinfsrv passes to an undecorated ``run``), ``bytes``
or an already-decoded ``dict``. It returns the :class:`~tickcast.scoring.contract.PredictResponse` as a
``dict`` (both hosts JSON-encode it with status 200). Every caller mistake is an answer, never an exception:
a :class:`ScoringError` (status, code, message) is turned into an error response whose body is
:class:`~tickcast.scoring.contract.ErrorBody` JSON —

* under azmlinfsrv: ``AMLResponse(body, status, json_str=True)`` (``azureml.contrib.services.aml_response``,
  which azmlinfsrv aliases into ``sys.modules`` before it loads this script);
* elsewhere (the stand-in, unit tests; the package is not installed): a :class:`ScoreResponse`, a minimal
  ``flask.Response`` look-alike (``status_code``, ``headers``, ``mimetype``, ``get_data()``) with the SAME
  bytes (``json.dumps(body)``), so both servers answer the same status and body.

Statuses: 400 ``invalid_request`` / ``not_enough_bars``, 422 ``unknown_symbol``, 503 ``model_not_loaded``
(see :mod:`tickcast.scoring.contract`). Anything unexpected propagates: azmlinfsrv answers 500
``{"message": "An unexpected error occurred in scoring script. Check the logs for more info."}`` and the
stand-in copies that answer.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

try:
    import tickcast  # noqa: F401
except ImportError:  # pragma: no cover - depends on how the host laid out the code
    sys.path.append(str(Path(__file__).resolve().parents[2]))

from tickcast.model.predictor import MODEL_FILE, PREPROCESSING_FILE, NotEnoughBars, Predictor, UnknownSymbol
from tickcast.scoring.contract import (
    INVALID_REQUEST,
    MODEL_NOT_LOADED,
    NOT_ENOUGH_BARS,
    STATUS,
    UNKNOWN_SYMBOL,
    ErrorBody,
    Interval,
    InvalidRequest,
    PredictResponse,
    parse_scoring_request,
)

__all__ = [
    "LEVEL_ENV",
    "MODEL_DIR_ENV",
    "VERSION_ENV",
    "VERSION_FILE",
    "ScoreResponse",
    "ScoringError",
    "init",
    "run",
]

MODEL_DIR_ENV = "AZUREML_MODEL_DIR"
VERSION_ENV = "TICKCAST_MODEL_VERSION"
LEVEL_ENV = "TICKCAST_INTERVAL_LEVEL"
DEFAULT_LEVEL = 0.8
VERSION_FILE = "version.txt"
SEARCH_DEPTH = 3  # folders below AZUREML_MODEL_DIR searched for the model files

log = logging.getLogger("tickcast.scoring.score")

_predictor: Predictor | None = None
_model_version = "unknown"
_level = DEFAULT_LEVEL
_aml_response: Any = None  # the AMLResponse class, False when not importable, None before the first look


class ScoringError(Exception):
    """A request score.py refuses: HTTP ``status``, a stable ``code`` and a message that says what to fix."""

    def __init__(self, status: int, code: str, message: str, detail: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.detail = detail

    def body(self) -> dict[str, Any]:
        return ErrorBody(error=self.message, code=self.code, detail=self.detail).model_dump(mode="json")


class ScoreResponse:
    """An error answer when azmlinfsrv's ``AMLResponse`` is not importable; same status and bytes as it."""

    mimetype = "application/json"

    def __init__(self, body: dict[str, Any], status_code: int) -> None:
        self.body = body
        self.status_code = status_code
        self.headers = {"Content-Type": self.mimetype}

    def get_data(self) -> bytes:
        return json.dumps(self.body).encode("utf-8")

    def get_json(self) -> dict[str, Any]:
        return self.body

    def __repr__(self) -> str:
        return f"ScoreResponse({self.status_code}, {self.body!r})"


# --- init ---------------------------------------------------------------------------------------


def find_model_dir(root: Path) -> Path:
    """The folder holding ``model.onnx`` + ``preprocessing.json``: ``root`` or the one folder below it that does."""
    if not root.is_dir():
        raise FileNotFoundError(f"{MODEL_DIR_ENV}={root} is not a folder")

    def holds_model(folder: Path) -> bool:
        return (folder / MODEL_FILE).is_file() and (folder / PREPROCESSING_FILE).is_file()

    if holds_model(root):
        return root
    found: list[Path] = []
    level = [root]
    for _ in range(SEARCH_DEPTH):
        level = sorted(p for folder in level for p in folder.iterdir() if p.is_dir())
        found.extend(p for p in level if holds_model(p))
    if len(found) == 1:
        return found[0]
    if found:
        raise FileNotFoundError(
            f"{MODEL_DIR_ENV}={root} holds more than one model ({', '.join(str(p) for p in found)}); "
            "deploy exactly one model folder"
        )
    listing = sorted(str(p.relative_to(root)) for p in root.rglob("*"))[:20]
    raise FileNotFoundError(
        f"no folder in {MODEL_DIR_ENV}={root} (or up to {SEARCH_DEPTH} levels below) holds both {MODEL_FILE} "
        f"and {PREPROCESSING_FILE}; found: {listing or 'nothing'}"
    )


def read_model_version(model_dir: Path, root: Path) -> str:
    """``version.txt`` in ``model_dir`` or a parent up to ``root``, else ``$TICKCAST_MODEL_VERSION``, else unknown."""
    folder = model_dir
    while True:
        candidate = folder / VERSION_FILE
        if candidate.is_file():
            text = candidate.read_text(encoding="utf-8").strip()
            if text:
                return text
        if folder == root or folder.parent == folder:
            break
        folder = folder.parent
    return os.environ.get(VERSION_ENV, "").strip() or "unknown"


def read_level() -> float:
    """``$TICKCAST_INTERVAL_LEVEL`` as a level in (0, 1), default 0.8; anything else is a clear error."""
    raw = os.environ.get(LEVEL_ENV, "").strip()
    if not raw:
        return DEFAULT_LEVEL
    try:
        level = float(raw)
    except ValueError:
        level = float("nan")
    if not 0.0 < level < 1.0:
        raise RuntimeError(f"{LEVEL_ENV}={raw!r} is not an interval level: use a number between 0 and 1, e.g. 0.8")
    return level


def init() -> None:
    """Load the model named by ``AZUREML_MODEL_DIR`` (called once per process by the host)."""
    global _predictor, _model_version, _level
    level = read_level()
    value = os.environ.get(MODEL_DIR_ENV, "").strip()
    if not value:
        raise RuntimeError(f"{MODEL_DIR_ENV} is not set: point it at the folder holding the deployed model")
    root = Path(value).resolve()
    folder = find_model_dir(root)
    predictor = Predictor.from_dir(folder)
    _predictor, _model_version, _level = predictor, read_model_version(folder, root), level
    log.info(
        "tickcast %s model %s loaded from %s: symbols %s, window %d, needs %d bars",
        predictor.model_kind,
        _model_version,
        folder,
        ", ".join(predictor.symbols),
        predictor.preprocessing.window,
        predictor.preprocessing.bars_needed,
    )


# --- run ----------------------------------------------------------------------------------------


def _response_class() -> Any:
    global _aml_response
    if _aml_response is None:
        try:
            from azureml.contrib.services.aml_response import AMLResponse  # type: ignore[import-not-found]
        except ImportError:
            _aml_response = False
        else:
            _aml_response = AMLResponse
    return _aml_response


def error_response(err: ScoringError) -> Any:
    """``AMLResponse`` under azmlinfsrv, else :class:`ScoreResponse` — same status, same JSON bytes."""
    cls = _response_class()
    if cls:
        return cls(err.body(), err.status, json_str=True)
    return ScoreResponse(err.body(), err.status)


def _not_enough_bars(err: NotEnoughBars, given: int, needed: int) -> ScoringError:
    return ScoringError(
        STATUS[NOT_ENOUGH_BARS],
        NOT_ENOUGH_BARS,
        f"bars: {given} given, the model needs {needed} consecutive 1-minute bars of one session ending at the "
        f"last bar (it found {err.given} consecutive at the end); send at least the last {needed} minutes, "
        "without gaps",
        {"needed": needed, "given": given, "consecutive": err.given, "reason": str(err)},
    )


def predict(raw_data: str | bytes | bytearray | dict[str, Any]) -> dict[str, Any]:
    """The 200 body for ``raw_data``; raises :class:`ScoringError` for anything the caller must change."""
    predictor = _predictor
    if predictor is None:
        raise ScoringError(
            STATUS[MODEL_NOT_LOADED],
            MODEL_NOT_LOADED,
            "the model is not loaded: init() has not run or failed; check the deployment's logs",
        )
    try:
        request = parse_scoring_request(raw_data)
    except InvalidRequest as err:
        raise ScoringError(STATUS[INVALID_REQUEST], INVALID_REQUEST, str(err), err.detail) from None
    needed = predictor.preprocessing.bars_needed
    try:
        prediction = predictor.predict_latest(request.bars, request.symbol, level=_level)
    except UnknownSymbol as err:
        raise ScoringError(
            STATUS[UNKNOWN_SYMBOL],
            UNKNOWN_SYMBOL,
            f"symbol: {err}; ask for one of those",
            {"symbol": err.symbol, "known": err.known},
        ) from None
    except NotEnoughBars as err:
        raise _not_enough_bars(err, request.bars.size, needed) from None
    return PredictResponse(
        symbol=prediction.symbol,
        as_of=prediction.as_of,
        horizon_minutes=prediction.horizon_minutes,
        predicted_close=prediction.predicted_close,
        model_version=_model_version,
        model_kind=prediction.model_kind,  # Preprocessing validated the kind
        interval=Interval(level=prediction.level, lower=prediction.lower, upper=prediction.upper),
    ).model_dump(mode="json")


def run(raw_data: str | bytes | bytearray | dict[str, Any]) -> Any:
    """Score one request: the response ``dict`` (200) or an error response (see the module docstring)."""
    try:
        return predict(raw_data)
    except ScoringError as err:
        log.info("score refused (%d %s): %s", err.status, err.code, err.message)
        return error_response(err)
