"""The scoring fast path (``parse_scoring_request``) accepts, refuses and explains exactly like the pydantic contract.

``parse_predict_request`` (pydantic models, per-bar validators) is the definition of a valid ``POST /score``
body; ``parse_scoring_request`` validates whole columns with NumPy and only falls back to it for what it
does not recognise as plainly valid. Hundreds of seeded variants — valid ones in every accepted shape and
one-field mutations that break each rule — must get the same verdict, the same error text and the same bars.
"""

from __future__ import annotations

import copy
import json
import math
import random
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from tests.support.models import make_bars
from tickcast.market.columns import BarArrays
from tickcast.scoring import contract as schema
from tickcast.scoring.contract import InvalidRequest, parse_predict_request, parse_scoring_request

Body = dict[str, Any]
FIELDS = ("open", "high", "low", "close", "volume")


def verdict(parse: Callable[[Any], Any], raw: Any) -> tuple[str, Any]:
    try:
        result = parse(raw)
    except InvalidRequest as err:
        return "refused", str(err)
    if isinstance(result, schema.PredictRequest):
        return "accepted", (result.symbol, result.bar_arrays())
    return "accepted", (result.symbol, result.bars)


def same(a: tuple[str, Any], b: tuple[str, Any]) -> bool:
    if a[0] != b[0]:
        return False
    if a[0] == "refused":
        return bool(a[1] == b[1])
    (sym_a, bars_a), (sym_b, bars_b) = a[1], b[1]
    return sym_a == sym_b and all(np.array_equal(x, y) for x, y in zip(bars_a, bars_b, strict=True))


def mutations(rng: random.Random) -> list[Callable[[Body], None]]:
    """One-field changes; most break a rule, some are valid in a shape the fast path leaves to pydantic."""

    def bar(body: Body) -> dict[str, Any]:
        bars = [b for b in body["bars"] if isinstance(b, dict)] if isinstance(body["bars"], list) else []
        return rng.choice(bars) if bars else {}  # a previous change left no bar: change nothing

    def set_field(name: str, value: Any) -> Callable[[Body], None]:
        return lambda body: bar(body).__setitem__(name, value)

    def shift_ts(body: Body) -> None:  # UTC written as -00:00: valid, left to pydantic (other offsets are refused)
        b = bar(body)
        if isinstance(b.get("ts"), str) and len(b["ts"]) >= 19:
            b["ts"] = f"{b['ts'][:19]}-00:00"

    def duplicate(body: Body) -> None:
        if isinstance(body["bars"], list) and body["bars"]:
            body["bars"].append(copy.copy(body["bars"][0]))

    def high_below_close(body: Body) -> None:
        b = bar(body)
        if isinstance(b.get("close"), float):
            b["high"] = b["close"] * 0.99

    def low_above_open(body: Body) -> None:
        b = bar(body)
        if isinstance(b.get("open"), float):
            b["low"] = b["open"] * 1.01

    return [
        set_field("open", -1.0),
        set_field("close", 0),
        set_field("high", float("nan")),  # json.dumps writes NaN, json.loads reads it back
        set_field("low", float("inf")),
        set_field("volume", -5),
        set_field("volume", "100"),  # a string number: pydantic's lax mode decides
        set_field("close", "abc"),
        set_field("open", True),
        set_field("open", None),
        set_field("volume", 10**400),
        set_field("ts", "2024-06-03T13:30:30Z"),  # not on a minute
        set_field("ts", "2024-06-03T13:30:00"),  # naive
        set_field("ts", "2024-06-03T13:30:00.000Z"),  # valid, not canonical
        set_field("ts", "2024-06-03 13:30:00Z"),
        set_field("ts", "not a time"),
        set_field("ts", 1717421430),  # epoch seconds off the minute
        set_field("ts", 1717421400.5),
        set_field("ts", -60),
        set_field("ts", "1969-12-31T23:59:00Z"),  # canonical, but before 1970
        set_field("ts", "0001-01-01T00:00:00+01:00"),  # off UTC and out of epoch range
        set_field("ts", 1e300),
        set_field("ts", False),
        set_field("ts", [1]),
        lambda body: bar(body).pop("volume", None),
        lambda body: bar(body).__setitem__("extra", 1),
        lambda body: body.__setitem__("extra", 1),
        lambda body: body.__setitem__("symbol", " spy "),  # valid: blanks dropped, upper-cased
        lambda body: body.__setitem__("symbol", "S P Y"),
        lambda body: body.__setitem__("symbol", 7),
        lambda body: body.__setitem__("bars", [*body["bars"][:1], "not a bar"]),
        lambda body: body.__setitem__("bars", {}),
        lambda body: body.__setitem__("bars", []),
        shift_ts,
        duplicate,
        high_below_close,
        low_above_open,
    ]


