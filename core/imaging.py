"""Pure numpy/PIL image helpers: colormaps, heatmap overlays, volume slices.

No TensorFlow here, so a page can draw pictures before (or without) loading a model. Every
function takes and returns plain arrays; ``core.explain`` re-exports them for its callers.
"""

from __future__ import annotations

import functools

import numpy as np


def colorize(heatmap: np.ndarray, cmap: str = "jet") -> np.ndarray:
    """Map a 2D heatmap in [0, 1] to uint8 RGB with a matplotlib colormap.

    Args:
        heatmap: ``(H, W)`` array; values are clipped to [0, 1].
        cmap: Matplotlib colormap name.

    Returns:
        ``(H, W, 3)`` uint8 array.
    """
    heat = np.clip(np.nan_to_num(np.asarray(heatmap, np.float32)), 0.0, 1.0)
    rgba = _colormap(cmap)(heat)
    return (rgba[..., :3] * 255.0 + 0.5).astype(np.uint8)


@functools.lru_cache(maxsize=32)
def _colormap(name: str):
    """A matplotlib colormap, kept: ``matplotlib.colormaps[name]`` returns a fresh copy that
    rebuilds its lookup table on first use (~6 ms, twice per Grad-CAM page rerun)."""
    import matplotlib

    return matplotlib.colormaps[name]


def _to_rgb_uint8(image: np.ndarray) -> np.ndarray:
    img = np.asarray(image)
    if img.ndim == 3 and img.shape[-1] == 1:
        img = img[..., 0]
    if img.ndim == 2:
        img = np.stack([img] * 3, axis=-1)
    if img.ndim != 3 or img.shape[-1] != 3:
        raise ValueError(f"image must be (H, W), (H, W, 1) or (H, W, 3); got shape {img.shape}")
    if img.dtype != np.uint8:
        img = (np.clip(img.astype(np.float32), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    return img


def _bilinear_taps(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source indices and weights of a half-pixel-centred linear resize along one axis.

    The arithmetic of TensorFlow's ``ResizeBilinear(half_pixel_centers=True)`` kernel (what
    ``tf.image.resize`` runs), in float32, so overlays look as they did when TF drew them.
    """
    scale = np.float32(n_in) / np.float32(n_out)
    pos = (np.arange(n_out, dtype=np.float32) + np.float32(0.5)) * scale - np.float32(0.5)
    floor = np.floor(pos)
    lo = np.maximum(floor.astype(np.int64), 0)
    hi = np.minimum(np.ceil(pos).astype(np.int64), n_in - 1)
    return lo, hi, (pos - floor).astype(np.float32)


def _resize_2d(heat: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a 2D float map (half-pixel centres, no antialiasing)."""
    if heat.shape == shape:
        return heat
    heat = np.asarray(heat, np.float32)
    y_lo, y_hi, y_lerp = _bilinear_taps(heat.shape[0], shape[0])
    x_lo, x_hi, x_lerp = _bilinear_taps(heat.shape[1], shape[1])
    top_left, top_right = heat[y_lo][:, x_lo], heat[y_lo][:, x_hi]
    bottom_left, bottom_right = heat[y_hi][:, x_lo], heat[y_hi][:, x_hi]
    top = top_left + (top_right - top_left) * x_lerp
    bottom = bottom_left + (bottom_right - bottom_left) * x_lerp
    return top + (bottom - top) * y_lerp[:, None]


def overlay(
    image: np.ndarray,
    heatmap: np.ndarray,
    alpha: float = 0.4,
    cmap: str = "jet",
    contour_quantile: float | None = None,
    contour_color: tuple[int, int, int] = (255, 255, 255),
) -> np.ndarray:
    """Blend a heatmap over an image, optionally outlining the hottest region.

    Args:
        image: ``(H, W)``, ``(H, W, 1)`` or ``(H, W, 3)``; float in [0, 1] or uint8.
        heatmap: ``(h, w)`` in [0, 1]; resized to the image if needed.
        alpha: Heatmap opacity in [0, 1].
        cmap: Matplotlib colormap name.
        contour_quantile: If set (e.g. 0.9), draw the outline of the pixels whose heat is at or
            above this quantile of the map.
        contour_color: RGB of the outline.

    Returns:
        ``(H, W, 3)`` uint8 RGB.

    Raises:
        ValueError: For ``alpha`` outside [0, 1], ``contour_quantile`` outside (0, 1) or an
            image that is not grey or RGB.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    base = _to_rgb_uint8(image)
    heat = _resize_2d(np.asarray(heatmap, np.float32), base.shape[:2])
    color = colorize(heat, cmap).astype(np.float32)
    out = (1.0 - alpha) * base.astype(np.float32) + alpha * color
    out = np.clip(out + 0.5, 0, 255).astype(np.uint8)
    if contour_quantile is not None:
        if not 0.0 < contour_quantile < 1.0:
            raise ValueError(f"contour_quantile must be in (0, 1), got {contour_quantile}")
        from scipy import ndimage

        level = np.quantile(heat, contour_quantile)
        if level > 0:
            region = heat >= level
            edge = region & ~ndimage.binary_erosion(region, border_value=0)
            out[edge] = np.asarray(contour_color, np.uint8)
    return out


def take_slice(volume: np.ndarray, axis: int, index: int) -> np.ndarray:
    """One 2D slice of a ``(D, H, W)`` or ``(D, H, W, C)`` volume.

    Args:
        volume: The volume (a trailing channel axis is kept on the slice).
        axis: 0 (axial/depth), 1 or 2.
        index: Slice index along ``axis``; must be in range.

    Returns:
        The 2D slice, ``(rows, cols)`` or ``(rows, cols, C)``.

    Raises:
        ValueError: For a volume of another rank, a bad axis or an index out of range.
    """
    vol = np.asarray(volume)
    if vol.ndim not in (3, 4):
        raise ValueError(f"volume must be (D, H, W) or (D, H, W, C); got shape {vol.shape}")
    if axis not in (0, 1, 2):
        raise ValueError(f"axis must be 0, 1 or 2, got {axis}")
    if not 0 <= index < vol.shape[axis]:
        raise ValueError(f"slice index {index} out of range 0..{vol.shape[axis] - 1}")
    return np.take(vol, index, axis=axis)


def overlay_slice(
    volume: np.ndarray,
    heatmap: np.ndarray,
    axis: int,
    index: int,
    alpha: float = 0.4,
    cmap: str = "jet",
    contour_quantile: float | None = None,
) -> np.ndarray:
    """:func:`overlay` on one slice of a volume and its 3D heatmap (same spatial shape)."""
    return overlay(
        take_slice(volume, axis, index),
        take_slice(heatmap, axis, index),
        alpha=alpha,
        cmap=cmap,
        contour_quantile=contour_quantile,
    )
