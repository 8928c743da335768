"""The review worklist of one model on one split: order, filters and progress.

A thin layer over the store's current verdicts and the model's probabilities: which cases a
reviewer sees, in which order, and how far they are. No storage, no TensorFlow, no streamlit.

Order (:func:`order_cases`): cases the model refers to a person first, then the most uncertain,
then by predicted class, and within a class the *incorrect* predictions first when the true
labels are given. ``refer``/``uncertainty`` come from ``core.registry.load_predictor`` (the
Case review page); without them the order is by predicted class. Callers should pass
``truth`` only to viewers allowed to see the ground truth (the order would otherwise reveal which
predictions are wrong).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from core.reviews.store import Verdict, case_key

# What the worklist shows: every case, the ones this reviewer has not judged yet, or the ones
# at least one reviewer disagrees with (their current verdict).
FILTERS: tuple[str, ...] = ("all", "unreviewed", "disagreed")


def order_cases(
    predicted: Sequence[int] | np.ndarray,
    truth: Sequence[int] | np.ndarray | None = None,
    uncertainty: Sequence[float] | np.ndarray | None = None,
    refer: Sequence[bool] | np.ndarray | None = None,
) -> np.ndarray:
    """Sample indices in review order.

    Args:
        predicted: predicted class per case, shape ``(N,)``.
        truth: true class per case, or None when the viewer may not see it / it is unknown.
        uncertainty: higher = less sure, or None; most uncertain first.
        refer: True where the model refers the case to a person, or None; referred first.

    Returns:
        int array of the indices ``0..N-1`` in order (ties by index, so the order is stable).

    Raises:
        ValueError: an array whose length differs from ``predicted``.
    """
    pred = np.asarray(predicted).reshape(-1)
    n = len(pred)
    keys: list[np.ndarray] = [np.arange(n)]  # np.lexsort: the last key is the primary one
    if truth is not None:
        correct = _same_length(truth, n, "truth") == pred
        keys.append(correct.astype(int))  # incorrect (0) before correct (1)
    keys.append(pred)
    if uncertainty is not None:
        keys.append(-_same_length(uncertainty, n, "uncertainty").astype(float))
    if refer is not None:
        keys.append(~_same_length(refer, n, "refer").astype(bool))  # referred (False) first
    return np.lexsort(keys)


def _same_length(values, n: int, name: str) -> np.ndarray:
    arr = np.asarray(values).reshape(-1)
    if len(arr) != n:
        raise ValueError(f"{name} has {len(arr)} values for {n} cases")
    return arr


@dataclass(frozen=True)
class WorkItem:
    """One case of the worklist as the page shows it."""

    index: int
    key: str
    predicted: int
    probability: float
    truth: int | None
    mine: Verdict | None  # this reviewer's current verdict
    others: tuple[Verdict, ...]  # other reviewers' current verdicts

    @property
    def disagreed(self) -> bool:
        """Some reviewer's current verdict on this case is "disagree"."""
        return any(v.verdict == "disagree" for v in (*self.others, self.mine) if v is not None)


@dataclass(frozen=True)
class Worklist:
    """The filtered cases in review order and the reviewer's progress over the whole split."""

    items: tuple[WorkItem, ...]
    total: int
    reviewed: int

    @property
    def progress_text(self) -> str:
        """``"12 of 50 reviewed"`` (this reviewer, every case of the split)."""
        return f"{self.reviewed} of {self.total} reviewed"

    def position(self, index: int | None) -> int:
        """Where sample ``index`` is in ``items``; 0 when it is not there (filtered out)."""
        for pos, item in enumerate(self.items):
            if item.index == index:
                return pos
        return 0

    def neighbour(self, index: int, step: int) -> int | None:
        """The sample ``step`` places after (or before) ``index`` in the list, or None."""
        if not self.items:
            return None
        pos = self.position(index) + step
        return self.items[pos].index if 0 <= pos < len(self.items) else None


def build_worklist(
    probs: np.ndarray,
    split: str,
    reviewer: str,
    current: Mapping[tuple[str, str], Verdict],
    *,
    truth: Sequence[int] | np.ndarray | None = None,
    show: str = "all",
    predicted_class: int | None = None,
    uncertainty: Sequence[float] | np.ndarray | None = None,
    refer: Sequence[bool] | np.ndarray | None = None,
) -> Worklist:
    """The worklist of one run on one split for one reviewer.

    Args:
        probs: the model's class probabilities, ``(N, classes)``.
        split: the split the cases come from (part of each case key).
        reviewer: whose progress and "unreviewed" cases to count.
        current: the store's current verdicts of this run (``ReviewStore.latest``).
        truth: true classes, or None (hidden from this viewer, or unknown).
        show: one of :data:`FILTERS`.
        predicted_class: only cases predicted as this class; None for all classes.
        uncertainty: optional per-case uncertainty (see :func:`order_cases`).
        refer: optional per-case refer flags.

    Returns:
        The :class:`Worklist`.

    Raises:
        ValueError: ``show`` not in :data:`FILTERS`, or arrays of different lengths.
    """
    if show not in FILTERS:
        raise ValueError(f"filter {show!r} is not one of {FILTERS}")
    probs = np.asarray(probs, dtype=float)
    predicted = probs.argmax(axis=1)
    truth_arr = None if truth is None else _same_length(truth, len(probs), "truth").astype(int)
    by_case: dict[str, list[Verdict]] = {}
    for (_who, key), verdict in current.items():
        by_case.setdefault(key, []).append(verdict)
    items = []
    reviewed = 0
    for i in order_cases(predicted, truth_arr, uncertainty, refer):
        i = int(i)
        key = case_key(split, i)
        verdicts = by_case.get(key, [])
        mine = next((v for v in verdicts if v.reviewer == reviewer), None)
        reviewed += mine is not None
        item = WorkItem(
            index=i,
            key=key,
            predicted=int(predicted[i]),
            probability=float(probs[i, predicted[i]]),
            truth=None if truth_arr is None else int(truth_arr[i]),
            mine=mine,
            others=tuple(v for v in verdicts if v.reviewer != reviewer),
        )
        if predicted_class is not None and item.predicted != predicted_class:
            continue
        if show == "unreviewed" and mine is not None:
            continue
        if show == "disagreed" and not item.disagreed:
            continue
        items.append(item)
    return Worklist(items=tuple(items), total=len(probs), reviewed=reviewed)
