"""Pictures and charts for the pages: uint8 images, thumbnails, PNG bytes, Grad-CAM and
occlusion overlays, slices, and the Plotly probability and comparison charts.

Builders return arrays, bytes or Plotly figures; the pages draw them. No Streamlit and no
caching here (``app.cache`` caches what is expensive). ``core.explain`` (TensorFlow) is imported
only inside the functions that overlay a heatmap, so a page without a model stays light.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import numpy as np

from core import info


def to_uint8(img: np.ndarray) -> np.ndarray:
    """Float [0, 1] or uint8 image -> uint8, channel axis dropped when single."""
    arr = np.asarray(img)
    if arr.dtype != np.uint8:
        arr = np.clip(np.round(arr * 255.0), 0, 255).astype(np.uint8)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    return arr


def upscale(img: np.ndarray, side: int = 168) -> np.ndarray:
    """Nearest-neighbour enlargement so 28 px images show crisp pixels, not browser blur."""
    arr = to_uint8(img)
    factor = max(1, side // max(arr.shape[:2]))
    return np.repeat(np.repeat(arr, factor, axis=0), factor, axis=1)


def thumbnail(image: np.ndarray, mode: str = "mid-slice") -> np.ndarray:
    """A 2D picture of a stored image: itself for 2D, a mid-slice or MIP for a 3D volume."""
    arr = np.asarray(image)
    if arr.ndim == 4 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim == 3 and arr.shape[-1] not in (1, 3):
        if mode.startswith("max"):
            return arr.max(axis=0)
        return arr[arr.shape[0] // 2]
    return arr


def png_bytes(img: np.ndarray) -> bytes:
    """Encode an image array as PNG (for download buttons)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(to_uint8(img)).save(buf, format="PNG")
    return buf.getvalue()


def probability_chart(probs: np.ndarray, labels: Sequence[str], true_index: Sequence[int]):
    """Plotly bar chart of class probabilities; the true class(es) drawn in a second colour."""
    import plotly.graph_objects as go

    colours = ["#2e7d32" if i in set(true_index) else "#90a4ae" for i in range(len(probs))]
    fig = go.Figure(
        go.Bar(
            x=[float(p) for p in probs],
            y=[f"{i}: {name}" for i, name in enumerate(labels)],
            orientation="h",
            marker_color=colours,
            text=[f"{p:.1%}" for p in probs],
            textposition="auto",
        )
    )
    fig.update_layout(
        height=100 + 28 * len(probs),
        margin=dict(l=10, r=10, t=30, b=45),
        xaxis=dict(range=[0, 1], title="predicted probability", tickformat=".0%"),
        yaxis=dict(autorange="reversed"),
        title=dict(text="Model probabilities (green = true label)", font=dict(size=14)),
    )
    return fig


def comparison_chart(groups: Sequence[dict], dataset: str, metric: str, title: str):
    """Horizontal bars of our groups (mean ± std over seeds) beside the published figures.

    Horizontal, so a long configuration label stays on one readable line.
    """
    import plotly.graph_objects as go

    fig = go.Figure()
    fig.add_bar(
        name="ours (mean ± std over seeds)",
        orientation="h",
        y=[f"{g['label']} (n={g['n']})" for g in groups],
        x=[g[f"{metric}_mean"] for g in groups],
        # thin and grey, so the value printed past the bar's end stays readable
        error_x=dict(
            type="data",
            array=[g[f"{metric}_std"] for g in groups],
            visible=True,
            color="rgba(0, 0, 0, 0.35)",
            thickness=1,
        ),
        marker_color="#1565c0",
        text=[f"{g[f'{metric}_mean']:.3f}" for g in groups],
        textposition="outside",
    )
    published = info.PUBLISHED.get(dataset, [])
    if published:
        fig.add_bar(
            name="published (MedMNIST v2 / MedMNIST+)",
            orientation="h",
            y=[p["method"] for p in published],
            x=[p[metric] for p in published],
            marker_color="#b0bec5",
            text=[f"{p[metric]:.3f}" for p in published],
            textposition="outside",
        )
    values = [g[f"{metric}_mean"] + g[f"{metric}_std"] for g in groups] + [
        p[metric] for p in published
    ]
    low = min(
        [g[f"{metric}_mean"] - g[f"{metric}_std"] for g in groups] + [p[metric] for p in published]
    )
    fig.update_layout(
        title=title,
        xaxis=dict(
            title=f"test {metric.upper()}",
            range=[max(0.0, low - 0.1), min(1.0, max(values) + 0.08)],
        ),
        yaxis=dict(autorange="reversed"),  # first configuration on top, as in the table
        height=max(320, 60 + 34 * (len(groups) + len(published))),
        margin=dict(l=10, r=10, t=50, b=10),
        legend=dict(orientation="h", y=-0.12),
        barmode="group",
    )
    return fig


def _display_base(image: np.ndarray, max_side: int = 512) -> np.ndarray:
    """An image for display: channel axis dropped when single, large uploads shrunk."""
    arr = to_uint8(image)
    if max(arr.shape[:2]) > max_side:
        from PIL import Image

        pil = Image.fromarray(arr)
        pil.thumbnail((max_side, max_side))
        arr = np.asarray(pil)
    return arr


def cam_pictures(
    display: np.ndarray,
    cam: np.ndarray,
    alpha: float,
    cmap: str,
    slice_index: int | None = None,
    side: int = 280,
) -> dict[str, np.ndarray]:
    """Original, coloured heatmap and overlay, ready for ``st.image``.

    Args:
        display: The original image ``(H, W[, C])`` or, for 3D, the volume ``(D, H, W[, 1])``.
        cam: Heatmap with the model input's spatial shape, in [0, 1].
        alpha: Heatmap opacity of the overlay.
        cmap: Matplotlib colormap name.
        slice_index: Axial slice to show for 3D inputs.
        side: Display size of small images (nearest-neighbour enlargement).
    """
    from core import explain

    if slice_index is not None:
        display = explain.take_slice(np.asarray(display), 0, slice_index)
        cam = explain.take_slice(cam, 0, slice_index)
    base = _display_base(display)
    overlay = explain.overlay(base, cam, alpha=alpha, cmap=cmap)
    return {
        "original": upscale(base, side),
        "heatmap": upscale(explain.colorize(cam, cmap), side),
        "overlay": upscale(overlay, side),
        "overlay_full": upscale(overlay, side),
    }


def occlusion_pictures(
    display: np.ndarray, maps: dict[str, Any], cmap: str, slice_index: int | None = None
) -> dict[str, np.ndarray]:
    """Overlays of the float and quantized occlusion maps on a common colour scale."""
    scale = max(float(np.max(maps["float"])), float(np.max(maps["quantized"])), 1e-9)
    out = {}
    for name in ("float", "quantized"):
        heat = np.clip(maps[name], 0.0, None) / scale  # evidence for the class only
        out[name] = cam_pictures(display, heat, 0.5, cmap, slice_index)["overlay"]
    return out


def alignment(x: np.ndarray, cams: dict[str, np.ndarray], flag: str) -> dict | None:
    """Energy of each heatmap inside the anatomy mask, and the mask's area; None if undefined."""
    from core import explain

    if flag not in explain.MASK_FLAGS:
        return None
    mask = explain.anatomy_mask(x, flag)
    return {
        "scores": {m: explain.energy_in_mask(cam, mask) for m, cam in cams.items()},
        "area": float(np.mean(mask)),
    }
