"""Decoder for records of Airbyte's Yahoo Finance Price source connector, so a real Airbyte can feed Kafka.

Airbyte writes each record as an envelope whose ``_airbyte_data`` is one Yahoo chart response::

    {"_airbyte_ab_id": "...", "_airbyte_emitted_at": 1700000000000,
     "_airbyte_data": {"chart": {"result": [{"meta": {"symbol": "SPY", ...}, "timestamp": [...],
                                              "indicators": {"quote": [{"open": [...], ...}]}}]}}}

Some destinations flatten it to ``{"_airbyte_data": {...}}`` only, or put the chart result directly in
``_airbyte_data`` (``{"meta": ..., "timestamp": ..., "indicators": ...}``); all three are accepted.
"""

from __future__ import annotations

from typing import Any

from tickcast.market.chart import ChartBars, ChartError, chart_bars


def is_airbyte_record(doc: Any) -> bool:
    return isinstance(doc, dict) and "_airbyte_data" in doc


def decode_airbyte_record(doc: dict[str, Any], max_bars: int | None = None) -> ChartBars:
    """The closed bars in one Airbyte record; ChartError if the envelope does not hold a chart.

    ``max_bars`` refuses a chart with more timestamps than that (see :func:`~tickcast.market.chart.chart_bars`).
    """
    data = doc.get("_airbyte_data")
    if isinstance(data, str):
        import json

        try:
            data = json.loads(data)
        except RecursionError:
            raise ChartError("_airbyte_data is a string of JSON nested too deeply") from None
        except ValueError as err:
            raise ChartError(f"_airbyte_data is a string but not JSON: {err}") from None
    if not isinstance(data, dict):
        raise ChartError("_airbyte_data is not an object")
    if "chart" not in data and "meta" in data:
        data = {"chart": {"result": [data], "error": None}}
    return chart_bars(data, source="airbyte", max_bars=max_bars)
