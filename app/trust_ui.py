"""Trust on screen: the OOD warning (before any grade), the "Refer to a specialist" badge and
calibrated probability bars with an uncertainty band, each with a plain-language help text.

Pages call :func:`assess_one` (the predictor's answer for one input, plus the band) and then
:func:`prediction_panel_ui`, which returns what it showed. The predictor is the object
``core.registry.load_predictor(run_dir)`` returns: this module needs only its ``assess(x)``
(``proba``, ``uncertainty``, ``ood_score``, ``is_ood``, ``refer`` per sample) and, for the band,
its ``trust`` dict (the run's ``calibration.json``) and, for ensembles, ``raw(x)["logits"]``
and ``temperature``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import streamlit as st

from app import cache
from app.trust_assess import assess_one
from core import info

__all__ = ["HELP", "assess_one", "checked_prediction_ui", "prediction_panel_ui", "refer_reason"]

HELP = {
    "calibrated": (
        "The model's raw scores are rescaled (temperature scaling, with a per-class offset "
        "where that fitted better, both fitted on the validation images) so that, over many "
        "cases, a class shown at 70 % is right about 70 % of the time."
    ),
    "uncertainty": (
        "1 minus the highest calibrated probability: 0 means the model puts all its weight on "
        "one class; the higher the number, the less sure the model is."
    ),
    "band_ensemble": (
        "The black bar around each probability spans the values the individual models of the "
        "ensemble gave: a wide bar means the models disagree."
    ),
    "band_single": (
        "The black bar around each probability is ± the model's typical calibration error on "
        "the validation images (ECE): the probability is only this precise."
    ),
    "refer": (
        "The model is not sure enough to be relied on for this case. On the validation images, "
        "cases at least this uncertain were graded below the target accuracy, so they are sent "
        "to a specialist instead."
    ),
    "ood": (
        "Out-of-distribution check: the model compares what it sees in this image with what "
        "it saw in its training images. An image unlike all of them (another kind of scan, a "
        "photo, noise) gets no reliable grade, whatever the percentages say."
    ),
    "rule": (
        "For this model, taking the single most probable class was a worse rule on the "
        "validation images than the one named here: for graded diseases, the expected grade "
        "cut at thresholds chosen on the validation images; for yes/no findings, a probability "
        "threshold chosen there to balance sensitivity (cases found) and specificity (healthy "
        "cases cleared). This is the class that rule gives; the bars show the same "
        "probabilities either way."
    ),
    "not_fitted": (
        "This run has no trust values yet (no calibration.json): probabilities are the raw, "
        "uncalibrated model output and no out-of-distribution check ran."
    ),
}


def ood_message(flag: str) -> str:
    """The warning shown before any grade: "This does not look like a retinal fundus
    photograph", in the dataset's own modality words (``core.info.modality_noun``)."""
    return (
        f"**This does not look like {info.modality_noun(flag)}.** The model was trained only "
        f"on {info.python_class(flag)} images, so any grade it gives here is meaningless.\n\n"
        "1. Check that you uploaded the right file.\n"
        "2. Ask a specialist to read it."
    )


def refer_reason(result: dict[str, Any]) -> str:
    """Why a case is referred, in one plain sentence (empty when it is not)."""
    if not result.get("refer"):
        return ""
    if result.get("is_ood"):
        return "the image does not look like the images the model was trained on."
    info_ = result.get("refer_info") or {}
    thr, target = info_.get("threshold"), info_.get("target_accuracy")
    text = f"the model's uncertainty ({result['uncertainty']:.2f})"
    if isinstance(thr, int | float):
        text += f" is above {thr:.2f}"
    if isinstance(target, int | float):
        text += (
            f", the level above which it graded fewer than {target:.0%} of validation cases "
            "correctly"
        )
    return text + "."


