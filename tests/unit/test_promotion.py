"""The promotion gate: a challenger must be calibrated, beat persistence, and beat production (points + intervals)."""

from __future__ import annotations

from tickcast.validation.gate import MIN_EVAL_POINTS, Scores, VsProduction, decide


def s(rmse: float, n: int = 500, *, coverage: float | None = 0.80, score: float | None = 10.0) -> Scores:
    """Scores with an 80 % interval (coverage, interval score in bp); ``coverage=None``: no interval."""
    return Scores(
        rmse=rmse,
        mae=rmse * 0.8,
        mape=0.01,
        directional_accuracy=0.55,
        n=n,
        pvalue_vs_persistence=0.001,
        coverage=coverage,
        interval_score=None if coverage is None else score,
        width=None if coverage is None else score * 0.8,
    )


PERSISTENCE = s(1.0, coverage=None)
SIGNIFICANT = VsProduction(point_pvalue=0.001, interval_pvalue=0.001)


def test_first_model_must_beat_persistence() -> None:
    v = decide(s(0.95), PERSISTENCE, margin=0.01)
    assert v.promote and "no production yet" in v.reason and abs(v.skill - 0.05) < 1e-12


def test_a_model_no_better_than_persistence_is_refused_even_without_a_production() -> None:
    v = decide(s(1.0), PERSISTENCE, margin=0.01)
    assert not v.promote and "does not beat persistence" in v.reason


def test_beating_persistence_by_luck_is_refused() -> None:
    lucky = Scores(**{**s(0.99).__dict__, "pvalue_vs_persistence": 0.4})
    v = decide(lucky, PERSISTENCE, margin=0.01)
    assert not v.promote and "indistinguishable from luck" in v.reason


def test_a_model_without_an_interval_is_refused() -> None:
    v = decide(s(0.9, coverage=None), PERSISTENCE, margin=0.01)
    assert not v.promote and "no interval" in v.reason


def test_an_interval_more_than_3_points_off_nominal_is_refused_both_ways() -> None:
    for coverage in (0.766, 0.834):
        v = decide(s(0.9, coverage=coverage), PERSISTENCE, margin=0.01, level=0.8)
        assert not v.promote and "not calibrated" in v.reason
    for coverage in (0.771, 0.829):
        assert decide(s(0.9, coverage=coverage), PERSISTENCE, margin=0.01, level=0.8).promote


def test_a_worse_challenger_never_replaces_the_production() -> None:
    v = decide(
        s(0.96), PERSISTENCE, margin=0.01, production=s(0.95), vs_production=SIGNIFICANT,
        challenger_version="3", production_version="2",
    )  # fmt: skip
    assert not v.promote and "does not beat the production" in v.reason


def test_a_challenger_inside_the_margin_is_refused() -> None:
    v = decide(s(0.945), PERSISTENCE, margin=0.01, production=s(0.95), vs_production=SIGNIFICANT)
    assert not v.promote  # 0.945 is not below 0.95 * 0.99 = 0.9405


def test_beating_the_productions_rmse_by_luck_is_refused() -> None:
    v = decide(s(0.90), PERSISTENCE, margin=0.01, production=s(0.95), vs_production=VsProduction(0.2, 0.001))
    assert not v.promote and "not significantly" in v.reason and "p = 0.200" in v.reason


def test_without_paired_tests_a_production_cannot_be_beaten() -> None:
    v = decide(s(0.90), PERSISTENCE, margin=0.01, production=s(0.95), vs_production=None)
    assert not v.promote and "no paired test" in v.reason


def test_better_points_with_a_worse_interval_score_are_refused() -> None:
    v = decide(s(0.90, score=10.5), PERSISTENCE, margin=0.01, production=s(0.95, score=10.0), vs_production=SIGNIFICANT)
    assert not v.promote and "interval score is no better" in v.reason


def test_a_better_interval_score_by_luck_is_refused() -> None:
    v = decide(
        s(0.90, score=9.9), PERSISTENCE, margin=0.01, production=s(0.95, score=10.0),
        vs_production=VsProduction(0.001, 0.3),
    )  # fmt: skip
    assert not v.promote and "interval score beats" in v.reason and "0.300" in v.reason


def test_a_clearly_better_challenger_is_promoted() -> None:
    v = decide(
        s(0.90, score=9.0), PERSISTENCE, margin=0.01, production=s(0.95, score=10.0), vs_production=SIGNIFICANT,
        challenger_version="3", production_version="2",
    )  # fmt: skip
    assert v.promote and "production by" in v.reason and "interval score" in v.reason


def test_a_production_without_an_interval_is_judged_on_points_only() -> None:
    v = decide(
        s(0.90), PERSISTENCE, margin=0.01, production=s(0.95, coverage=None), vs_production=VsProduction(0.001, None)
    )
    assert v.promote and "interval score" not in v.reason


def test_beating_the_production_is_not_enough_without_beating_persistence() -> None:
    v = decide(s(1.01), PERSISTENCE, margin=0.01, production=s(1.2), vs_production=SIGNIFICANT)
    assert not v.promote and "persistence" in v.reason


def test_an_unscorable_production_is_recorded_and_persistence_decides() -> None:
    note = "v2 could not be scored (FileNotFoundError: model.onnx)"
    v = decide(s(0.9), PERSISTENCE, margin=0.01, production=None, production_note=note, production_version="2")
    assert v.promote and note in v.reason and note in v.description()


def test_too_few_points_decide_nothing() -> None:
    v = decide(s(0.5, n=MIN_EVAL_POINTS - 1), s(1.0, n=MIN_EVAL_POINTS - 1), margin=0.0)
    assert not v.promote and "evaluation points" in v.reason


def test_the_description_and_the_mlflow_numbers_carry_everything() -> None:
    v = decide(
        s(0.9, coverage=0.81, score=9.0),
        PERSISTENCE,
        margin=0.02,
        production=s(0.95, coverage=0.79, score=10.0),
        vs_production=VsProduction(0.0123, 0.0456),
        challenger_version="7",
        production_version="6",
        challenger_kind="lstm-attention",
        production_kind="baseline",
        eval_window=("2026-11-24T19:00:00+00:00", "2026-11-24T20:58:00+00:00"),
    )
    text = v.description()
    for fragment in (
        "PROMOTE",
        "challenger v7 (lstm-attention): RMSE 0.900 bp",
        "production v6 (baseline): RMSE 0.950 bp",
        "persistence: RMSE 1.000 bp",
        "Margin: 0.020",
        "2026-11-24T19:00:00+00:00",
        "challenger vs production, point: 0.0123",
        "challenger vs production, interval score: 0.0456",
        "Intervals at level 80% (coverage must be within 3 points)",
        "challenger v7 (lstm-attention): coverage 81.0 %, interval score 9.000 bp",
        "production v6 (baseline): coverage 79.0 %, interval score 10.000 bp",
    ):
        assert fragment in text, fragment
    assert [r[0] for r in v.table_rows()] == [
        "challenger v7 (lstm-attention)",
        "production v6 (baseline)",
        "persistence",
    ]
    numbers = v.gate_metrics()
    assert numbers["gate_promote"] == 1.0 and numbers["gate_coverage"] == 0.81
    assert numbers["gate_production_interval_score_bp"] == 10.0 and numbers["gate_dm_p_interval"] == 0.0456
    assert "gate_persistence_coverage" not in numbers
