"""The registry's vocabulary: alias and tag names, in one place (nothing else spells them).

Aliases (MLflow stages are deprecated and not used):

* ``production`` — what the endpoint serves; ``previous`` — what it served before (the rollback target);
  ``challenger`` — the latest candidate.

Version tags: where the training data came from, which symbols the model knows, the gate's verdict, when
the version last became production (aliases carry no time in MLflow), and which kind of forecaster it is.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "ALIASES",
    "BASELINE_KIND",
    "CHALLENGER",
    "DATASET_HASH",
    "DATA_WINDOW_END",
    "DATA_WINDOW_START",
    "GIT_COMMIT",
    "LIVE_EVALUATION",
    "MODEL_KIND",
    "PREVIOUS",
    "PRODUCTION",
    "PROMOTED_AT",
    "PROMOTION_VERDICT",
    "ROLLBACK_REASON",
    "SKILL_VS_PERSISTENCE",
    "SYMBOLS",
    "TEST_END",
    "TEST_START",
    "TRAIN_END",
]

PRODUCTION: Final = "production"
CHALLENGER: Final = "challenger"
PREVIOUS: Final = "previous"
ALIASES: Final = (PRODUCTION, PREVIOUS, CHALLENGER)

DATA_WINDOW_START: Final = "data_window_start"
DATA_WINDOW_END: Final = "data_window_end"
TRAIN_END: Final = "train_end"
TEST_START: Final = "test_start"
TEST_END: Final = "test_end"
DATASET_HASH: Final = "dataset_hash"
GIT_COMMIT: Final = "git_commit"
SYMBOLS: Final = "symbols"  # comma-separated symbols the model has scalers for
PROMOTED_AT: Final = "promoted_at"  # when the version last became production (ISO-8601 UTC)
PROMOTION_VERDICT: Final = "promotion_verdict"  # "promote" | "keep_production"
SKILL_VS_PERSISTENCE: Final = "skill_vs_persistence"
MODEL_KIND: Final = "model_kind"  # which forecaster the version is, e.g. "baseline"
BASELINE_KIND: Final = "baseline"  # MODEL_KIND of a baseline version: what a new environment serves first
ROLLBACK_REASON: Final = "rollback_reason"  # on a version live evaluation rolled back: why, with the numbers
LIVE_EVALUATION: Final = "live_evaluation"  # the latest live evaluation of a version, one line
