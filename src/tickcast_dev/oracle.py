"""The synthetic market's oracle for training reports: asked from the local Yahoo emulator's private route.

Only the local harness knows the emulator: the retrain DAG and ``tickcast train`` pass this oracle into
training when the stack runs the synthetic market, so the training report shows how much of the knowable
skill the model captured. In tape mode and in the cloud there is no oracle (``None``). The market's mode is the
emulator's own setting (``TICKCAST_EMULATOR__MODE``, :mod:`emulators.settings`), not the product's.
"""

from __future__ import annotations

import httpx
import numpy as np
import pandas as pd

from emulators.settings import MarketSettings, load_stand_in_settings
from tickcast.model.training import OracleFn
from tickcast.settings import Settings


def emulator_oracle(settings: Settings, market: MarketSettings | None = None) -> OracleFn | None:
    """The synthetic market's oracle, asked from the local Yahoo emulator (None in tape mode or in the cloud).

    ``market`` defaults to the emulator's settings read from the environment (:func:`load_stand_in_settings`).
    """
    if settings.profile != "local":
        return None
    if (market or load_stand_in_settings().emulator).mode != "synthetic":
        return None
    base = settings.yahoo_base_url

    def oracle(symbol: str, ts: pd.Series) -> np.ndarray:
        p1, p2 = int(ts.min().timestamp()), int(ts.max().timestamp()) + 60
        resp = httpx.get(f"{base}/_emulator/oracle/{symbol}", params={"period1": p1, "period2": p2}, timeout=30)
        resp.raise_for_status()
        body = resp.json()
        lookup = pd.Series(body["oracle"], index=pd.to_datetime(body["ts"], unit="s", utc=True), dtype=float)
        return np.asarray(lookup.reindex(pd.to_datetime(ts, utc=True)).to_numpy(), dtype=float)

    return oracle