def prediction_panel_ui(
    result: dict[str, Any],
    labels: Sequence[str],
    flag: str,
    *,
    key: str,
    true_index: Sequence[int] = (),
    container: Any = st,
    rule_grade: tuple[int, str] | None = None,
) -> dict[str, Any]:
    """Draw the OOD warning first, then the refer badge, the prediction and the bars.

    A foreign image's grade is not shown unless the person opens "Show the model's output
    anyway", which repeats that it is not reliable.

    Args:
        result: :func:`assess_one`'s dict.
        labels: class names by index.
        flag: the dataset the model was trained on (for the modality words).
        key: widget-key prefix.
        true_index: the true class(es), when known.
        container: where to draw.
        rule_grade: ``(grade, rule name)`` when the run's decision rule chosen on val is not
            argmax (``evaluation.json`` ``clinical.ordinal_rule``); shown beside the argmax.

    Returns:
        ``{"shown_grade": bool, "predicted": int, "refer": bool, "is_ood": bool,
        "proba": the probabilities shown (calibrated when ``fitted``), "fitted": bool}``.
    """
    proba = result["proba"]
    predicted = int(np.argmax(proba))
    if not result.get("fitted"):
        container.caption(":grey-badge[not calibrated] " + HELP["not_fitted"])
    if result.get("is_ood"):
        container.error(ood_message(flag), icon=":material/report:")
        container.caption(
            f"Out-of-distribution score {result['ood_score']:.2f} (above 1 = less like the "
            "training images than 95 % of validation images).",
            help=HELP["ood"],
        )
        body = container.expander("Show the model's output anyway (not reliable)")
        shown = False
    else:
        body, shown = container, True
    if result.get("refer"):
        body.markdown(
            f":red-badge[:material/person_alert: Refer to a specialist] {refer_reason(result)}",
            help=HELP["refer"],
        )
    elif result.get("fitted"):
        body.markdown(
            ":green-badge[:material/check: Within the model's reliable range]",
            help=HELP["refer"],
        )
    name = labels[predicted] if predicted < len(labels) else str(predicted)
    body.markdown(
        f"Model predicted: **{name}** ({proba[predicted]:.1%}"
        + (", calibrated" if result.get("fitted") else ", not calibrated")
        + f") · uncertainty "
        f"**{result['uncertainty']:.2f}**",
        help=HELP["calibrated"] + " " + HELP["uncertainty"],
    )
    if rule_grade is not None and rule_grade[0] != predicted:
        grade, rule = rule_grade
        body.markdown(
            f"By this model's validation-chosen rule ({rule}): "
            f"**{labels[grade] if grade < len(labels) else grade}**",
            help=HELP["rule"],
        )
    kind = result.get("band_kind")
    band = result.get("band")
    svg = cache.probability_chart(
        tuple(float(v) for v in proba),
        tuple(str(name) for name in labels),
        tuple(int(i) for i in true_index),
        None if band is None else tuple(tuple(float(v) for v in edge) for edge in band),
        "Calibrated probabilities" if result.get("fitted") else "Raw probabilities",
        bool(result.get("fitted")),
    )
    # Inline in the page (no iframe, no script). Not st.html: its sanitiser drops <svg>.
    # The SVG is ours, labels escaped. The key names the container for tests.
    body.container(key=f"{key}_probs").markdown(svg, unsafe_allow_html=True)
    if kind in ("ensemble", "single"):
        body.caption(HELP[f"band_{kind}"])
    return {
        "shown_grade": shown,
        "predicted": predicted,
        "refer": bool(result.get("refer")),
        "is_ood": bool(result.get("is_ood")),
        "proba": np.asarray(proba, dtype=np.float64),
        "fitted": bool(result.get("fitted")),
    }


def checked_prediction_ui(
    run_path: str,
    x: np.ndarray,
    labels: Sequence[str],
    flag: str,
    *,
    key: str,
    true_index: Sequence[int] = (),
    container: Any = st,
) -> dict[str, Any] | None:
    """The one call a page makes where it shows a prediction: assess ``x`` with the run's
    predictor (cached) and draw :func:`prediction_panel_ui`.

    Returns:
        :func:`prediction_panel_ui`'s dict, or None for multi-label datasets (calibration,
        refer and the OOD guard are fitted for one-label tasks) and when the check failed
        (the error is shown with its next steps).
    """
    from app import widgets as w

    if info.is_multilabel(flag):
        return None
    shown = None
    with w.guard("checking how far to trust this prediction"):
        result = cache.assessment(run_path, np.asarray(x, dtype=np.float32))
        shown = prediction_panel_ui(
            result,
            labels,
            flag,
            key=key,
            true_index=true_index,
            container=container,
            rule_grade=_rule_grade(run_path, x, labels),
        )
    return shown


def _rule_grade(run_path: str, x: np.ndarray, labels: Sequence[str]) -> tuple[int, str] | None:
    """The class of the run's val-chosen rule (ordinal cut points, binary operating point)
    when it is not argmax, else None (:func:`core.clinical.decision_by_rule`)."""
    from core import clinical

    evaluation = cache.run_file(run_path, "evaluation.json") or {}
    block = evaluation.get("clinical") or {}
    if not block.get("ordinal_rule") and not block.get("operating_point"):
        return None
    raw = cache.probabilities(run_path, np.asarray(x, dtype=np.float32))
    return clinical.decision_by_rule(block, raw, list(labels))


def prediction_source_ui(
    run: dict[str, Any], best: dict[str, Any] | None, *, key: str, container: Any = st
) -> str:
    """Which registry folder predicts: the picked run, or the dataset's ensemble when that is
    the best on validation AUC (then on by default, with a toggle to use the picked run).

    Returns:
        The path to hand to :func:`checked_prediction_ui`.
    """
    if not best or best.get("kind") != "ensemble":
        return run["path"]
    val = (best.get("metrics") or {}).get("val") or {}
    use = container.toggle(
        f"Predict with the ensemble `{best['name']}`",
        value=True,
        key=key,
        help="An ensemble averages several trained models; it is the best model for this "
        "dataset on the validation images"
        + (f" (AUC {val['auc']:.3f})" if isinstance(val.get("auc"), int | float) else "")
        + ". Switch it off to see the model picked in the sidebar alone.",
    )
    return best["path"] if use else run["path"]
