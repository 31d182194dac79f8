"""Recording every served forecast into the lake's prediction log, off the request path.

:class:`PredictionRecorder` is what the API calls after each 200 answer: :meth:`~PredictionRecorder.record`
only appends the answer to an in-memory buffer (a deque append, no I/O, no conversion). A daemon thread
writes the buffer to the lake (:class:`tickcast.lake.predictions.PredictionLog`) in batches: as soon as
``batch`` answers wait, or every ``flush_s`` seconds, whichever comes first.

A write that fails never fails a request: the rows go back to the front of the buffer for the next try, the
failure is counted and logged, and :meth:`~PredictionRecorder.stats` exposes the counts (``GET /api/health``
shows them, and ``tickcast status`` reads them from there). The buffer is bounded (``buffer_max``): while the
lake stays unwritable the OLDEST rows are dropped, and counted as dropped.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

log = logging.getLogger("tickcast.api.prediction_log")

Sink = Callable[[list[dict[str, Any]]], int]
"""Writes log rows (see :func:`tickcast.lake.predictions.row_of`); raises when it cannot."""


@dataclass(frozen=True)
class LogStats:
    """Counts since the process started."""

    recorded: int
    written: int
    pending: int
    write_failures: int
    dropped: int
    last_error: str | None

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class PredictionRecorder:
    """Buffered, batched, failure-tolerant writer of served forecasts (module docstring)."""

    def __init__(
        self,
        sink_factory: Callable[[], Sink],
        *,
        batch: int = 200,
        flush_s: float = 5.0,
        buffer_max: int = 20_000,
    ) -> None:
        self._sink_factory = sink_factory
        self._sink: Sink | None = None
        self.batch = batch
        self.flush_s = flush_s
        self.buffer_max = buffer_max
        self._buffer: deque[tuple[Any, str, float]] = deque()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.recorded = self.written = self.write_failures = self.dropped = 0
        self.last_error: str | None = None

    # --- the request path --------------------------------------------------------------------------

    def record(self, answer: Any, route: str) -> None:
        """Remember one served answer (a PredictResponse or its dict). Never raises, never blocks on I/O."""
        try:
            self._buffer.append((answer, route, time.time()))
            self.recorded += 1
            if len(self._buffer) > self.buffer_max:
                self._buffer.popleft()
                self.dropped += 1
            if self._thread is None:
                self.start()
            elif len(self._buffer) >= self.batch:
                self._wake.set()
        except Exception:  # the log must never cost a request
            log.exception("could not buffer a served prediction")

    # --- the writer thread -------------------------------------------------------------------------

    def start(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.flush_s)
            self._wake.clear()
            self.flush()

    def flush(self) -> int:
        """Write what is buffered now (one batch per call of the sink); returns the rows written."""
        from tickcast.lake.predictions import row_of

        with self._lock:
            taken = [self._buffer.popleft() for _ in range(len(self._buffer))]
        if not taken:
            return 0
        try:
            rows = [row_of(_as_dict(a), route, datetime.fromtimestamp(t, UTC)) for a, route, t in taken]
            if self._sink is None:
                self._sink = self._sink_factory()
            written = 0
            for start in range(0, len(rows), self.batch):
                written += self._sink(rows[start : start + self.batch])
                taken = taken[self.batch :]  # what is left if a later batch fails
        except Exception as err:  # counted, logged, retried with the next flush
            self.write_failures += 1
            self.last_error = f"{type(err).__name__}: {str(err)[:300]}"
            log.warning("prediction log: %d row(s) not written yet (%s)", len(taken), self.last_error)
            with self._lock:
                self._buffer.extendleft(reversed(taken))
                while len(self._buffer) > self.buffer_max:
                    self._buffer.popleft()
                    self.dropped += 1
            return 0
        self.written += written
        return written

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop the thread and try one last flush (bounded by ``timeout_s``)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
        self.flush()

    def stats(self) -> LogStats:
        return LogStats(
            self.recorded, self.written, len(self._buffer), self.write_failures, self.dropped, self.last_error
        )


def _as_dict(answer: Any) -> Mapping[str, Any]:
    if isinstance(answer, Mapping):
        return answer
    dump = getattr(answer, "model_dump", None)
    if dump is None:
        raise TypeError(f"not a prediction: {type(answer).__name__}")
    return dict(dump())
