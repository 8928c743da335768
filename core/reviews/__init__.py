"""Case review: clinicians' verdicts on model predictions, their audit trail and exports.

Modules, each importing only those before it: ``store`` (append-only SQLite table of verdicts,
:class:`ReviewStore`), ``worklist`` (order, filters, progress), ``agreement`` (model vs reviewer
and reviewer vs reviewer, Cohen's kappa), ``export`` (CSV with formula escaping, per-case PDF),
``retrain`` (a training job with the corrected train/val labels).
This package re-exports the names a page needs. No TensorFlow, no streamlit.
"""

from core.reviews.agreement import (
    Agreement,
    corrected_labels,
    kappa,
    model_vs_reviewers,
    reviewer_pairs,
)
from core.reviews.export import case_report_pdf, csv_bytes, escape_cell, report_panels
from core.reviews.retrain import (
    NothingToRetrainError,
    RetrainPlan,
    queue_retraining,
    retraining_plan,
)
from core.reviews.store import (
    MAX_NOTE_CHARS,
    VERDICTS,
    ReviewStore,
    ReviewStoreError,
    Verdict,
    case_key,
    current_verdicts,
    validate_reviewer,
)
from core.reviews.worklist import FILTERS, WorkItem, Worklist, build_worklist, order_cases

__all__ = [
    "FILTERS",
    "MAX_NOTE_CHARS",
    "NothingToRetrainError",
    "RetrainPlan",
    "VERDICTS",
    "Agreement",
    "ReviewStore",
    "ReviewStoreError",
    "Verdict",
    "WorkItem",
    "Worklist",
    "build_worklist",
    "case_key",
    "case_report_pdf",
    "corrected_labels",
    "csv_bytes",
    "current_verdicts",
    "escape_cell",
    "kappa",
    "model_vs_reviewers",
    "order_cases",
    "queue_retraining",
    "retraining_plan",
    "report_panels",
    "reviewer_pairs",
    "validate_reviewer",
]
