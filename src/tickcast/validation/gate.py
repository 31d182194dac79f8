"""The promotion gate: may the challenger replace the champion? Pure logic, no MLflow calls.

Rule (ARCHITECTURE, "Promotion"): on the same most-recent held-out window, each model scored with its
OWN preprocessing, the challenger is promoted only if

1. it beats persistence ("next close = last close"): RMSE_challenger < RMSE_persistence, significantly
   (one-sided Diebold-Mariano test on squared errors, p < alpha — on a random walk a model "beats"
   persistence by luck about half the time), and
2. it beats the champion by the configured margin: RMSE_challenger < RMSE_champion × (1 − margin).

The window must be unseen by BOTH models: the champion is scored only on minutes after the end of its
own training data, so it is never judged on data it has learnt. When there is no champion, or the
champion cannot be scored (its artifacts do not load, or too few unseen minutes remain), the
challenger is judged against persistence alone and the reason is recorded in the verdict.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

MIN_EVAL_POINTS = 50


@dataclass(frozen=True)
class Scores:
    """Errors of one forecaster on the evaluation window (``rmse`` in basis points of the last close)."""

    rmse: float
    mae: float
    mape: float
    directional_accuracy: float
    n: int
    pvalue_vs_persistence: float | None = None  # Diebold-Mariano, one-sided: is it better than persistence?

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Scores:
        return cls(
            rmse=float(d["rmse"]),
            mae=float(d["mae"]),
            mape=float(d["mape"]),
            directional_accuracy=float(d["directional_accuracy"]),
            n=int(d["n"]),
        )


@dataclass(frozen=True)
class Verdict:
    promote: bool
    reason: str
    challenger_version: str | None
    champion_version: str | None
    margin: float
    challenger: Scores
    persistence: Scores
    champion: Scores | None = None
    champion_note: str | None = None
    eval_window: tuple[str, str] | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def skill(self) -> float:
        """1 − RMSE_challenger / RMSE_persistence (> 0: better than persistence)."""
        return 1.0 - self.challenger.rmse / self.persistence.rmse if self.persistence.rmse > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["skill"] = self.skill
        return d

    def table_rows(self) -> list[tuple[str, str, str, str, str, str]]:
        """(forecaster, RMSE, MAE, MAPE %, direction %, n) rows for a comparison table."""
        rows = [("challenger" + (f" v{self.challenger_version}" if self.challenger_version else ""), self.challenger)]
        if self.champion is not None:
            rows.append((f"champion v{self.champion_version}", self.champion))
        rows.append(("persistence", self.persistence))
        return [
            (name, f"{s.rmse:.3f}", f"{s.mae:.5f}", f"{s.mape:.4f}", f"{100 * s.directional_accuracy:.1f}", str(s.n))
            for name, s in rows
        ]

    def description(self) -> str:
        """Text for the model version's description in the registry."""
        lines = [f"Promotion verdict: {'PROMOTE' if self.promote else 'KEEP CHAMPION'} — {self.reason}"]
        if self.eval_window:
            lines.append(f"Evaluation window (unseen by both): {self.eval_window[0]} .. {self.eval_window[1]}")
        lines.append(f"Margin: {self.margin:.3f}; skill vs persistence: {self.skill:+.4f}")
        if self.challenger.pvalue_vs_persistence is not None:
            lines.append(
                f"Diebold-Mariano p-value, challenger vs persistence: {self.challenger.pvalue_vs_persistence:.4f}"
            )
        for name, rmse, mae, mape, direction, n in self.table_rows():
            lines.append(f"- {name}: RMSE {rmse} bp, MAE {mae}, MAPE {mape} %, direction {direction} %, n {n}")
        if self.champion_note:
            lines.append(f"Champion: {self.champion_note}")
        lines.extend(self.notes)
        return "\n".join(lines)


def decide(
    challenger: Scores,
    persistence: Scores,
    *,
    margin: float,
    alpha: float = 0.05,
    champion: Scores | None = None,
    champion_note: str | None = None,
    challenger_version: str | None = None,
    champion_version: str | None = None,
    eval_window: tuple[str, str] | None = None,
) -> Verdict:
    """Apply the gate. ``champion`` None means: no champion, or it could not be scored (see ``champion_note``)."""

    def verdict(promote: bool, reason: str) -> Verdict:
        return Verdict(
            promote=promote,
            reason=reason,
            challenger_version=challenger_version,
            champion_version=champion_version,
            margin=margin,
            challenger=challenger,
            persistence=persistence,
            champion=champion,
            champion_note=champion_note,
            eval_window=eval_window,
        )

    if challenger.n < MIN_EVAL_POINTS:
        return verdict(False, f"only {challenger.n} evaluation points (need {MIN_EVAL_POINTS})")
    if not challenger.rmse < persistence.rmse:
        return verdict(False, f"does not beat persistence (RMSE {challenger.rmse:.3f} bp ≥ {persistence.rmse:.3f} bp)")
    p = challenger.pvalue_vs_persistence
    if p is not None and not p < alpha:
        return verdict(
            False,
            f"beats persistence by {1 - challenger.rmse / persistence.rmse:.2%}, but not significantly "
            f"(Diebold-Mariano p = {p:.3f} ≥ {alpha}); indistinguishable from luck",
        )
    if champion is None:
        why = champion_note or "no champion yet"
        return verdict(True, f"beats persistence by {1 - challenger.rmse / persistence.rmse:.2%}; {why}")
    bar = champion.rmse * (1 - margin)
    if not challenger.rmse < bar:
        return verdict(
            False,
            f"does not beat the champion by the margin (RMSE {challenger.rmse:.3f} bp ≥ {bar:.3f} = "
            f"{champion.rmse:.3f} × (1 − {margin}))",
        )
    return verdict(
        True,
        f"beats persistence by {1 - challenger.rmse / persistence.rmse:.2%} and the champion by "
        f"{1 - challenger.rmse / champion.rmse:.2%} (margin {margin:.1%})",
    )
