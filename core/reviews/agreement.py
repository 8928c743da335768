"""How far reviewers agree with the model and with each other (Cohen's kappa, scikit-learn).

Input: current verdicts (``ReviewStore.latest``). A reviewer's label for a case is the model's
prediction when they agree and their corrected label when they disagree; "unsure" verdicts
carry no label and are left out of every figure here.

Kappa is None (not NaN) when it is undefined: fewer than two labelled cases, or both raters
giving one single class (scikit-learn then divides 0 by 0).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from core.reviews.store import Verdict


@dataclass(frozen=True)
class Agreement:
    """Agreement of two raters over the cases both labelled."""

    a: str
    b: str
    n: int  # cases both labelled
    accuracy: float | None  # share of those cases with the same label
    kappa: float | None


def kappa(labels_a: Iterable[int], labels_b: Iterable[int]) -> float | None:
    """Cohen's kappa of two label lists (``sklearn.metrics.cohen_kappa_score``), None if undefined.

    Raises:
        ValueError: lists of different lengths.
    """
    a, b = list(labels_a), list(labels_b)
    if len(a) != len(b):
        raise ValueError(f"label lists differ in length: {len(a)} vs {len(b)}")
    if len(a) < 2 or len(set(a) | set(b)) < 2:
        return None
    from sklearn.metrics import cohen_kappa_score

    value = float(cohen_kappa_score(a, b))
    return value if math.isfinite(value) else None


def _agreement(a: str, b: str, pairs: list[tuple[int, int]]) -> Agreement:
    if not pairs:
        return Agreement(a, b, 0, None, None)
    first, second = zip(*pairs, strict=True)
    same = sum(x == y for x, y in pairs) / len(pairs)
    return Agreement(a, b, len(pairs), same, kappa(first, second))


def model_vs_reviewers(current: Mapping[tuple[str, str], Verdict]) -> list[Agreement]:
    """The model against each reviewer (``a="model"``), then against all reviewers pooled.

    Returns:
        One :class:`Agreement` per reviewer (sorted by name) and a last one with
        ``b="all reviewers"``; ``accuracy`` is the share of cases where the reviewer agreed.
    """
    per: dict[str, list[tuple[int, int]]] = {}
    for (who, _key), verdict in current.items():
        label = verdict.reviewer_label
        if label is not None:
            per.setdefault(who, []).append((verdict.predicted, label))
    out = [_agreement("model", who, pairs) for who, pairs in sorted(per.items())]
    pooled = [pair for pairs in per.values() for pair in pairs]
    out.append(_agreement("model", "all reviewers", pooled))
    return out


def reviewer_pairs(current: Mapping[tuple[str, str], Verdict]) -> list[Agreement]:
    """Each pair of reviewers over the cases both labelled (pairs with no shared case left out)."""
    labels: dict[str, dict[str, int]] = {}
    for (who, key), verdict in current.items():
        label = verdict.reviewer_label
        if label is not None:
            labels.setdefault(who, {})[key] = label
    out = []
    for a, b in itertools.combinations(sorted(labels), 2):
        shared = sorted(set(labels[a]) & set(labels[b]))
        if shared:
            out.append(_agreement(a, b, [(labels[a][k], labels[b][k]) for k in shared]))
    return out


def corrected_labels(current: Mapping[tuple[str, str], Verdict]) -> dict[str, dict]:
    """Cases some reviewer corrected: ``{case_key: {"labels": {reviewer: label}, "ids": [...]}}``.

    What a retraining job with corrected labels would read (it records the row ids it used).
    """
    out: dict[str, dict] = {}
    for (who, key), verdict in sorted(current.items()):
        if verdict.verdict == "disagree" and verdict.corrected_label is not None:
            entry = out.setdefault(key, {"labels": {}, "ids": []})
            entry["labels"][who] = verdict.corrected_label
            entry["ids"].append(verdict.id)
    return out
