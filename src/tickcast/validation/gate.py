"""The promotion gate: may the challenger replace the production? Pure logic, no MLflow calls.

Rule (ARCHITECTURE, "Promotion"; decision 0052): on the same most-recent held-out window, each model scored
with its OWN preprocessing, the challenger is promoted only if

1. it has at least :data:`MIN_EVAL_POINTS` minutes to be judged on;
2. its interval is calibrated there: coverage within ``coverage_tolerance`` (3 points) of the nominal level;
3. it beats persistence ("next close = last close") on point RMSE, significantly (one-sided
   Diebold-Mariano test on squared errors, p < alpha — on a random walk a model "beats" persistence by
   luck about half the time);
4. it beats the production (``production``, the baseline at least) on point RMSE by the configured margin
   AND significantly (Diebold-Mariano on squared errors, p < alpha);
5. it beats the production on the interval score (lower mean interval score, in bp of the last close, at the
   served level) AND significantly (Diebold-Mariano on the per-minute interval scores, p < alpha).

Against a baseline production rules 3 and 4 ask the same question (its point forecast is persistence).
The window must be unseen by BOTH models: the production is scored only on minutes after the end of its
own training data, so it is never judged on data it has learnt. When there is no production, or the
production cannot be scored (its artifacts do not load, or too few unseen minutes remain), the
challenger is judged against persistence alone (rules 1-3) and the reason is recorded in the verdict.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

MIN_EVAL_POINTS = 50
COVERAGE_TOLERANCE = 0.03


@dataclass(frozen=True)
class Scores:
    """Errors of one forecaster on the evaluation window (``rmse``, ``interval_score``: bp of the last close).

    ``coverage``/``interval_score``/``width`` are None for a forecaster without an interval (persistence).
    """

    rmse: float
    mae: float
    mape: float
    directional_accuracy: float
    n: int
    pvalue_vs_persistence: float | None = None  # Diebold-Mariano, one-sided: is it better than persistence?
    coverage: float | None = None
    interval_score: float | None = None
    width: float | None = None

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Scores:
        return cls(
            rmse=float(d["rmse"]),
            mae=float(d["mae"]),
            mape=float(d["mape"]),
            directional_accuracy=float(d["directional_accuracy"]),
            n=int(d["n"]),
            coverage=None if d.get("coverage") is None else float(d["coverage"]),
            interval_score=None if d.get("interval_score_bp") is None else float(d["interval_score_bp"]),
            width=None if d.get("width_bp") is None else float(d["width_bp"]),
        )


@dataclass(frozen=True)
class VsProduction:
    """One-sided Diebold-Mariano p-values of the challenger against the production on the same minutes."""

    point_pvalue: float  # squared errors
    interval_pvalue: float | None  # interval scores; None when the production has no interval


@dataclass(frozen=True)
class Verdict:
    promote: bool
    reason: str
    challenger_version: str | None
    production_version: str | None
    margin: float
    challenger: Scores
    persistence: Scores
    production: Scores | None = None
    production_note: str | None = None
    eval_window: tuple[str, str] | None = None
    notes: list[str] = field(default_factory=list)
    level: float = 0.8
    coverage_tolerance: float = COVERAGE_TOLERANCE
    vs_production: VsProduction | None = None
    challenger_kind: str | None = None
    production_kind: str | None = None

    @property
    def skill(self) -> float:
        """1 − RMSE_challenger / RMSE_persistence (> 0: better than persistence)."""
        return 1.0 - self.challenger.rmse / self.persistence.rmse if self.persistence.rmse > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["skill"] = self.skill
        return d

    def gate_metrics(self) -> dict[str, float]:
        """The verdict's numbers for MLflow: ``gate_*`` (challenger, production, persistence; p-values; promote)."""
        out: dict[str, float] = {"gate_promote": float(self.promote), "gate_skill": self.skill}
        for role, sc in (("", self.challenger), ("production_", self.production), ("persistence_", self.persistence)):
            if sc is None:
                continue
            out[f"gate_{role}rmse_bp"] = sc.rmse
            if sc.coverage is not None and sc.interval_score is not None:
                out[f"gate_{role}coverage"] = sc.coverage
                out[f"gate_{role}interval_score_bp"] = sc.interval_score
        if self.challenger.pvalue_vs_persistence is not None:
            out["gate_dm_p_vs_persistence"] = self.challenger.pvalue_vs_persistence
        if self.vs_production is not None:
            out["gate_dm_p_point"] = self.vs_production.point_pvalue
            if self.vs_production.interval_pvalue is not None:
                out["gate_dm_p_interval"] = self.vs_production.interval_pvalue
        return out

    def table_rows(self) -> list[tuple[str, str, str, str, str, str]]:
        """(forecaster, RMSE, MAE, MAPE %, direction %, n) rows for a comparison table."""
        return [
            (name, f"{s.rmse:.3f}", f"{s.mae:.5f}", f"{s.mape:.4f}", f"{100 * s.directional_accuracy:.1f}", str(s.n))
            for name, s in self._named()
        ]

    def _named(self) -> list[tuple[str, Scores]]:
        def label(role: str, version: str | None, kind: str | None) -> str:
            return role + (f" v{version}" if version else "") + (f" ({kind})" if kind else "")

        rows = [(label("challenger", self.challenger_version, self.challenger_kind), self.challenger)]
        if self.production is not None:
            rows.append((label("production", self.production_version, self.production_kind), self.production))
        rows.append(("persistence", self.persistence))
        return rows

    def interval_rows(self) -> list[tuple[str, str, str, str]]:
        """(forecaster, coverage %, interval score bp, width bp) for the forecasters with an interval."""
        return [
            (name, f"{100 * s.coverage:.1f}", f"{s.interval_score:.3f}", f"{(s.width or 0.0):.3f}")
            for name, s in self._named()
            if s.coverage is not None and s.interval_score is not None
        ]

    def description(self) -> str:
        """Text for the model version's description in the registry."""
        lines = [f"Promotion verdict: {'PROMOTE' if self.promote else 'KEEP PRODUCTION'} — {self.reason}"]
        if self.eval_window:
            lines.append(f"Evaluation window (unseen by both): {self.eval_window[0]} .. {self.eval_window[1]}")
        lines.append(f"Margin: {self.margin:.3f}; skill vs persistence: {self.skill:+.4f}")
        if self.challenger.pvalue_vs_persistence is not None:
            lines.append(
                f"Diebold-Mariano p-value, challenger vs persistence: {self.challenger.pvalue_vs_persistence:.4f}"
            )
        if self.vs_production is not None:
            lines.append(
                f"Diebold-Mariano p-value, challenger vs production, point: {self.vs_production.point_pvalue:.4f}"
            )
            if self.vs_production.interval_pvalue is not None:
                lines.append(
                    "Diebold-Mariano p-value, challenger vs production, interval score: "
                    f"{self.vs_production.interval_pvalue:.4f}"
                )
        for name, rmse, mae, mape, direction, n in self.table_rows():
            lines.append(f"- {name}: RMSE {rmse} bp, MAE {mae}, MAPE {mape} %, direction {direction} %, n {n}")
        lines.append(
            f"Intervals at level {self.level:.0%} (coverage must be within {100 * self.coverage_tolerance:.0f} points):"
        )
        for name, cov, score, width in self.interval_rows():
            lines.append(f"- {name}: coverage {cov} %, interval score {score} bp, mean width {width} bp")
        if self.production_note:
            lines.append(f"Production: {self.production_note}")
        lines.extend(self.notes)
        return "\n".join(lines)