def valid_body(rng: random.Random) -> Body:
    bars = make_bars(rng.randrange(1, 120), seed=rng.randrange(1_000), epoch=rng.random() < 0.3)
    rng.shuffle(bars)  # any order
    if rng.random() < 0.3:
        for b in bars:
            if isinstance(b.get("ts"), str) and len(b["ts"]) >= 19:
                b["ts"] = b["ts"].replace("Z", "+00:00")
    if rng.random() < 0.3:
        for b in bars:
            b["volume"] = int(b["volume"])  # JSON integers are numbers too
    return {"symbol": rng.choice(["SPY", "IBM", "brk.b"]), "bars": bars}


def test_plainly_valid_bodies_take_the_fast_path_and_match_pydantic_bar_for_bar() -> None:
    rng = random.Random(11)
    for _ in range(60):
        body = valid_body(rng)
        raw = json.dumps(body)
        fast = schema._fast_request(json.loads(raw))
        assert fast is not None, "a canonical valid body must not need pydantic"
        assert same(("accepted", (fast.symbol, fast.bars)), verdict(parse_predict_request, raw))


def test_every_variant_gets_the_same_verdict_message_and_bars_on_both_paths() -> None:
    rng = random.Random(5)
    changes = mutations(rng)
    outcomes = {"accepted": 0, "refused": 0}
    for i in range(500):
        body = valid_body(rng)
        for change in rng.sample(changes, k=1 + (i % 3 == 0)):
            change(body)
        raw = json.dumps(body)
        expected = verdict(parse_predict_request, raw)
        got = verdict(parse_scoring_request, raw)
        assert same(got, expected), (expected[0], got[0], str(expected[1])[:300], str(got[1])[:300])
        outcomes[expected[0]] += 1
    # the variants exercise both verdicts, not only one
    assert min(outcomes.values()) > 40, outcomes


def test_a_refused_body_says_what_to_fix() -> None:
    bars = make_bars()
    bars[3] = copy.deepcopy(bars[3]) | {"high": bars[3]["low"] / 2}
    with pytest.raises(InvalidRequest, match=r"bars\.3: .*high .* is below max"):
        parse_scoring_request(json.dumps({"symbol": "SPY", "bars": bars}))


def test_more_than_max_bars_is_refused_on_both_paths() -> None:
    raw = json.dumps({"symbol": "SPY", "bars": make_bars(schema.MAX_BARS + 1)})
    expected = verdict(parse_predict_request, raw)
    assert expected[0] == "refused" and same(verdict(parse_scoring_request, raw), expected)


def test_fast_path_returns_epoch_seconds_and_float_columns() -> None:
    bars = make_bars(3)
    got = parse_scoring_request({"symbol": " spy", "bars": bars})
    assert got.symbol == "SPY" and isinstance(got.bars, BarArrays)
    assert got.bars.ts.dtype == np.int64 and got.bars.close.dtype == np.float64
    assert got.bars.ts[0] % 60 == 0 and got.bars.size == 3
    assert all(math.isclose(got.bars.close[i], bars[i]["close"]) for i in range(3))
