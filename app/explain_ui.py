"""Explanations on screen: the model's default method (from ``explain.json``), the method picker,
the colour bar, the "Can you trust this map?" panel and the annotated download.

Reading and drawing functions return values and need no Streamlit; the ``*_ui`` functions draw.
``core.explain`` (TensorFlow) is imported inside the functions that need method names, so the
module itself stays light.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import streamlit as st
from PIL import Image, ImageDraw, ImageFont

from app import state

# what the page shows when a model's explanations were never measured (no explain.json or an
# old one without ``default_method``): Grad-CAM at the automatic layer, as before issue 13
FALLBACK_METHOD = "gradcam"


@dataclass(frozen=True)
class ExplainDefault:
    """A model's default explanation and how far it was found trustworthy.

    Attributes:
        method: A name from ``core.explain.METHODS``.
        layer: Layer name(s) for ``core.explain.attribution``; ``None`` = automatic.
        faithful: ``True``/``False`` as measured by ``python -m core.explain``; ``None`` when
            not measured.
        verdict: The plain-language verdict written with the measurement, or ``None``.
    """

    method: str
    layer: str | tuple[str, ...] | None
    faithful: bool | None
    verdict: str | None

    @property
    def measured(self) -> bool:
        return self.faithful is not None


def explain_default(stored: dict[str, Any] | None, methods: tuple[str, ...]) -> ExplainDefault:
    """The default (method, layer) of a run from its ``explain.json`` contents.

    Args:
        stored: The parsed ``explain.json`` (``None`` when the run has none).
        methods: The method names the app offers (``core.explain.METHODS``).

    Returns:
        The stored ``default_method``/``default_layer``/``faithful``/``verdict``, or Grad-CAM at
        the automatic layer (unmeasured) when the file lacks them or names an unknown method.
    """
    stored = stored if isinstance(stored, dict) else {}
    method = stored.get("default_method")
    if method not in methods:
        return ExplainDefault(FALLBACK_METHOD, None, None, None)
    layer = stored.get("default_layer")
    if isinstance(layer, list):
        layer = tuple(str(v) for v in layer)
    elif layer is not None:
        layer = str(layer)
    faithful = stored.get("faithful")
    verdict = stored.get("verdict")
    return ExplainDefault(
        method=method,
        layer=layer or None,
        faithful=bool(faithful) if isinstance(faithful, bool) else None,
        verdict=str(verdict) if verdict else None,
    )


def layer_for(default: ExplainDefault, method: str) -> str | tuple[str, ...] | None:
    """The layer to explain with ``method``: the measured one for the default method, else
    automatic (``None``)."""
    return default.layer if method == default.method else None


def method_picker_ui(
    default: ExplainDefault, *, key: str, context: Any, container: Any = st
) -> str:
    """The explanation method; each new model opens on its own default.

    Args:
        default: The model's default (:func:`explain_default`).
        key: Widget key.
        context: What the default belongs to (the run path): a new one resets the picker.
        container: Where to draw.

    Returns:
        The chosen method name.
    """
    from core import explain

    options = list(explain.METHODS)
    state.follow(key, options, default.method, parent=context, keep_valid=False)
    lines = [
        f"- **{explain.method_info(m)['title']}**: {explain.method_info(m)['help']}"
        for m in options
    ]
    return container.selectbox(
        "Explanation method",
        options,
        key=key,
        format_func=lambda m: (
            explain.method_info(m)["title"]
            + (" · this model's default" if m == default.method and default.measured else "")
        ),
        help="How the heatmap is computed. The default is the method that was measured to "
        "follow this model's decisions best (see *Can you trust this map?*).\n\n"
        + "\n".join(lines),
    )


def compare_picker_ui(default: ExplainDefault, chosen: str, *, key: str, container: Any = st):
    """Methods to show side by side with ``chosen`` (at most three more)."""
    from core import explain

    others = [m for m in explain.METHODS if m != chosen]
    preset = [
        m for m in dict.fromkeys((default.method, "gradcam", "layercam_fused")) if m in others
    ]
    if key not in st.session_state:  # a first default, then the person's choice
        st.session_state[key] = preset[:2]
    st.session_state[key] = [m for m in st.session_state[key] if m in others][:3]
    return container.multiselect(
        "Compare with",
        others,
        key=key,
        max_selections=3,
        format_func=lambda m: explain.method_info(m)["title"],
        help="Up to three more methods, shown next to the chosen one for the same image and "
        "class. Where they agree, the evidence is more convincing.",
    )


# ---------------------------------------------------------------------------------------------
# Pictures
# ---------------------------------------------------------------------------------------------
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has one bitmap size
        return ImageFont.load_default()


def colour_bar(cmap: str, width: int = 420, height: int = 14) -> np.ndarray:
    """A horizontal colour bar from 0 (left) to 1 (right), uint8 RGB ``(height, width, 3)``."""
    from core.imaging import colorize

    ramp = np.tile(np.linspace(0.0, 1.0, width, dtype=np.float32), (height, 1))
    return colorize(ramp, cmap)


def colour_bar_legend(cmap: str, class_name: str, width: int = 420) -> np.ndarray:
    """The colour bar with what its ends mean for ``class_name``, as one uint8 picture."""
    bar = colour_bar(cmap, width - 20, 14)
    font = _font(12)
    canvas = Image.new("RGB", (width, 52), "white")
    canvas.paste(Image.fromarray(bar), (10, 4))
    draw = ImageDraw.Draw(canvas)
    draw.text((10, 22), "0: no evidence", fill="black", font=font)
    right = f"1: strongest evidence for {class_name}"
    draw.text((width - 10 - draw.textlength(right, font=font), 22), right, fill="black", font=font)
    draw.text((10, 37), "relative to this map's own maximum", fill=(90, 90, 90), font=font)
    return np.asarray(canvas)


def dim(picture: np.ndarray, keep: float = 0.45) -> np.ndarray:
    """Wash a picture out towards light grey, for a map that was not found faithful."""
    grey = np.full_like(picture, 225)
    return (keep * picture.astype(np.float32) + (1.0 - keep) * grey).astype(np.uint8)


def evidence_heading(
    target: int,
    target_name: str,
    predicted: int,
    raw_probs: np.ndarray,
    shown: dict[str, Any] | None,
) -> str:
    """The Explanations heading: the class the maps explain, its probability, and whether the
    model predicted it.

    The probability is the one the trust panel above it shows (calibrated when the run has
    calibration.json), so the page never gives two different numbers for one class. An image
    the panel flagged as unlike the training data gets no number at all: the panel hides its
    grade as meaningless, and a percentage in the heading would undo that.

    Args:
        target: The explained class index.
        target_name: Its name.
        predicted: The model's predicted class index.
        raw_probs: The model's raw output (used when the panel was not drawn, e.g. multi-label).
        shown: :func:`app.trust_ui.checked_prediction_ui`'s dict, or None.

    Returns:
        Markdown text for ``st.subheader``.

    Example::

        >>> evidence_heading(2, "moderate", 2, np.array([.1, .2, .7]), None)
        'Evidence for class 2: moderate (70.0%) · the predicted class'
    """
    if shown is not None and shown.get("is_ood"):
        score = " (no probability: the image does not look like the training images)"
    elif shown is not None:
        score = f" ({float(shown['proba'][target]):.1%}" + (
            " calibrated)" if shown.get("fitted") else ")"
        )
    else:
        score = f" ({float(raw_probs[target]):.1%})"
    relation = " · the predicted class" if target == predicted else " · **not** the predicted class"
    return f"Evidence for class {target}: {target_name}{score}{relation}"


def annotated_overlay(
    picture: np.ndarray, cmap: str, lines: list[str], class_name: str
) -> np.ndarray:
    """The downloadable overlay: text lines above it (model, class, method), colour bar below.

    Args:
        picture: uint8 RGB overlay, already enlarged.
        cmap: The colormap the overlay uses.
        lines: Caption lines, e.g. ``["Model: cnn2d_noaug", "Class 3: ...", "Method: ..."]``.
        class_name: Named at the colour bar's top end.

    Returns:
        uint8 RGB picture.
    """
    pic = Image.fromarray(np.asarray(picture, np.uint8)).convert("RGB")
    width = max(pic.width, 480)
    font = _font(13)
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    wrapped: list[str] = []
    for line in lines:
        # Pillow's built-in font has no "×"; long layer lists wrap instead of running off
        words, current = line.replace("×", "x").split(" "), ""
        for word in words:
            trial = f"{current} {word}".strip()
            if current and measure.textlength(trial, font=font) > width - 16:
                wrapped.append(current)
                current = word
            else:
                current = trial
        wrapped.append(current)
    head = 8 + 18 * len(wrapped)
    legend = colour_bar_legend(cmap, class_name, width)
    canvas = Image.new("RGB", (width, head + pic.height + legend.shape[0] + 6), "white")
    draw = ImageDraw.Draw(canvas)
    for i, line in enumerate(wrapped):
        draw.text((8, 4 + 18 * i), line, fill="black", font=font)
    canvas.paste(pic, ((width - pic.width) // 2, head))
    canvas.paste(Image.fromarray(legend), (0, head + pic.height + 4))
    return np.asarray(canvas)


# ---------------------------------------------------------------------------------------------
# "Can you trust this map?"
# ---------------------------------------------------------------------------------------------
COLUMN_HELP = {
    "Method": "How the heatmap is computed (see the method picker's help).",
    "Layer": "The network layer a CAM method reads, with its grid (cells per side). Coarser "
    "grids give blurrier maps. Empty for pixel-level methods.",
    "Default": "The method this model opens on: the best on validation data among those that "
    "pass the weight-scrambling check.",
    "Deletion ratio (val)": "Validation data. Confidence left while the map's hottest regions "
    "are removed first, divided by the same for a random smooth map. Below 1 = the map found "
    "what the model relies on; the goal is 0.85 or less.",
    "Deletion ratio (test)": "As the validation column, on held-out test data. Goal: 0.85 or less.",
    "Insertion ratio (val)": "Validation data. Confidence reached while the map's hottest "
    "regions are shown first, divided by the same for a random smooth map. Above 1 = the map "
    "found what convinces the model; the goal is 1.15 or more.",
    "Insertion ratio (test)": "As the validation column, on held-out test data. Goal: 1.15 "
    "or more.",
    "Scrambling correlation (test)": "Rank correlation between the maps of the trained model "
    "and of the same model with scrambled (random) weights, sign ignored (a map that flips is "
    "still tracing the image). Near 0 = the map depends on what the model learned; near 1 = "
    "it only traces the image. Goal: 0.4 or less.",
    "Heat on anatomy (test)": "Share of the map's energy inside the organ (3D masks) or the "
    "fundus disk (retina photos). Compare with the anatomy's share of the image.",
    "Anatomy share of image": "How much of the image the organ or fundus disk covers: what "
    "a map spread evenly would score on the previous column.",
    "Samples": "Test images or volumes each number is averaged over.",
}


def _get(entry: Any, *keys: str) -> Any:
    for k in keys:
        if not isinstance(entry, dict):
            return None
        entry = entry.get(k)
    return entry


def _layer_text(layer: Any) -> str:
    if layer is None:
        return ""
    return ", ".join(layer) if isinstance(layer, list | tuple) else str(layer)


def trust_rows(stored: dict[str, Any] | None) -> list[dict[str, Any]]:
    """One row per measured candidate (method, layer) of ``explain.json``, default first.

    Args:
        stored: The parsed ``explain.json``.

    Returns:
        Rows keyed by the :data:`COLUMN_HELP` column names (numbers or ``None``).
    """
    # imported here: the core.explain package loads TensorFlow, which this page has loaded
    # already and the pages that only import this module for its pictures have not
    from core.explain import select

    if not isinstance(stored, dict):
        return []
    from core import explain

    titles = {m: explain.method_info(m)["title"] for m in explain.METHODS}
    rows = []
    for cand in stored.get("candidates") or []:
        if not isinstance(cand, dict):
            continue
        method, layer = cand.get("method"), cand.get("layer")
        anatomy = _get(cand, "test", "anatomy") or {}
        anatomy = anatomy if isinstance(anatomy, dict) else {}
        # 3D masks report the gland ("inside"), fundus photos the disk
        inside = anatomy.get("inside", anatomy.get("disk"))
        area = anatomy.get("area_inside", anatomy.get("area_disk"))
        rows.append(
            {
                "Method": titles.get(method, str(method)),
                "Layer": _layer_text(layer),
                "Default": method == stored.get("default_method")
                and layer == stored.get("default_layer"),
                "Deletion ratio (val)": _get(cand, "val", "faithfulness", "deletion_ratio"),
                "Deletion ratio (test)": _get(cand, "test", "faithfulness", "deletion_ratio"),
                "Insertion ratio (val)": _get(cand, "val", "faithfulness", "insertion_ratio"),
                "Insertion ratio (test)": _get(cand, "test", "faithfulness", "insertion_ratio"),
                "Scrambling correlation (test)": select.scrambling_correlation(cand.get("test")),
                "Heat on anatomy (test)": inside if isinstance(inside, int | float) else None,
                "Anatomy share of image": area if isinstance(area, int | float) else None,
                "Samples": _get(cand, "test", "faithfulness", "n"),
            }
        )
    rows.sort(key=lambda r: not r["Default"])
    return rows


def trust_panel_ui(
    stored: dict[str, Any] | None, default: ExplainDefault, method: str, run_name: str
) -> None:
    """The verdict in plain words first, the numbers behind an expander."""
    from core import explain

    st.subheader("Can you trust this map?")
    title = explain.method_info(method)["title"]
    if not default.measured:
        st.info(
            "This model's explanations have not been measured yet, so nobody knows how well "
            f"the {title} map follows its decisions.\n\n"
            f"1. Measure them: `python -m core.explain {run_name}` (a few minutes).\n"
            "2. Reload this page: the best-measured method becomes the default and its verdict "
            "appears here.",
            icon=":material/help:",
        )
        return
    box = st.success if default.faithful else st.warning
    box(
        default.verdict or "No verdict was written with the measurement.",
        icon=":material/verified:" if default.faithful else ":material/report:",
    )
    if method != default.method:
        st.caption(
            f"The verdict is about the default method "
            f"({explain.method_info(default.method)['title']}); the table below has the "
            f"numbers of {title} too, where it was measured."
        )
    rows = trust_rows(stored)
    with st.expander("The numbers behind the verdict"):
        if not rows:
            st.caption("The measurement file has no per-method numbers.")
            return
        config = {
            name: st.column_config.NumberColumn(name, help=text, format="%.2f")
            for name, text in COLUMN_HELP.items()
            if name not in ("Method", "Layer", "Default", "Samples")
        }
        config["Method"] = st.column_config.TextColumn("Method", help=COLUMN_HELP["Method"])
        config["Layer"] = st.column_config.TextColumn("Layer", help=COLUMN_HELP["Layer"])
        config["Default"] = st.column_config.CheckboxColumn("Default", help=COLUMN_HELP["Default"])
        config["Samples"] = st.column_config.NumberColumn("Samples", help=COLUMN_HELP["Samples"])
        for name in ("Heat on anatomy (test)", "Anatomy share of image"):
            config[name] = st.column_config.NumberColumn(
                name, help=COLUMN_HELP[name], format="percent"
            )
        st.dataframe(rows, hide_index=True, column_config=config, key="explain_trust_table")
        chosen_by = stored.get("chosen_by") if isinstance(stored, dict) else None
        if chosen_by:
            st.caption(f"Default chosen by: {chosen_by}.")
