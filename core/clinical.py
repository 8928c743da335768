"""The metrics clinicians read: kappa, referable disease, sensitivity/specificity, warnings.

Everything a threshold or decision rule needs is chosen on the **validation** split and only
*applied* to the test split; the test split never chooses anything. The one curve summary
read off the test ROC (sensitivity at 90 % specificity) is labelled as such.

* Ordinal tasks (RetinaMNIST, the diabetic-retinopathy scale 0-4): quadratic weighted kappa
  (disagreements cost the square of the grade distance, the usual DR-grading agreement score);
  *referable DR* = grade ≥ 2 (moderate non-proliferative DR or worse), scored by
  P(grade ≥ 2) = the sum of the probabilities of grades 2..4.
* Binary tasks: an operating point (a probability threshold) chosen on val by Youden's J
  (sensitivity + specificity - 1, which weighs a missed case and a false alarm equally), with
  its sensitivity and specificity on test.
* Every single-label task: per-class sensitivity (recall) and specificity one-vs-rest at the
  shipped decision rule, and a warning list of classes whose recall is below 0.2 (e.g. a grade
  the model never predicts).

No TensorFlow, no Streamlit (scikit-learn only); ``core.evaluation`` stays the home of the
official MedMNIST AUC/ACC, this module adds the ``clinical`` key of ``evaluation.json``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from core.info import MULTI_LABEL

ORDINAL = "ordinal-regression"
BINARY = "binary-class"
# Datasets whose ordinal scale has a clinical referral cut-off: the first referable grade and
# its plain-language name. RetinaMNIST follows the international DR scale (0 no DR, 1 mild,
# 2 moderate NPDR, 3 severe NPDR, 4 proliferative): grade ≥ 2 is "referable DR".
REFERABLE: dict[str, tuple[int, str]] = {
    "retinamnist": (2, "referable DR (grade ≥ 2: moderate NPDR or worse)"),
}
LOW_RECALL = 0.2
TARGET_SPECIFICITY = 0.90
OPERATING_RULES = ("youden", "specificity")


def _labels_1d(y_true: np.ndarray) -> np.ndarray:
    return np.asarray(y_true).reshape(len(y_true), -1)[:, 0].astype(np.int64)


def quadratic_kappa(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> float:
    """Cohen's kappa with quadratic weights (scikit-learn), over all ``n_classes`` grades.

    Args:
        y_true: true grades ``(N,)`` or ``(N, 1)``.
        y_pred: predicted grades ``(N,)``.
        n_classes: number of grades, so a grade nobody predicted still counts.

    Returns:
        Kappa in [-1, 1] (1 = perfect agreement, 0 = chance level). 0.0 when it is undefined
        (every label and prediction the same grade).
    """
    from sklearn.metrics import cohen_kappa_score

    yt, yp = _labels_1d(y_true), np.asarray(y_pred).ravel().astype(np.int64)
    if len(np.unique(np.concatenate([yt, yp]))) < 2:
        return 0.0
    return float(cohen_kappa_score(yt, yp, labels=list(range(n_classes)), weights="quadratic"))


def per_class_rates(
    y_true: np.ndarray, y_pred: np.ndarray, labels: list[str]
) -> list[dict[str, Any]]:
    """One-vs-rest sensitivity (recall) and specificity of each class at a decision rule.

    Args:
        y_true: true classes ``(N,)`` or ``(N, 1)``.
        y_pred: predicted classes ``(N,)``.
        labels: class names by index.

    Returns:
        ``[{"label", "support", "predicted", "sensitivity", "specificity"}]`` in class order;
        sensitivity is None for a class absent from ``y_true``, specificity None when every
        sample is that class.
    """
    yt, yp = _labels_1d(y_true), np.asarray(y_pred).ravel().astype(np.int64)
    rows = []
    for k, name in enumerate(labels):
        pos, hit = yt == k, yp == k
        n_pos, n_neg = int(pos.sum()), int((~pos).sum())
        rows.append(
            {
                "label": name,
                "support": n_pos,
                "predicted": int(hit.sum()),
                "sensitivity": float((hit & pos).sum() / n_pos) if n_pos else None,
                "specificity": float((~hit & ~pos).sum() / n_neg) if n_neg else None,
            }
        )
    return rows


def low_recall_warnings(
    rows: list[dict[str, Any]], threshold: float = LOW_RECALL
) -> list[dict[str, Any]]:
    """The classes of :func:`per_class_rates` whose sensitivity is below ``threshold``.

    Returns:
        ``[{"label", "recall", "support", "message"}]``; the message is plain language for the
        app and the report ("Proliferative DR: found 0 of 20 (recall 0.00)...").
    """
    out = []
    for row in rows:
        sens = row.get("sensitivity")
        if sens is None or sens >= threshold:
            continue
        found = round(sens * row["support"])
        out.append(
            {
                "label": row["label"],
                "recall": sens,
                "support": row["support"],
                "message": (
                    f"{row['label']}: the model found {found} of {row['support']} cases "
                    f"(recall {sens:.2f}, below {threshold:.2f}); do not rely on it to "
                    "detect this class"
                ),
            }
        )
    return out


def rates_at(y_true: np.ndarray, score: np.ndarray, threshold: float) -> dict[str, float | None]:
    """Sensitivity and specificity of ``score >= threshold`` against binary truth.

    Args:
        y_true: 0/1 truth ``(N,)``.
        score: a score that is higher for positives ``(N,)``.
        threshold: the cut-off; ``score >= threshold`` is called positive.

    Returns:
        ``{"threshold", "sensitivity", "specificity", "ppv"}`` (None where undefined).
    """
    yt = np.asarray(y_true).ravel().astype(bool)
    call = np.asarray(score, dtype=np.float64).ravel() >= threshold
    n_pos, n_neg, n_call = int(yt.sum()), int((~yt).sum()), int(call.sum())
    return {
        "threshold": float(threshold),
        "sensitivity": float((call & yt).sum() / n_pos) if n_pos else None,
        "specificity": float((~call & ~yt).sum() / n_neg) if n_neg else None,
        "ppv": float((call & yt).sum() / n_call) if n_call else None,
    }


def _roc(y_true: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.metrics import roc_curve

    # every threshold kept: drop_intermediate may remove the exact point a target falls on
    fpr, tpr, thr = roc_curve(
        np.asarray(y_true).ravel().astype(int), np.asarray(score).ravel(), drop_intermediate=False
    )
    return fpr, tpr, thr


def sensitivity_at_specificity(
    y_true: np.ndarray, score: np.ndarray, specificity: float = TARGET_SPECIFICITY
) -> dict[str, float]:
    """The highest sensitivity any threshold reaches with at least ``specificity``.

    A summary of one ROC curve (read off the split it is given), not an operating point.

    Returns:
        ``{"specificity_target", "sensitivity", "specificity", "threshold"}`` of that point.
    """
    fpr, tpr, thr = _roc(y_true, score)
    ok = np.flatnonzero(fpr <= 1.0 - specificity + 1e-12)
    best = ok[np.argmax(tpr[ok])]  # fpr = 0 at thresholds[0] (inf), so ``ok`` is never empty
    return {
        "specificity_target": float(specificity),
        "sensitivity": float(tpr[best]),
        "specificity": float(1.0 - fpr[best]),
        "threshold": float(min(thr[best], np.finfo(np.float64).max)),
    }


def choose_threshold(
    y_true: np.ndarray,
    score: np.ndarray,
    rule: str = "youden",
    specificity: float = TARGET_SPECIFICITY,
) -> float:
    """A decision threshold chosen on one split (call it with the validation split).

    Args:
        y_true: 0/1 truth.
        score: higher = more likely positive.
        rule: ``"youden"`` (maximise sensitivity + specificity - 1) or ``"specificity"`` (the
            most sensitive threshold that keeps ``specificity`` on this split).
        specificity: the target for ``rule="specificity"``.

    Returns:
        The threshold (``score >= threshold`` is positive); the midpoint to the next lower
        score, so a test score equal to a validation score is not decided by float noise.

    Raises:
        ValueError: unknown rule, or ``y_true`` holds only one class.
    """
    if rule not in OPERATING_RULES:
        raise ValueError(f"unknown operating rule {rule!r}; expected one of {OPERATING_RULES}")
    yt = np.asarray(y_true).ravel().astype(int)
    if yt.min() == yt.max():
        raise ValueError("choosing a threshold needs both classes in the labels")
    fpr, tpr, thr = _roc(yt, score)
    if rule == "youden":
        best = int(np.argmax(tpr - fpr))
    else:
        ok = np.flatnonzero(fpr <= 1.0 - specificity + 1e-12)
        best = int(ok[np.argmax(tpr[ok])])
    if not np.isfinite(thr[best]):  # the "call nothing positive" point
        return float(np.max(score)) + 1e-9
    lower = thr[best + 1] if best + 1 < len(thr) else thr[best] - 1e-6
    return float((thr[best] + lower) / 2.0)


def operating_point(
    val_true: np.ndarray,
    val_score: np.ndarray,
    test_true: np.ndarray,
    test_score: np.ndarray,
    rule: str = "youden",
    specificity: float = TARGET_SPECIFICITY,
) -> dict[str, Any]:
    """A threshold chosen on val and its sensitivity/specificity on val and test.

    Returns:
        ``{"rule", "chosen_on": "val", "threshold", "val": rates, "test": rates}`` with rates
        as in :func:`rates_at`.
    """
    thr = choose_threshold(val_true, val_score, rule, specificity)
    out: dict[str, Any] = {"rule": rule, "chosen_on": "val", "threshold": thr}
    if rule == "specificity":
        out["specificity_target"] = float(specificity)
    out["val"] = rates_at(val_true, val_score, thr)
    out["test"] = rates_at(test_true, test_score, thr)
    return out


def referable_score(y_score: np.ndarray, first_grade: int) -> np.ndarray:
    """P(grade ≥ ``first_grade``): the summed probabilities of the referable grades."""
    return np.asarray(y_score, dtype=np.float64)[:, first_grade:].sum(axis=1)


def referable_metrics(
    dataset: str,
    test_true: np.ndarray,
    test_score: np.ndarray,
    val_true: np.ndarray | None = None,
    val_score: np.ndarray | None = None,
) -> dict[str, Any] | None:
    """Referable-disease AUC, sensitivity at 90 % specificity and a val-chosen operating point.

    Returns:
        None for datasets without a referral cut-off (see :data:`REFERABLE`), else
        ``{"name", "first_grade", "auc", "prevalence", "sens_at_spec90" (test ROC summary),
        "operating_point" (threshold for ≥ 90 % specificity chosen on val, when val is given)}``.
    """
    from sklearn.metrics import roc_auc_score

    if dataset not in REFERABLE:
        return None
    grade, name = REFERABLE[dataset]
    truth = _labels_1d(test_true) >= grade
    score = referable_score(test_score, grade)
    out: dict[str, Any] = {
        "name": name,
        "first_grade": grade,
        "prevalence": float(truth.mean()),
        "auc": float(roc_auc_score(truth, score)) if 0 < truth.sum() < len(truth) else None,
        "sens_at_spec90": sensitivity_at_specificity(truth, score, TARGET_SPECIFICITY),
    }
    if val_true is not None and val_score is not None:
        out["operating_point"] = operating_point(
            _labels_1d(val_true) >= grade,
            referable_score(val_score, grade),
            truth,
            score,
            rule="specificity",
        )
    return out


def ordinal_rule_report(
    y_true: np.ndarray,
    y_score: np.ndarray,
    val_true: np.ndarray,
    val_score: np.ndarray,
    labels: list[str] | None = None,
) -> dict[str, Any]:
    """The decision rule ``core.ordinal.choose_rule`` picks on val, and what it gives on test.

    Returns:
        ``{"rule", "cuts", "chosen_on": "val", "val_acc": {rule: acc}, "test": {"acc",
        "kappa_quadratic", "per_class"}}``; with rule "argmax" the test figures equal the
        official ones.
    """
    from core import ordinal

    chosen = ordinal.choose_rule(val_true, val_score)
    pred = ordinal.predict_grades(y_score, chosen["rule"], chosen["cuts"])
    k = np.asarray(y_score).shape[1]
    yt = _labels_1d(y_true)
    return {
        "rule": chosen["rule"],
        "cuts": chosen["cuts"],
        "chosen_on": "val",
        "val_acc": chosen["val_acc"],
        "test": {
            "acc": float(np.mean(pred == yt)),
            "kappa_quadratic": quadratic_kappa(yt, pred, k),
            "per_class": per_class_rates(yt, pred, labels or [str(i) for i in range(k)]),
        },
    }


def clinical_report(
    y_true: np.ndarray,
    y_score: np.ndarray,
    task: str,
    labels: list[str],
    dataset: str,
    val_true: np.ndarray | None = None,
    val_score: np.ndarray | None = None,
    y_pred: np.ndarray | None = None,
    decision_rule: str = "argmax",
) -> dict[str, Any]:
    """The ``clinical`` block of ``evaluation.json`` for one run on the test split.

    Args:
        y_true: test labels ``(N, 1)``.
        y_score: test probabilities ``(N, classes)``.
        task: ``core.info.task(dataset)``.
        labels: class names by index.
        dataset: MedMNIST flag (decides the referral cut-off).
        val_true, val_score: the validation split, which chooses every threshold; without it
            the val-chosen operating points are left out.
        y_pred: the test classes the shipped decision rule gives (default argmax, the official
            MedMNIST rule).
        decision_rule: the name of that rule, stored beside the figures.

    Returns:
        ``{"decision_rule", "per_class", "low_recall", "kappa_quadratic" (ordinal),
        "ordinal_rule" (ordinal, with val: :func:`ordinal_rule_report`), "referable" (datasets
        in REFERABLE), "operating_point" (binary)}``; an empty dict for
        multi-label tasks, whose per-label figures ``core.evaluation.report`` already holds.
    """
    if task == MULTI_LABEL:
        return {}
    scores = np.asarray(y_score, dtype=np.float64)
    pred = np.argmax(scores, axis=1) if y_pred is None else np.asarray(y_pred).ravel()
    rows = per_class_rates(y_true, pred, labels)
    out: dict[str, Any] = {
        "decision_rule": decision_rule,
        "per_class": rows,
        "low_recall_threshold": LOW_RECALL,
        "low_recall": low_recall_warnings(rows),
    }
    if task == ORDINAL:
        out["kappa_quadratic"] = quadratic_kappa(y_true, pred, len(labels))
        if val_true is not None and val_score is not None:
            out["ordinal_rule"] = ordinal_rule_report(y_true, scores, val_true, val_score, labels)
        referable = referable_metrics(dataset, y_true, scores, val_true, val_score)
        if referable is not None:
            out["referable"] = referable
    if task == BINARY and val_true is not None and val_score is not None:
        out["operating_point"] = operating_point(
            _labels_1d(val_true),
            np.asarray(val_score)[:, -1],
            _labels_1d(y_true),
            scores[:, -1],
            rule="youden",
        )
    return out


def summary_lines(block: dict[str, Any]) -> list[str]:
    """One line per figure of a :func:`clinical_report` block, for CLIs and logs."""
    lines = []
    if block.get("kappa_quadratic") is not None:
        lines.append(f"quadratic weighted kappa {block['kappa_quadratic']:.4f}")
    rule = block.get("ordinal_rule")
    if rule:
        lines.append(
            f"decision rule chosen on val: {rule['rule']} (val ACC "
            + ", ".join(f"{k} {v:.3f}" for k, v in rule["val_acc"].items())
            + f"); test ACC {rule['test']['acc']:.4f}, kappa {rule['test']['kappa_quadratic']:.4f}"
        )
    ref = block.get("referable")
    if ref:
        s90 = ref["sens_at_spec90"]
        lines.append(
            f"{ref['name']}: AUC {ref['auc']:.4f}, sensitivity {s90['sensitivity']:.3f} at "
            f"specificity ≥ 0.90 (test ROC)"
        )
        op = ref.get("operating_point")
        if op:
            lines.append(_op_line("referral threshold for ≥ 90 % specificity", op))
    if block.get("operating_point"):
        lines.append(_op_line("operating point (Youden's J)", block["operating_point"]))
    for row in block.get("per_class") or []:
        sens, spec = row["sensitivity"], row["specificity"]
        lines.append(
            f"  {row['label']}: sensitivity {_fmt(sens)}, specificity {_fmt(spec)} "
            f"(n={row['support']}, predicted {row['predicted']})"
        )
    lines.extend(f"WARNING {w['message']}" for w in block.get("low_recall") or [])
    return lines


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _op_line(what: str, op: dict[str, Any]) -> str:
    t = op["test"]
    return (
        f"{what} {op['threshold']:.3f} chosen on val: test sensitivity "
        f"{_fmt(t['sensitivity'])}, specificity {_fmt(t['specificity'])}"
    )


def decision_by_rule(
    block: dict[str, Any] | None, raw_proba: np.ndarray, labels: list[str]
) -> tuple[int, str] | None:
    """The class a run's validation-chosen rule gives one image, when that rule is not argmax.

    Two rules are chosen on the validation split and stored in ``evaluation.json``'s
    ``clinical`` block (:func:`clinical_report`): the ordinal rule of graded datasets
    (``ordinal_rule``) and, for binary tasks, the operating point (``operating_point``: positive
    when the positive class's probability is at least the threshold). Both were fitted on the
    model's raw softmax, so they read the raw output, not the calibrated one.

    Args:
        block: ``evaluation.json``'s ``clinical`` block (None or {} when absent).
        raw_proba: the model's raw probabilities for one image ``(classes,)``.
        labels: class names by index (names the positive class in the rule text).

    Returns:
        ``(class index, plain description of the rule)``, or None when the run has no such
        rule or it is argmax.

    Example::

        >>> block = {"operating_point": {"threshold": 0.09, "rule": "youden", "chosen_on": "val"}}
        >>> decision_by_rule(block, np.array([0.85, 0.15]), ["normal", "hyperplasia"])[0]
        1
    """
    from core import ordinal  # ordinal reads no clinical code; imported here to keep it light

    block = block or {}
    raw = np.asarray(raw_proba, dtype=np.float64).ravel()
    rule = block.get("ordinal_rule") or {}
    if rule.get("rule") not in (None, "argmax"):
        grade = int(ordinal.predict_grades(raw[None], rule["rule"], rule.get("cuts"))[0])
        name = (
            "cut points on the expected grade" if rule["rule"] == "cutpoints" else "expected grade"
        )
        return grade, name
    op = block.get("operating_point") or {}
    threshold = op.get("threshold")
    if isinstance(threshold, int | float) and raw.size == 2 and np.isfinite(threshold):
        positive = labels[-1] if labels else "positive"
        how = {
            "youden": "the best sensitivity + specificity",
            "specificity": "the target specificity",
        }.get(op.get("rule"), "its rule")
        text = (
            f"{positive} when its uncalibrated probability is {threshold:.1%} or more, a "
            f"threshold chosen on the validation images for {how}"
        )
        return int(raw[-1] >= threshold), text
    return None
