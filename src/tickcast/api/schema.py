"""The public API's 200 body: the endpoint's forecast plus the age of the data behind it."""

from __future__ import annotations

from pydantic import Field

from tickcast.scoring.contract import PredictResponse

__all__ = ["Prediction"]


class Prediction(PredictResponse):
    """:class:`~tickcast.scoring.contract.PredictResponse` with ``data_age_s`` (:mod:`tickcast.api.freshness`)."""

    data_age_s: float | None = Field(
        None,
        ge=0,
        description="seconds since the newest bar behind the forecast closed (as_of + 60 s), on the API's clock "
        "(the market data source's); null when that clock cannot be read. During the regular session GET answers "
        "503 stale_data instead of a forecast from data older than the API's limit",
        examples=[12.5],
    )