def decide(
    challenger: Scores,
    persistence: Scores,
    *,
    margin: float,
    alpha: float = 0.05,
    level: float = 0.8,
    coverage_tolerance: float = COVERAGE_TOLERANCE,
    production: Scores | None = None,
    vs_production: VsProduction | None = None,
    production_note: str | None = None,
    challenger_version: str | None = None,
    production_version: str | None = None,
    challenger_kind: str | None = None,
    production_kind: str | None = None,
    eval_window: tuple[str, str] | None = None,
) -> Verdict:
    """Apply the gate (module docstring). ``production`` None: no production, or it could not be scored
    (see ``production_note``); with a production, ``vs_production`` holds the paired tests."""

    def verdict(promote: bool, reason: str) -> Verdict:
        return Verdict(
            promote=promote,
            reason=reason,
            challenger_version=challenger_version,
            production_version=production_version,
            margin=margin,
            challenger=challenger,
            persistence=persistence,
            production=production,
            production_note=production_note,
            eval_window=eval_window,
            level=level,
            coverage_tolerance=coverage_tolerance,
            vs_production=vs_production,
            challenger_kind=challenger_kind,
            production_kind=production_kind,
        )

    if challenger.n < MIN_EVAL_POINTS:
        return verdict(False, f"only {challenger.n} evaluation points (need {MIN_EVAL_POINTS})")
    if challenger.coverage is None or challenger.interval_score is None:
        return verdict(False, "has no interval to judge (a model must forecast its uncertainty)")
    if not abs(challenger.coverage - level) <= coverage_tolerance:
        return verdict(
            False,
            f"its {level:.0%} interval covers {challenger.coverage:.1%} of the unseen minutes, more than "
            f"{100 * coverage_tolerance:.0f} points from nominal: not calibrated",
        )
    if not challenger.rmse < persistence.rmse:
        return verdict(False, f"does not beat persistence (RMSE {challenger.rmse:.3f} bp ≥ {persistence.rmse:.3f} bp)")
    p = challenger.pvalue_vs_persistence
    if p is not None and not p < alpha:
        return verdict(
            False,
            f"beats persistence by {1 - challenger.rmse / persistence.rmse:.2%}, but not significantly "
            f"(Diebold-Mariano p = {p:.3f} ≥ {alpha}); indistinguishable from luck",
        )
    if production is None:
        why = production_note or "no production yet"
        return verdict(True, f"beats persistence by {1 - challenger.rmse / persistence.rmse:.2%}; {why}")
    bar = production.rmse * (1 - margin)
    if not challenger.rmse < bar:
        return verdict(
            False,
            f"does not beat the production by the margin (RMSE {challenger.rmse:.3f} bp ≥ {bar:.3f} = "
            f"{production.rmse:.3f} × (1 − {margin}))",
        )
    if vs_production is None:
        return verdict(False, "no paired test against the production was computed; cannot judge significance")
    if not vs_production.point_pvalue < alpha:
        return verdict(
            False,
            f"beats the production's RMSE by {1 - challenger.rmse / production.rmse:.2%}, but not significantly "
            f"(Diebold-Mariano p = {vs_production.point_pvalue:.3f} ≥ {alpha})",
        )
    if production.interval_score is not None:
        if not challenger.interval_score < production.interval_score:
            return verdict(
                False,
                f"its interval score is no better than the production's ({challenger.interval_score:.3f} bp ≥ "
                f"{production.interval_score:.3f} bp)",
            )
        ip = vs_production.interval_pvalue
        if ip is None or not ip < alpha:
            shown = "not computed" if ip is None else f"{ip:.3f} ≥ {alpha}"
            return verdict(
                False,
                f"its interval score beats the production's by "
                f"{1 - challenger.interval_score / production.interval_score:.2%}, but not significantly "
                f"(Diebold-Mariano p {shown})",
            )
    return verdict(
        True,
        f"beats persistence by {1 - challenger.rmse / persistence.rmse:.2%} and the production by "
        f"{1 - challenger.rmse / production.rmse:.2%} (margin {margin:.1%}) on RMSE"
        + (
            f" and by {1 - challenger.interval_score / production.interval_score:.2%} on the interval score"
            if production.interval_score is not None
            else ""
        )
        + f"; coverage {challenger.coverage:.1%}",
    )
