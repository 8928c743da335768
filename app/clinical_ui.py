"""Experiments page, trust and clinical figures of one run, and single models beside ensembles.

Reads only JSON the registry already holds: ``evaluation.json["clinical"]`` (``core.clinical``)
and ``calibration.json`` (``python -m core.trust``). ``*_ui`` functions draw and return what
they showed; ``trust_rows`` is a pure table.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from app import trust_figures
from core import info

HELP = {
    "kappa": (
        "Quadratic weighted kappa: agreement between the model's grade and the true grade "
        "beyond chance. A miss by two grades costs four times a miss by one. 1 = perfect, "
        "0 = no better than chance."
    ),
    "referable": (
        "Referable diabetic retinopathy: grade 2 (moderate) or worse, the level at which a "
        "patient is sent to an eye specialist. Scored by the model's summed probability of "
        "grades 2-4."
    ),
    "sens90": (
        "Sensitivity at 90 % specificity: the share of referable cases found when at most 10 % "
        "of non-referable cases are sent on. Read off the test ROC curve."
    ),
    "operating_point": (
        "A fixed probability threshold chosen on the validation images only and then applied "
        "to the test images: sensitivity = share of diseased cases caught, specificity = share "
        "of healthy cases correctly left alone."
    ),
    "per_class": (
        "For each class against all others, at the model's usual decision (the most probable "
        "class): sensitivity (recall) = share of this class found; specificity = share of the "
        "other classes not called this class."
    ),
    "rule": (
        "Taking the most probable grade (argmax, the official MedMNIST rule) ignores that "
        "grades are ordered. The alternatives read the expected grade (the probability-"
        "weighted mean grade), rounded or cut at thresholds fitted on the validation images; "
        "the rule with the best validation accuracy (cross-validated within validation for "
        "the fitted thresholds) is chosen. The test split never chooses."
    ),
    "reliability": (
        "Reliability diagram: cases are grouped by the model's confidence; a calibrated model's "
        "points lie on the diagonal (70 % confident → 70 % right). ECE = the average gap."
    ),
    "risk_coverage": (
        "If the least certain cases are referred to a specialist, how accurate is the model on "
        "the cases it keeps? Coverage = share of cases it keeps. The star is the refer "
        "threshold chosen on the validation images, measured on the test images."
    ),
}


def _fmt(value: Any, pct: bool = False) -> str:
    if not isinstance(value, int | float):
        return "–"
    return f"{value:.1%}" if pct else f"{value:.3f}"


def clinical_summary_ui(evaluation: dict[str, Any] | None, flag: str, container: Any = st) -> bool:
    """Kappa, referable disease, the val-chosen operating point and per-class rates with
    low-recall warnings. Returns False (and says how to add them) when the run has none."""
    block = (evaluation or {}).get("clinical")
    if not block or not block.get("per_class"):
        container.info(
            "This run has no clinical metrics yet.\n\n"
            "1. Run `python -m core.evaluate RUN --write-clinical` for it.\n"
            "2. Reload this page."
        )
        return False
    for warn in block.get("low_recall") or []:
        container.warning(
            f"{info.display_label(flag, warn['label'])}: the model found "
            f"{round(warn['recall'] * warn['support'])} of {warn['support']} test cases "
            f"(recall {warn['recall']:.2f}). Do not rely on it to detect this class.",
            icon=":material/warning:",
        )
    cols = container.columns(4)
    if "kappa_quadratic" in block:
        cols[0].metric("Quadratic kappa", _fmt(block["kappa_quadratic"]), help=HELP["kappa"])
    ref = block.get("referable")
    if ref:
        cols[1].metric("Referable DR AUC", _fmt(ref.get("auc")), help=HELP["referable"])
        s90 = ref.get("sens_at_spec90") or {}
        cols[2].metric(
            "Sensitivity at 90 % specificity",
            _fmt(s90.get("sensitivity"), True),
            help=HELP["sens90"],
        )
        op = ref.get("operating_point")
        if op:
            t = op["test"]
            cols[3].metric(
                "Referral rule on test: sens. / spec.",
                f"{_fmt(t.get('sensitivity'), True)} / {_fmt(t.get('specificity'), True)}",
                help=HELP["operating_point"] + f" Threshold {op['threshold']:.3f} on P(grade ≥ 2).",
            )
    op = block.get("operating_point")
    if op:
        t = op["test"]
        cols[0].metric(
            "Threshold (Youden, val)", _fmt(op.get("threshold")), help=HELP["operating_point"]
        )
        cols[1].metric(
            "Test sensitivity", _fmt(t.get("sensitivity"), True), help=HELP["operating_point"]
        )
        cols[2].metric(
            "Test specificity", _fmt(t.get("specificity"), True), help=HELP["operating_point"]
        )
    rule = block.get("ordinal_rule")
    if rule and rule.get("rule") != "argmax":
        t = rule["test"]
        container.markdown(
            f"Decision rule chosen on validation: **{rule['rule']}** (val accuracy "
            + ", ".join(f"{k} {v:.3f}" for k, v in rule["val_acc"].items())
            + f"); on test it gives ACC **{t['acc']:.3f}** and kappa "
            f"**{t['kappa_quadratic']:.3f}** against argmax's official figures.",
            help=HELP["rule"],
        )
    container.markdown("**Per class (test split)**", help=HELP["per_class"])
    container.dataframe(
        pd.DataFrame(
            [
                {
                    "class": info.display_label(flag, r["label"]),
                    "cases": r["support"],
                    "predicted": r["predicted"],
                    "sensitivity": r["sensitivity"],
                    "specificity": r["specificity"],
                }
                for r in block["per_class"]
            ]
        ),
        hide_index=True,
        key="experiments_clinical_per_class",
    )
    return True


def calibration_ui(calibration: dict[str, Any] | None, container: Any = st) -> bool:
    """Reliability diagrams (before/after temperature scaling) and risk–coverage curves.
    Returns False (and says how to add them) when the run has no ``calibration.json``."""
    cal = (calibration or {}).get("calibration")
    if not cal:
        container.info(
            "This run has no calibration.json yet.\n\n"
            "1. Run `python -m core.trust RUN` for it.\n"
            "2. Reload this page."
        )
        return False
    left, right = container.columns(2)
    test = cal.get("test") or {}
    left.plotly_chart(
        trust_figures.reliability_chart(
            {"raw softmax": test.get("raw"), "calibrated": test.get("scaled")},
            f"Test reliability (T = {calibration.get('temperature', 1.0):.2f}"
            + (", per-class offsets" if calibration.get("calibrator") == "temperature_bias" else "")
            + ")",
        ),
        key="experiments_reliability",
    )
    left.caption(HELP["reliability"])
    refer = calibration.get("refer") or {}
    right.plotly_chart(
        trust_figures.risk_coverage_chart(
            refer.get("curves") or {},
            chosen=refer.get("test"),
            target_accuracy=refer.get("target_accuracy"),
        ),
        key="experiments_risk_coverage",
    )
    right.caption(HELP["risk_coverage"])
    return True


def trust_rows(entries: list[dict[str, Any]], flag: str) -> list[dict[str, Any]]:
    """Single models and ensembles of ``flag`` side by side, plus the best published figures.

    Args:
        entries: ``{"name", "kind", "metrics", "calibration"}`` dicts (runs and ensembles).
        flag: the dataset.

    Returns:
        Table rows, best validation AUC first (the only column that chooses); published rows
        last, with their test AUC/ACC.
    """
    rows = []
    for e in entries:
        m, cal = e.get("metrics") or {}, e.get("calibration") or {}
        test_cal = (cal.get("calibration") or {}).get("test") or {}
        refer = (cal.get("refer") or {}).get("test") or {}
        rows.append(
            {
                "model": e["name"],
                "kind": e.get("kind", "single model"),
                "val AUC": (m.get("val") or {}).get("auc"),
                "test AUC": (m.get("test") or {}).get("auc"),
                "test ACC": (m.get("test") or {}).get("acc"),
                "test ECE raw → calibrated": (
                    f"{test_cal['raw']['ece']:.3f} → {test_cal['scaled']['ece']:.3f}"
                    if test_cal.get("raw") and test_cal.get("scaled")
                    else "–"
                ),
                "kept / accuracy on kept": (
                    f"{refer['coverage']:.0%} / {refer['accuracy']:.3f}"
                    if isinstance(refer.get("coverage"), int | float)
                    else "–"
                ),
            }
        )
    rows.sort(key=lambda r: -(r["val AUC"] if isinstance(r["val AUC"], int | float) else -1))
    for pub in info.PUBLISHED.get(flag, []):
        rows.append(
            {
                "model": pub["method"],
                "kind": "published",
                "val AUC": None,
                "test AUC": pub["auc"],
                "test ACC": pub["acc"],
                "test ECE raw → calibrated": "–",
                "kept / accuracy on kept": "–",
            }
        )
    return rows
