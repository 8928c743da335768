"""Validation and conversion of user-uploaded images, entirely in memory.

An upload is judged by its content, never by its name or the MIME type the browser claims:
the first bytes must be a PNG or JPEG signature, Pillow must parse and verify the file, and
the byte and pixel counts must stay under fixed limits *before* the pixels are decoded (a
small, highly compressed PNG can expand to gigabytes: a decompression bomb). Nothing here
writes to disk.

Conversion then maps whatever arrives (16-bit grey, RGBA, palette, grey+alpha, CMYK) to the
channels and spatial size the chosen model expects, and reports each step it took so the UI
can say what happened to the image.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, UnidentifiedImageError

MAX_BYTES = 5 * 1024 * 1024
"""Largest accepted upload (matches ``server.maxUploadSize = 5`` in .streamlit/config.toml)."""

MAX_PIXELS = 4096 * 4096
"""Largest accepted width x height; checked from the header before any pixel is decoded."""

ALLOWED_FORMATS = ("PNG", "JPEG")

_SIGNATURES = {
    b"\x89PNG\r\n\x1a\n": "PNG",
    b"\xff\xd8\xff": "JPEG",
}


class UploadError(ValueError):
    """An upload that cannot be used; the message is written for the person who uploaded it."""


@dataclass(frozen=True)
class PreparedUpload:
    """An upload converted to a model input.

    Attributes:
        array: float32 array ``(H, W, C)`` in [0, 1] at the model's size and channel count.
        display: uint8 array ``(H, W)`` or ``(H, W, 3)`` of the original image (alpha removed)
            for showing beside the heatmap.
        format: "PNG" or "JPEG" (from the content, not the file name).
        original_size: ``(width, height)`` of the uploaded image.
        original_mode: Pillow mode of the uploaded image ("I;16", "RGBA", "P", ...).
        notes: human-readable conversion steps taken, in order.
    """

    array: np.ndarray
    display: np.ndarray
    format: str
    original_size: tuple[int, int]
    original_mode: str
    notes: list[str] = field(default_factory=list)


def sniff_format(data: bytes) -> str | None:
    """Return "PNG" or "JPEG" from the file signature, or None for anything else."""
    for magic, name in _SIGNATURES.items():
        if data.startswith(magic):
            return name
    return None


def _human_bytes(n: int) -> str:
    if n >= 1024 * 1024:
        return f"{n / (1024 * 1024):.1f} MB"
    if n >= 1024:
        return f"{n / 1024:.0f} KB"
    return f"{n} bytes"


def open_upload(
    data: bytes, *, max_bytes: int = MAX_BYTES, max_pixels: int = MAX_PIXELS
) -> Image.Image:
    """Validate an uploaded file's bytes and return the decoded Pillow image.

    Args:
        data: The whole uploaded file.
        max_bytes: Largest accepted file size.
        max_pixels: Largest accepted width x height.

    Returns:
        A fully loaded ``PIL.Image.Image`` (no lazy file handle left open).

    Raises:
        UploadError: empty, too large, not PNG/JPEG by content, corrupt or truncated, or too
            many pixels. The message says what was received and what is accepted.
    """
    if not data:
        raise UploadError("The file is empty (0 bytes). Upload a PNG or JPEG image.")
    if len(data) > max_bytes:
        raise UploadError(
            f"The file is {_human_bytes(len(data))}; the limit is {_human_bytes(max_bytes)}. "
            "Upload a smaller PNG or JPEG image."
        )
    fmt = sniff_format(data)
    if fmt is None:
        head = data[:8].hex(" ")
        raise UploadError(
            "This file is not a PNG or JPEG image: its content does not start with a PNG or "
            f"JPEG signature (first bytes: {head}). Renaming a file does not change its type; "
            "export the image as PNG or JPEG and upload that."
        )
    # Pillow's own bomb guard only warns below 2x its limit; we enforce our lower limit from
    # the header (width/height are known before decoding) and silence its warning.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            probe = Image.open(io.BytesIO(data), formats=[fmt])
            width, height = probe.size
        except Image.DecompressionBombError as e:
            raise UploadError(
                f"The image has far too many pixels ({e}); the limit is "
                f"{max_pixels / 1e6:.1f} megapixels. Downscale it and upload again."
            ) from e
        except (UnidentifiedImageError, OSError, SyntaxError) as e:
            raise UploadError(
                f"The file starts like a {fmt} image but could not be read ({e}). "
                "It may be corrupt or truncated; export it again and retry."
            ) from e
        if width * height > max_pixels:
            raise UploadError(
                f"The image is {width}×{height} pixels ({width * height / 1e6:.1f} megapixels); "
                f"the limit is {max_pixels / 1e6:.1f} megapixels. Downscale it (the models "
                "look at 28–64 px anyway) and upload again."
            )
        try:
            probe.verify()  # checks chunk CRCs / structure without decoding pixels
            image = Image.open(io.BytesIO(data), formats=[fmt])
            image.load()
        except (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError) as e:
            raise UploadError(
                f"The {fmt} file is damaged and could not be decoded ({e}). "
                "Export it again and retry."
            ) from e
    if image.format != fmt:
        raise UploadError(f"Expected a {fmt} image but Pillow read {image.format}.")
    return image


def _to_8bit(image: Image.Image, notes: list[str]) -> Image.Image:
    """Map 16-bit and 32-bit integer/float grey images to 8-bit grey by their value range."""
    if image.mode not in ("I;16", "I;16B", "I;16L", "I", "F"):
        return image
    arr = np.asarray(image, dtype=np.float64)
    lo, hi = float(arr.min()), float(arr.max())
    scaled = np.zeros_like(arr) if hi <= lo else (arr - lo) / (hi - lo)
    notes.append(
        f"{image.mode} image (range {lo:g}–{hi:g}) rescaled to 8-bit grey by its min–max range."
    )
    return Image.fromarray(np.round(scaled * 255).astype(np.uint8), mode="L")


def _drop_alpha(image: Image.Image, notes: list[str]) -> Image.Image:
    """Flatten palette and alpha onto black (MedMNIST backgrounds are dark)."""
    if image.mode == "P":
        has_alpha = "transparency" in image.info
        image = image.convert("RGBA" if has_alpha else "RGB")
        notes.append("Palette image expanded to RGB.")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        image = Image.alpha_composite(background, rgba).convert("RGB")
        notes.append("Transparency (alpha channel) flattened onto a black background.")
    if image.mode == "CMYK":
        image = image.convert("RGB")
        notes.append("CMYK image converted to RGB.")
    if image.mode == "1":
        image = image.convert("L")
        notes.append("1-bit image converted to 8-bit grey.")
    if image.mode not in ("L", "RGB"):
        notes.append(f"{image.mode} image converted to RGB.")
        image = image.convert("RGB")
    return image


def prepare_upload(
    data: bytes,
    size: int | tuple[int, int],
    channels: int,
    *,
    max_bytes: int = MAX_BYTES,
    max_pixels: int = MAX_PIXELS,
) -> PreparedUpload:
    """Validate an upload and convert it to one model input.

    Args:
        data: The uploaded file's bytes.
        size: Target side (square) or ``(height, width)`` of the model input.
        channels: 1 (grey) or 3 (RGB) channels expected by the model.
        max_bytes: Largest accepted file size.
        max_pixels: Largest accepted width x height.

    Returns:
        A ``PreparedUpload`` whose ``array`` has shape ``(H, W, channels)``, float32 in [0, 1].

    Raises:
        UploadError: see ``open_upload``; also for an unsupported channel count.
    """
    if channels not in (1, 3):
        raise UploadError(f"Models take 1 or 3 channels; got channels={channels!r}.")
    height, width = (size, size) if isinstance(size, int) else size
    image = open_upload(data, max_bytes=max_bytes, max_pixels=max_pixels)
    fmt, original_size, original_mode = image.format, image.size, image.mode
    notes: list[str] = []
    image = _drop_alpha(_to_8bit(image, notes), notes)
    display = np.asarray(image, dtype=np.uint8).copy()

    if channels == 1 and image.mode != "L":
        image = image.convert("L")
        notes.append("Colour image converted to grey (luminance) for a 1-channel model.")
    elif channels == 3 and image.mode != "RGB":
        image = image.convert("RGB")
        notes.append("Grey image replicated to 3 channels for an RGB model.")

    if image.size != (width, height):
        # BOX averages every source pixel into the small target (no aliasing when shrinking a
        # large photo to 28 px); bilinear is the better choice when enlarging.
        shrinking = image.size[0] >= width and image.size[1] >= height
        method = Image.Resampling.BOX if shrinking else Image.Resampling.BILINEAR
        notes.append(
            f"Resized from {image.size[0]}×{image.size[1]} to {width}×{height} px "
            f"({'area average' if shrinking else 'bilinear'})."
        )
        if image.size[0] / image.size[1] != width / height:
            notes.append("Aspect ratio changed: the image was stretched to a square.")
        image = image.resize((width, height), method)

    array = np.asarray(image, dtype=np.float32) / 255.0
    if array.ndim == 2:
        array = array[..., None]
    return PreparedUpload(
        array=array,
        display=display,
        format=fmt,
        original_size=original_size,
        original_mode=original_mode,
        notes=notes,
    )
