"""A retraining job that uses reviewers' corrected labels (researchers, from the Case review page).

The job is the reviewed run's recipe (``TrainConfig`` fields of its ``config.json``) with
``label_overrides``: the corrected label of every *train* or *val* sample some reviewer
disagreed with, and the review row ids they came from, so the new run's ``config.json`` says
which verdicts it was trained on. Corrections on the *test* split are never used (the test split
measures the model; training on its corrected labels would score the model on answers it was
taught); cases where reviewers gave different corrected labels are left out too.

No TensorFlow, no streamlit; :func:`queue_retraining` imports ``core.jobs`` inside the function.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from core import config
from core.reviews.agreement import corrected_labels
from core.reviews.store import Verdict


class NothingToRetrainError(ValueError):
    """No usable train/val correction: the message has numbered next steps."""


@dataclass(frozen=True)
class RetrainPlan:
    """What a retraining job would use.

    Attributes:
        params: job parameters (``TrainConfig`` fields, ``label_overrides`` included).
        review_ids: the review rows whose corrected labels the job uses.
        counts: corrected samples per split, ``{"train": n, "val": n}``.
        refused_test: test-split cases with a correction, left out (never trained on).
        conflicts: case keys where reviewers gave different corrected labels (left out).
    """

    params: dict[str, Any]
    review_ids: tuple[int, ...]
    counts: dict[str, int]
    refused_test: int
    conflicts: tuple[str, ...]

    @property
    def summary(self) -> str:
        """One plain sentence for the page."""
        parts = [f"{n} {split}" for split, n in self.counts.items() if n]
        text = f"{' and '.join(parts)} corrected labels (review records {_ids(self.review_ids)})"
        if self.refused_test:
            text += f"; {self.refused_test} test-split corrections left out (never trained on)"
        if self.conflicts:
            text += f"; {len(self.conflicts)} cases left out where reviewers gave different labels"
        return text


def _ids(ids: tuple[int, ...]) -> str:
    return ", ".join(f"#{i}" for i in ids[:8]) + (
        f" and {len(ids) - 8} more" if len(ids) > 8 else ""
    )


def _recipe(run_config: Mapping[str, Any]) -> dict[str, Any]:
    """The run's ``TrainConfig`` fields; a new name is generated, old overrides are replaced."""
    fields = {f.name for f in dataclasses.fields(config.TrainConfig)}
    return {
        k: v
        for k, v in run_config.items()
        if k in fields and k not in ("name", "label_overrides") and v is not None
    }


def retraining_plan(
    run_config: Mapping[str, Any], current: Mapping[tuple[str, str], Verdict]
) -> RetrainPlan:
    """The job parameters for retraining a run with its reviewers' corrected labels.

    Args:
        run_config: the reviewed run's ``config.json``.
        current: current verdicts on that run, every split (``ReviewStore.latest(run=...)``).

    Returns:
        The :class:`RetrainPlan`.

    Raises:
        NothingToRetrainError: no train/val case has a correction all its reviewers agree on
            (test-split corrections alone are refused).
    """
    dataset = run_config.get("dataset")
    overrides: dict[str, dict[str, int]] = {s: {} for s in config.OVERRIDE_SPLITS}
    ids: list[int] = []
    refused_test = 0
    conflicts = []
    for key, entry in sorted(corrected_labels(current).items()):
        split, _, index = key.partition(":")
        if split == "test":
            refused_test += 1
            continue
        if split not in overrides:  # an upload ("sha256:..."): not a sample of the data file
            continue
        verdicts = [v for (_who, k), v in current.items() if k == key and v.id in set(entry["ids"])]
        if any(v.dataset != dataset for v in verdicts):
            continue  # recorded on another dataset's file: its indices mean other images
        labels = set(entry["labels"].values())
        if len(labels) > 1:
            conflicts.append(key)
            continue
        overrides[split][index] = int(labels.pop())
        ids += entry["ids"]
    counts = {split: len(v) for split, v in overrides.items()}
    if not ids:
        reason = (
            f"the {refused_test} corrections on this model are all on the test split, which is "
            "never trained on (it measures the model)"
            if refused_test
            else "no reviewer has disagreed with a train or val prediction of this model yet"
        )
        if conflicts:
            reason += f"; {len(conflicts)} cases have conflicting corrected labels"
        raise NothingToRetrainError(
            f"Nothing was queued: {reason}.\n"
            "1. Pick the train or val split in the sidebar and record Disagree verdicts with "
            "the correct label.\n"
            "2. Press the retraining button again."
        )
    params = {
        **_recipe(run_config),
        "label_overrides": {
            **{s: v for s, v in overrides.items() if v},
            "review_ids": sorted(set(ids)),
        },
    }
    return RetrainPlan(params, tuple(sorted(set(ids))), counts, refused_test, tuple(conflicts))


def queue_retraining(
    run_config: Mapping[str, Any],
    current: Mapping[tuple[str, str], Verdict],
    submitted_by: str | None = None,
    jobs_store: Any = None,
) -> tuple[int, RetrainPlan]:
    """Queue the job of :func:`retraining_plan` (validated by ``core.jobs.submit_job``).

    Returns:
        ``(job id, plan)``.

    Raises:
        NothingToRetrainError: see :func:`retraining_plan`.
        core.jobs.InvalidParamsError: the run's recipe is not a valid job any more.
        core.jobs.JobStoreError: the job database cannot be written.
    """
    from core import jobs

    plan = retraining_plan(run_config, current)
    job_id = jobs.submit_job(plan.params, submitted_by=submitted_by, store=jobs_store)
    return job_id, plan
