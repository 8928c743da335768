"""Plotly figures for trust: calibrated probability bars with an uncertainty band, reliability
diagrams and risk–coverage curves. Builders return figures; the pages draw them (no Streamlit).

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
):
    """Horizontal bars of class probabilities with an optional uncertainty band.

    Args:
        probs: ``(K,)`` calibrated probabilities.
        labels: class names by index.
        true_index: the true class(es), drawn in a second colour (empty for an upload).
        band: ``(low, high)`` arrays ``(K,)``: drawn as an error bar around each bar.
        title: chart title.
        calibrated: whether ``probs`` went through the run's fitted calibration; the axis
            must not call a raw softmax "calibrated" (a clinician reads it as a promise).

    Returns:
        A Plotly figure.

    Example:
        >>> fig = calibrated_probability_chart(np.array([0.7, 0.3]), ["benign", "malignant"])
        >>> fig.layout.xaxis.title.text
        'calibrated probability'
    """
    import plotly.graph_objects as go

    p = np.asarray(probs, dtype=float)
    truth = set(int(i) for i in true_index)
    colours = ["#2e7d32" if i in truth else "#5c7cfa" for i in range(len(p))]
    error_x = None
    if band is not None:
        lo, hi = (np.clip(np.asarray(b, dtype=float), 0.0, 1.0) for b in band)
        error_x = dict(
            type="data",
            symmetric=False,
            array=np.maximum(hi - p, 0.0).tolist(),
            arrayminus=np.maximum(p - lo, 0.0).tolist(),
            color="#37474f",
            thickness=2,
            width=6,
        )
    fig = go.Figure(
        go.Bar(
            x=p.tolist(),
            y=[f"{i}: {name}" for i, name in enumerate(labels)],
            orientation="h",
            marker_color=colours,
            error_x=error_x,
            text=[f"{v:.1%}" for v in p],
            textposition="inside",
            insidetextanchor="start",
            hovertemplate="%{y}: %{x:.1%}<extra></extra>",
        )
    )
    fig.update_layout(
        height=110 + 30 * len(p),
        margin=dict(l=10, r=10, t=36, b=45),
        xaxis=dict(
            range=[0, 1],
            title="calibrated probability" if calibrated else "probability (not calibrated)",
            tickformat=".0%",
        ),
        yaxis=dict(autorange="reversed"),
        title=dict(
            text=title
            + (" (green = true label)" if truth else "")
            + ("; black bars = uncertainty band" if band is not None else ""),
            font=dict(size=14),
        ),
    )
    return fig


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
