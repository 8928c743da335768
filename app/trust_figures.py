"""Figures for trust: calibrated probability bars with an uncertainty band (inline SVG),
reliability diagrams and risk–coverage curves (Plotly). Builders return figures; the pages draw
them (no Streamlit).

They read plain values: probabilities and band edges, and the bins/curves a run's
``calibration.json`` stores (written by ``python -m core.trust``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def calibrated_probability_chart(
    probs: np.ndarray,
    labels: Sequence[str],
    true_index: Sequence[int] = (),
    band: tuple[np.ndarray, np.ndarray] | None = None,
    title: str = "Calibrated probabilities",
    calibrated: bool = True,
) -> str:
    """Horizontal bars of class probabilities with an optional uncertainty band, as inline SVG.

    Why SVG and not Plotly: this chart is on every Explanations, 3D and Case review page, and
    a Plotly chart makes the browser fetch and compile Plotly's 4.7 MB script on a first
    visit: 1.2 of the 3.3 CPU-seconds Chromium spent on a first Explanations visit here
    (docs/benchmarks.md, "The browser's share"). Bars, whiskers and labels need no script.

    Args:
        probs: ``(K,)`` calibrated probabilities.
        labels: class names by index.
        true_index: the true class(es), drawn in a second colour (empty for an upload).
        band: ``(low, high)`` arrays ``(K,)``: drawn as a whisker around each bar.
        title: chart title.
        calibrated: whether ``probs`` went through the run's fitted calibration; the axis
            must not call a raw softmax "calibrated" (a clinician reads it as a promise).

    Returns:
        An ``<svg>`` element (``role="img"``; its ``<title>`` reads every value aloud).

    Example:
        >>> svg = calibrated_probability_chart(np.array([0.7, 0.3]), ["benign", "malignant"])
        >>> "calibrated probability" in svg and "70.0%" in svg
        True
    """
    from html import escape

    p = np.clip(np.asarray(probs, dtype=float), 0.0, 1.0)
    truth = {int(i) for i in true_index}
    names = [f"{i}: {name}" for i, name in enumerate(labels)]
    lo = hi = None
    if band is not None:
        lo, hi = (np.clip(np.asarray(b, dtype=float), 0.0, 1.0) for b in band)
    # Layout in SVG user units; the viewBox scales it to the column's width.
    label_w = 14 + 6.6 * max((len(n) for n in names), default=4)
    plot_x, plot_w, row_h, top = label_w, 480.0, 30.0, 40.0
    width = plot_x + plot_w + 56  # room for "100.0%" right of a full bar
    height = top + row_h * len(p) + 48

    def x(value: float) -> float:
        return plot_x + plot_w * float(value)

    heading = (
        title
        + (" (green = true label)" if truth else "")
        + ("; black bars = uncertainty band" if band is not None else "")
    )
    spoken = "; ".join(
        f"{n}: {v:.1%}" + (f" (band {a:.1%} to {b:.1%})" if lo is not None else "")
        for n, v, a, b in zip(
            names, p, lo if lo is not None else p, hi if hi is not None else p, strict=True
        )
    )
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" role="img" viewBox="0 0 {width:.0f} '
        f'{height:.0f}" width="100%" style="max-width:{width:.0f}px;font-family:sans-serif">',
        f"<title>{escape(heading)}: {escape(spoken)}</title>",
        f'<text x="4" y="18" font-size="14" font-weight="600" fill="#1c2530">'
        f"{escape(heading)}</text>",
    ]
    bottom = top + row_h * len(p)
    for tick in np.linspace(0.0, 1.0, 6):
        out.append(
            f'<line x1="{x(tick):.1f}" y1="{top - 4:.0f}" x2="{x(tick):.1f}" y2="{bottom:.0f}" '
            'stroke="#e3e7ee"/>'
            f'<text x="{x(tick):.1f}" y="{bottom + 16:.0f}" font-size="11" fill="#5f6b7a" '
            f'text-anchor="middle">{tick:.0%}</text>'
        )
    axis = "calibrated probability" if calibrated else "probability (not calibrated)"
    out.append(
        f'<text x="{x(0.5):.1f}" y="{bottom + 38:.0f}" font-size="12" fill="#5f6b7a" '
        f'text-anchor="middle">{axis}</text>'
    )
    for i, (name, value) in enumerate(zip(names, p, strict=True)):
        y = top + row_h * i
        colour = "#2e7d32" if i in truth else "#5c7cfa"
        # the value sits right of the bar and its whisker, never under the whisker's line
        end = max(value, hi[i] if hi is not None else value)
        out.append(
            f'<text x="{plot_x - 8:.1f}" y="{y + row_h / 2 + 4:.1f}" font-size="11" '
            f'fill="#1c2530" text-anchor="end">{escape(name)}</text>'
            f'<rect data-class="{i}" x="{plot_x:.1f}" y="{y + 4:.1f}" '
            f'width="{plot_w * value:.1f}" height="{row_h - 8:.0f}" fill="{colour}"/>'
            f'<text x="{x(end) + 6:.1f}" y="{y + row_h / 2 + 4:.1f}" font-size="11" '
            f'font-weight="600" fill="#1c2530">{value:.1%}</text>'
        )
        if lo is not None:
            a, b, mid = x(lo[i]), x(hi[i]), y + row_h / 2
            out.append(
                f'<path data-band="{i}" d="M{a:.1f},{mid:.1f}H{b:.1f}M{a:.1f},{mid - 5:.1f}'
                f'V{mid + 5:.1f}M{b:.1f},{mid - 5:.1f}V{mid + 5:.1f}" stroke="#37474f" '
                'stroke-width="2" fill="none"/>'
            )
    out.append("</svg>")
    return "".join(out)


def reliability_chart(reliability: dict[str, dict[str, Any]], title: str):
    """Reliability diagram: accuracy against mean confidence per confidence bin.

    Args:
        reliability: ``{"before": rel, "after": rel}`` (any names) where ``rel`` is a
            ``core.trust.calibration.reliability`` dict (``bins`` with ``confidence``,
            ``accuracy``, ``count``; ``ece``).
        title: chart title.

    Returns:
        A Plotly figure; the diagonal is perfect calibration.
    """
    import plotly.graph_objects as go

    fig = go.Figure()
    fig.add_scatter(
        x=[0, 1], y=[0, 1], mode="lines", line=dict(dash="dash", color="grey"), name="perfect"
    )
    for name, rel in reliability.items():
        bins = [b for b in (rel or {}).get("bins") or [] if b.get("count")]
        if not bins:
            continue
        ece = rel.get("ece")
        fig.add_scatter(
            x=[b["confidence"] for b in bins],
            y=[b["accuracy"] for b in bins],
            mode="lines+markers",
            marker=dict(
                size=[6 + 14 * np.sqrt(b["count"] / max(rel.get("n") or 1, 1)) for b in bins]
            ),
            name=f"{name} (ECE {ece:.3f})" if isinstance(ece, int | float) else name,
            customdata=[b["count"] for b in bins],
            hovertemplate="confidence %{x:.2f}, accuracy %{y:.2f}, %{customdata} cases"
            "<extra></extra>",
        )
    fig.update_layout(
        xaxis=dict(title="mean confidence in bin", range=[0, 1]),
        yaxis=dict(title="accuracy in bin", range=[0, 1]),
        height=430,
        margin=dict(l=10, r=10, t=36, b=90),
        title=dict(text=title, font=dict(size=14)),
        # below the axis title, not on it
        legend=dict(orientation="h", y=-0.28, yanchor="top"),
    )
    return fig


def risk_coverage_chart(
    curves: dict[str, dict[str, Sequence[float]]],
    chosen: dict[str, float] | None = None,
    target_accuracy: float | None = None,
    title: str = "Accuracy on the cases the model keeps",
):
    """Accuracy of retained cases against coverage (most certain cases kept first).

    Args:
        curves: ``{split: {"coverage": [...], "accuracy": [...]}}`` from ``calibration.json``.
        chosen: the refer threshold's ``{"coverage", "accuracy"}`` on test, marked.
        target_accuracy: the target the threshold was chosen for on val (a dotted line).
        title: chart title.

    Returns:
        A Plotly figure.
    """
    import plotly.graph_objects as go

    fig = go.Figure()
    for split, curve in curves.items():
        if not curve or not curve.get("coverage"):
            continue
        fig.add_scatter(
            x=list(curve["coverage"]),
            y=list(curve["accuracy"]),
            mode="lines",
            name=split,
            line=dict(shape="hv"),
        )
    if target_accuracy is not None:
        fig.add_hline(
            y=target_accuracy,
            line_dash="dot",
            annotation_text=f"target accuracy {target_accuracy:.0%}",
        )
    if chosen and isinstance(chosen.get("coverage"), int | float):
        fig.add_scatter(
            x=[chosen["coverage"]],
            y=[chosen["accuracy"]],
            mode="markers",
            marker=dict(size=12, symbol="star", color="#d9480f"),
            name="refer threshold (chosen on val), on test",
        )
    fig.update_layout(
        xaxis=dict(title="coverage (share of cases the model keeps)", range=[0, 1]),
        yaxis=dict(title="accuracy on kept cases", range=[0, 1.02]),
        height=430,
        margin=dict(l=10, r=10, t=36, b=90),
        title=dict(text=title, font=dict(size=14)),
        # below the axis title, not on it
        legend=dict(orientation="h", y=-0.28, yanchor="top"),
    )
    return fig
