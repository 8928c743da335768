"""Exports of the reviews: the audit trail as CSV and a one-page PDF report per case.

CSV cells are escaped against spreadsheet formula injection (OWASP "CSV Injection"): a text
cell that begins with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return gets a leading
apostrophe, so Excel/LibreOffice show it as text instead of running it. Only text cells are
touched: numbers (a probability, an index) stay numbers.

The PDF is drawn with matplotlib (already a dependency; its PDF backend needs nothing else):
the image, the explanation overlay with its colour bar, and the verdict as plain text
(mathtext is off, so a note with ``$`` signs prints as typed).
"""

from __future__ import annotations

import csv
import io
import textwrap
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from core.reviews.store import COLUMNS, Verdict, current_verdicts

FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
CSV_COLUMNS: tuple[str, ...] = (
    *COLUMNS,
    "predicted_name",
    "corrected_name",
    "is_current",
)


def escape_cell(value: Any) -> Any:
    """A CSV cell safe to open in a spreadsheet: text starting with a formula sign gets ``'``."""
    if isinstance(value, str) and value.startswith(FORMULA_PREFIXES):
        return "'" + value
    return value


def _name(labels: Sequence[str] | None, index: int | None) -> str:
    if index is None:
        return ""
    if labels is not None and 0 <= index < len(labels):
        return str(labels[index])
    return str(index)


def csv_bytes(rows: Iterable[Verdict], labels: Sequence[str] | None = None) -> bytes:
    """Every review row as CSV (UTF-8 with a byte-order mark, so Excel reads accents).

    Args:
        rows: rows of one run (``ReviewStore.rows(run=...)``), oldest first.
        labels: class names by index, for the ``*_name`` columns.

    Returns:
        The CSV file's bytes; ``is_current`` is 1 on each reviewer's latest row of a case.
    """
    rows = list(rows)
    current = {v.id for v in current_verdicts(rows).values()}
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for row in rows:
        values = [
            *(getattr(row, name) for name in COLUMNS),
            _name(labels, row.predicted),
            _name(labels, row.corrected_label),
            int(row.id in current),
        ]
        writer.writerow(["" if v is None else escape_cell(v) for v in values])
    return buf.getvalue().encode("utf-8-sig")


def _verdict_lines(verdict: Verdict, labels: Sequence[str] | None, title: str) -> list[str]:
    what = {
        "agree": "Agree (the prediction is right)",
        "disagree": f"Disagree; correct label: {_name(labels, verdict.corrected_label)}",
        "unsure": "Unsure",
    }[verdict.verdict]
    case = (
        f"{verdict.split} sample #{verdict.sample_index}"
        if verdict.sample_index is not None
        else f"upload SHA-256 {verdict.upload_sha256}"
    )
    return [
        title,
        f"Model: {verdict.run}    Dataset: {verdict.dataset}    Case: {case}",
        f"Prediction: {_name(labels, verdict.predicted)}    Probability: {verdict.probability:.1%}",
        f"Verdict: {what}",
        f"Reviewer: {verdict.reviewer}    Time (UTC): {verdict.created_at or '-'}",
        f"Review record #{verdict.id}",
    ]


