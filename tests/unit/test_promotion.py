"""The promotion gate: a challenger must beat persistence AND the champion by the margin."""

from __future__ import annotations

from tickcast.validation.gate import MIN_EVAL_POINTS, Scores, decide


def s(rmse: float, n: int = 500) -> Scores:
    return Scores(rmse=rmse, mae=rmse * 0.8, mape=0.01, directional_accuracy=0.55, n=n)


def test_first_model_must_beat_persistence() -> None:
    v = decide(s(0.95), s(1.0), margin=0.01)
    assert v.promote and "no champion yet" in v.reason and abs(v.skill - 0.05) < 1e-12


def test_a_model_no_better_than_persistence_is_refused_even_without_a_champion() -> None:
    v = decide(s(1.0), s(1.0), margin=0.01)
    assert not v.promote and "does not beat persistence" in v.reason


def test_a_worse_challenger_never_replaces_the_champion() -> None:
    v = decide(s(0.96), s(1.0), margin=0.01, champion=s(0.95), challenger_version="3", champion_version="2")
    assert not v.promote and "does not beat the champion" in v.reason


def test_a_challenger_inside_the_margin_is_refused() -> None:
    v = decide(s(0.945), s(1.0), margin=0.01, champion=s(0.95))
    assert not v.promote  # 0.945 is not below 0.95 * 0.99 = 0.9405


def test_a_clearly_better_challenger_is_promoted() -> None:
    v = decide(s(0.90), s(1.0), margin=0.01, champion=s(0.95), challenger_version="3", champion_version="2")
    assert v.promote and "champion by" in v.reason


def test_beating_the_champion_is_not_enough_without_beating_persistence() -> None:
    v = decide(s(1.01), s(1.0), margin=0.01, champion=s(1.2))
    assert not v.promote and "persistence" in v.reason


def test_an_unscorable_champion_is_recorded_and_persistence_decides() -> None:
    note = "v2 could not be scored (FileNotFoundError: model.onnx)"
    v = decide(s(0.9), s(1.0), margin=0.01, champion=None, champion_note=note, champion_version="2")
    assert v.promote and note in v.reason and note in v.description()


def test_too_few_points_decide_nothing() -> None:
    v = decide(s(0.5, n=MIN_EVAL_POINTS - 1), s(1.0, n=MIN_EVAL_POINTS - 1), margin=0.0)
    assert not v.promote and "evaluation points" in v.reason


def test_the_description_carries_the_numbers() -> None:
    v = decide(
        s(0.9),
        s(1.0),
        margin=0.02,
        champion=s(0.95),
        challenger_version="7",
        champion_version="6",
        eval_window=("2026-11-24T19:00:00+00:00", "2026-11-24T20:58:00+00:00"),
    )
    text = v.description()
    for fragment in (
        "PROMOTE",
        "challenger v7: RMSE 0.900 bp",
        "champion v6: RMSE 0.950 bp",
        "persistence: RMSE 1.000 bp",
        "Margin: 0.020",
        "2026-11-24T19:00:00+00:00",
    ):
        assert fragment in text
    assert [r[0] for r in v.table_rows()] == ["challenger v7", "champion v6", "persistence"]