def case_report_pdf(
    panels: Sequence[tuple[str, np.ndarray, np.ndarray]],
    verdict: Verdict,
    *,
    labels: Sequence[str] | None = None,
    title: str = "Case review report",
    cmap: str = "jet",
    alpha: float = 0.45,
    explanation: str = "Grad-CAM",
) -> bytes:
    """One A4 page: each panel's image and overlay with a colour bar, then the verdict.

    Args:
        panels: ``(caption, image, heatmap)`` per view: a 2D image has one, a 3D volume its
            three mid slices. ``image`` is ``(H, W[, C])`` uint8 or float in [0, 1];
            ``heatmap`` ``(h, w)`` in [0, 1].
        verdict: the stored row the report is about (with ``id`` and ``created_at``).
        labels: class names by index.
        title: the first line of the page.
        cmap: colormap of the heatmap (also of the colour bar).
        alpha: heatmap opacity in the overlay.
        explanation: the explanation method's name, for the captions.

    Returns:
        The PDF file's bytes.

    Raises:
        ValueError: no panel, or an image that is not grey/RGB.
    """
    if not panels:
        raise ValueError("a case report needs at least one image panel")
    from matplotlib import cm, colors
    from matplotlib.figure import Figure  # no pyplot: no global state, safe in server threads

    from core.imaging import overlay

    rows = len(panels)
    fig = Figure(figsize=(8.27, 11.69))  # A4 portrait, inches
    grid = fig.add_gridspec(
        rows + 1, 3, width_ratios=[1, 1, 0.06], height_ratios=[*([1] * rows), 1.1 + 0.2 * rows],
        left=0.07, right=0.9, top=0.93, bottom=0.03, hspace=0.25, wspace=0.08,
    )  # fmt: skip
    norm = colors.Normalize(0.0, 1.0)
    for row, (caption, image, heat) in enumerate(panels):
        titles = (caption, f"{caption}, {explanation} overlay")
        pictures = (image, overlay(image, heat, alpha=alpha, cmap=cmap))
        for col, (picture, name) in enumerate(zip(pictures, titles, strict=True)):
            ax = fig.add_subplot(grid[row, col])
            shown = np.asarray(picture)
            if shown.ndim == 3 and shown.shape[-1] == 1:
                shown = shown[..., 0]
            grey = {"cmap": "gray", "vmin": 0, "vmax": 255 if shown.dtype == np.uint8 else 1}
            # fixed grey range: imshow would otherwise stretch each slice's own min..max
            ax.imshow(shown, interpolation="nearest", **(grey if shown.ndim == 2 else {}))
            ax.set_title(name, fontsize=9, parse_math=False)
            ax.set_xticks([])
            ax.set_yticks([])
        bar = fig.colorbar(
            cm.ScalarMappable(norm=norm, cmap=cmap), cax=fig.add_subplot(grid[row, 2])
        )
        bar.set_label(f"{explanation} relevance (0 = none, 1 = most)", fontsize=7)
        bar.ax.tick_params(labelsize=7)
    text_ax = fig.add_subplot(grid[rows, :])
    text_ax.axis("off")
    lines = _verdict_lines(verdict, labels, title)
    note = verdict.note.strip() or "(no note)"
    wrapped = [line for part in note.splitlines() for line in (textwrap.wrap(part, 100) or [""])]
    body = "\n".join([*lines[1:], "", "Note:", *wrapped[:40]])
    if len(wrapped) > 40:
        body += "\n[... note continues in the CSV export]"
    fig.suptitle(lines[0], fontsize=14, weight="bold", x=0.07, ha="left", parse_math=False)
    text_ax.text(
        0, 1, body, fontsize=8, va="top", family="DejaVu Sans", parse_math=False, wrap=False
    )
    buf = io.BytesIO()
    fig.savefig(
        buf,
        format="pdf",
        metadata={"Title": f"{title}: record {verdict.id}", "Creator": "MedMNIST case review"},
    )
    return buf.getvalue()


def report_panels(
    image: np.ndarray, heatmap: np.ndarray, three_d: bool
) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """The report's panels: the image itself (2D) or the three mid slices of a volume (3D).

    Args:
        image: ``(H, W[, C])`` or a volume ``(D, H, W[, 1])``.
        heatmap: the explanation, same spatial shape as ``image``.
        three_d: whether ``image`` is a volume.
    """
    if not three_d:
        return [("Image", np.asarray(image), np.asarray(heatmap))]
    vol = np.asarray(image)
    vol = vol[..., 0] if vol.ndim == 4 else vol
    heat = np.asarray(heatmap)
    heat = heat[..., 0] if heat.ndim == 4 else heat
    names = ("Axial (z)", "Coronal (y)", "Sagittal (x)")
    out = []
    for axis, name in enumerate(names):
        mid = vol.shape[axis] // 2
        out.append(
            (
                f"{name} {mid + 1}/{vol.shape[axis]}",
                np.take(vol, mid, axis=axis),
                np.take(heat, mid, axis=axis),
            )
        )
    return out
