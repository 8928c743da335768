"""Validation and conversion of user-uploaded images, entirely in memory.

An upload is judged by its content, never by its name or the MIME type the browser claims:
the first bytes must be a PNG or JPEG signature, Pillow must parse and verify the file, and
the byte and pixel counts must stay under fixed limits *before* the pixels are decoded (a
small, highly compressed PNG can expand to gigabytes: a decompression bomb). Nothing here
writes to disk.

Whatever goes wrong while Pillow or numpy opens, decodes or converts an upload becomes an
``UploadError`` whose message says what is wrong and what to do, in numbered steps: the two
public functions are a boundary that lets no other exception out (a damaged file is the
uploader's problem to fix, never a crash). Multi-picture JPEGs (MPO, written by phones and
3D cameras) and animated PNGs are accepted; their first picture is used.

Conversion then maps whatever arrives (16-bit grey, RGBA, palette, grey+alpha, CMYK) to the
channels and spatial size the chosen model expects, and reports each step it took so the UI
can say what happened to the image.
"""

from __future__ import annotations

import io
import logging
import re
import struct
import warnings
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, PngImagePlugin, UnidentifiedImageError

log = logging.getLogger(__name__)

MAX_BYTES = 5 * 1024 * 1024
"""Largest accepted upload (matches ``server.maxUploadSize = 5`` in .streamlit/config.toml)."""

MAX_PIXELS = 4096 * 4096
"""Largest accepted width x height; checked from the header before any pixel is decoded."""

ALLOWED_FORMATS = ("PNG", "JPEG")

_SIGNATURES = {
    b"\x89PNG\r\n\x1a\n": "PNG",
    b"\xff\xd8\xff": "JPEG",
}

# What Pillow may report for a file whose signature said PNG or JPEG. A JPEG carrying an MP
# index (several pictures) opens as "MPO"; its first frame is an ordinary JPEG.
_READ_AS = {"PNG": ("PNG",), "JPEG": ("JPEG", "MPO")}

# Formats people upload by mistake, named so the message can say what the file really is.
_OTHER_SIGNATURES = (
    (b"GIF87a", "a GIF image"),
    (b"GIF89a", "a GIF image"),
    (b"BM", "a BMP image"),
    (b"II*\x00", "a TIFF image"),
    (b"MM\x00*", "a TIFF image"),
    (b"%PDF", "a PDF document"),
    (b"\x00\x00\x00\x0cjP  ", "a JPEG 2000 image"),
)

_PIXEL_ADVICE = "Downscale it (the models look at 28–64 px anyway) and upload again."
_REEXPORT_STEPS = (
    "  1. Open the file on your computer and check that it displays completely.\n"
    "  2. Export (save) it again as PNG or JPEG.\n"
    "  3. Upload the exported copy."
)


class UploadError(ValueError):
    """An upload that cannot be used; the message is written for the person who uploaded it."""


@dataclass(frozen=True)
class PreparedUpload:
    """An upload converted to a model input.

    Attributes:
        array: float32 array ``(H, W, C)`` in [0, 1] at the model's size and channel count.
        display: uint8 array ``(H, W)`` or ``(H, W, 3)`` of the original image (alpha removed)
            for showing beside the heatmap.
        format: "PNG" or "JPEG" (from the content, not the file name; a multi-picture JPEG
            counts as "JPEG" and a note says which picture was used).
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


def _other_kind(data: bytes) -> str | None:
    """Name a common non-PNG/JPEG file type from its signature ("a GIF image"), else None."""
    for magic, name in _OTHER_SIGNATURES:
        if data.startswith(magic):
            return name
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "a WebP image"
    if data[4:8] == b"ftyp" and data[8:12] in (b"heic", b"heix", b"mif1", b"msf1", b"avif"):
        return "a HEIC/AVIF image (the iPhone camera's default format)"
    return None


def _human_bytes(n: int) -> str:
    if n >= 1024 * 1024:
        return f"{n / (1024 * 1024):.1f} MB"
    if n >= 1024:
        return f"{n / 1024:.0f} KB"
    return f"{n} bytes"


_REPR = re.compile(r"<[^<>]*\bat 0x[0-9a-fA-F]+>")


def _detail(exc: BaseException, limit: int = 160) -> str:
    """The exception's own text, safe to show: no object reprs, one line, bounded length."""
    text = _REPR.sub("", str(exc))
    text = " ".join(text.split()).strip(" :,")
    if len(text) > limit:
        text = text[: limit - 1].rstrip() + "…"
    return text or type(exc).__name__


def _png_header_size(data: bytes) -> tuple[int, int] | None:
    """``(width, height)`` from a PNG's IHDR, read by hand (Pillow hides why it refused one)."""
    if len(data) >= 24 and data[12:16] == b"IHDR":
        return struct.unpack(">II", data[16:24])
    return None


def _explain(exc: BaseException, fmt: str, data: bytes, stage: str) -> str:
    """Turn any exception raised on an upload into a message with numbered next steps.

    Args:
        exc: What Pillow or numpy raised.
        fmt: "PNG" or "JPEG", from the file signature.
        data: The uploaded bytes (only the PNG header is read, to name a zero size).
        stage: "decode" (opening, verifying, decoding) or "convert" (to the model's input).

    Returns:
        The message for the person who uploaded the file.
    """
    detail = _detail(exc)
    low = detail.lower()
    if isinstance(exc, MemoryError):
        return (
            f"The {fmt} image could not be read: decoding it needed more memory than the "
            "server has free.\n"
            "  1. Downscale the image (the models look at 28–64 px anyway), e.g. to at most "
            "1024×1024 px.\n"
            "  2. Upload the smaller copy; if it keeps happening, retry when the server is less "
            "busy."
        )
    if "decompressed data too large" in low or "too much memory used in text chunks" in low:
        # Pillow refuses compressed text (zTXt/iTXt) or ICC-profile (iCCP) chunks that expand
        # past MAX_TEXT_CHUNK each, or past MAX_TEXT_MEMORY together: a metadata bomb.
        per_chunk = PngImagePlugin.MAX_TEXT_CHUNK // (1024 * 1024)
        total = PngImagePlugin.MAX_TEXT_MEMORY // (1024 * 1024)
        return (
            f"The {fmt} file could not be read: it carries compressed metadata (text or an ICC "
            f"colour profile) that would expand to more than {per_chunk} MB per block or "
            f"{total} MB in all. Files built like this are 'decompression bombs', so it was "
            f"refused without expanding it (Pillow: {detail}).\n"
            "  1. Re-export the image without metadata (e.g. 'Export for web' or 'Remove "
            "metadata' in your editor).\n"
            "  2. Upload the re-exported copy."
        )
    if isinstance(exc, UnidentifiedImageError):
        size = _png_header_size(data) if fmt == "PNG" else None
        if size is not None and 0 in size:
            what = f"its header says the image is {size[0]}×{size[1]} pixels (nothing to show)"
        else:
            what = f"its header is damaged (Pillow does not recognise it as a {fmt} image)"
        return f"The file starts like a {fmt} image but could not be read: {what}.\n" + (
            _REEXPORT_STEPS
        )
    if stage == "convert":
        # Decoded images that fail here point at a gap in this module: keep the traceback.
        log.warning("upload decoded but not converted", exc_info=exc)
        return (
            f"The {fmt} image was read but could not be converted to the model's input "
            f"({detail}).\n"
            "  1. Export the image as an 8-bit RGB or greyscale PNG.\n"
            "  2. Upload that copy; if it still fails, report the file to the maintainers."
        )
    if "truncat" in low or "end of file" in low or isinstance(exc, EOFError):
        what = "it is cut short, or a block inside it is incomplete"
    else:
        what = "its data is damaged"
    if not isinstance(exc, OSError | SyntaxError | ValueError):
        # IndexError, struct.error, KeyError, ...: Pillow tripping over the damage itself. The
        # bare Python text ("list index out of range") means little without the type.
        detail = f"{type(exc).__name__}: {detail}"
    log.debug("upload refused while decoding", exc_info=exc)
    return (
        f"The file starts like a {fmt} image but could not be read: {what} (Pillow: "
        f"{detail}).\n{_REEXPORT_STEPS}"
    )


@contextmanager
def _refusing(fmt: str, data: bytes, stage: str) -> Iterator[None]:
    """Let only ``UploadError`` out: anything else raised inside becomes one, chained.

    ``Exception`` is caught on purpose: Pillow's plugins raise ValueError, OSError,
    SyntaxError, EOFError, struct.error, IndexError, KeyError, ZeroDivisionError, ... on
    malformed input, and that list changes between versions. MemoryError is included (it is
    an Exception): the failed allocation is already released when it propagates, so the
    server can go on and the user is told to downscale. KeyboardInterrupt and SystemExit are
    not Exceptions and pass through.
    """
    try:
        yield
    except UploadError:
        raise
    except Exception as e:
        raise UploadError(_explain(e, fmt, data, stage)) from e


def _check_bytes(data: bytes, max_bytes: int) -> str:
    """Refuse empty, oversized and non-PNG/JPEG uploads; return the sniffed format."""
    if not data:
        raise UploadError(
            "The file is empty (0 bytes).\n"
            "  1. Check the file on your computer is not empty (it may not have finished "
            "downloading or saving).\n"
            "  2. Upload a PNG or JPEG image."
        )
    if len(data) > max_bytes:
        raise UploadError(
            f"The file is {_human_bytes(len(data))}; the limit is {_human_bytes(max_bytes)}.\n"
            "  1. Downscale the image or save it as JPEG.\n"
            "  2. Upload the smaller copy."
        )
    fmt = sniff_format(data)
    if fmt is None:
        kind = _other_kind(data)
        what = (
            f"by its content it is {kind}"
            if kind
            else f"its content does not start with a PNG or JPEG signature (first bytes: "
            f"{data[:8].hex(' ')})"
        )
        raise UploadError(
            f"This file is not a PNG or JPEG image: {what}. Renaming a file does not change "
            "its type.\n"
            "  1. Open the image in an image viewer or editor.\n"
            "  2. Export (save) it as PNG or JPEG.\n"
            "  3. Upload the exported copy."
        )
    return fmt


# Samples per pixel of each PNG colour type, and the Adam7 passes (x0, y0, dx, dy).
_PNG_SAMPLES = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2))
_ADAM7 += ((0, 1, 1, 2),)


def _png_short_rows(data: bytes) -> tuple[int, int] | None:
    """``(bytes found, bytes needed)`` if a PNG's image data ends before its last row.

    Pillow stops without complaint when the compressed stream ends early (a cleanly closed
    zlib stream with fewer rows than IHDR announces) and leaves the missing rows black, so a
    damaged file would be shown and explained as if it were whole. The stream is inflated in
    1 MB steps and only counted, never kept. Returns None when the data is complete or the
    file is too odd to judge (Pillow has already decoded it, so let that stand).
    """
    pos, needed, found = 8, None, 0
    inflate = zlib.decompressobj()
    try:
        while pos + 8 <= len(data):
            length, ctype = struct.unpack(">I4s", data[pos : pos + 8])
            body = data[pos + 8 : pos + 8 + length]
            if ctype == b"IHDR":
                width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", body)
                bits = _PNG_SAMPLES[colour] * depth
                passes = _ADAM7 if interlace else ((0, 0, 1, 1),)
                needed = 0
                for x0, y0, dx, dy in passes:
                    cols, rows = -(-(width - x0) // dx), -(-(height - y0) // dy)
                    if cols > 0 and rows > 0:  # empty Adam7 passes have no filter bytes
                        needed += rows * (1 + (cols * bits + 7) // 8)
            elif ctype == b"IDAT" and needed is not None:
                while found < needed:
                    out = inflate.decompress(body, 1 << 20)
                    body, found = inflate.unconsumed_tail, found + len(out)
                    if not out and not body:  # this chunk is used up; go on to the next
                        break
            elif ctype == b"IEND":
                break
            pos += 12 + length
    except (KeyError, struct.error, zlib.error):
        return None
    return (found, needed) if needed is not None and found < needed else None


def _decode(data: bytes, fmt: str, max_pixels: int) -> tuple[Image.Image, list[str]]:
    """Open, verify and fully decode ``data``; return the image and notes about frames.

    Raises:
        UploadError: too many pixels, or not read as the signature's format.
        Exception: whatever Pillow raises (the caller turns it into an UploadError).
    """
    # Pillow's own bomb guard only warns below 2x its limit; we enforce our lower limit from
    # the header (width/height are known before decoding) and silence its warning.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            probe = Image.open(io.BytesIO(data), formats=[fmt])
        except Image.DecompressionBombError as e:  # over twice Pillow's own pixel limit
            raise UploadError(
                f"The image has far too many pixels ({_detail(e)}); the limit is "
                f"{max_pixels / 1e6:.1f} megapixels.\n  1. {_PIXEL_ADVICE}"
            ) from e
        width, height = probe.size
        if width * height > max_pixels:
            raise UploadError(
                f"The image is {width}×{height} pixels ({width * height / 1e6:.1f} "
                f"megapixels); the limit is {max_pixels / 1e6:.1f} megapixels.\n"
                f"  1. {_PIXEL_ADVICE}"
            )
        probe.verify()  # checks chunk CRCs / structure without decoding pixels
        image = Image.open(io.BytesIO(data), formats=[fmt])
        image.load()  # the first frame only, for multi-picture files
        frames = int(getattr(image, "n_frames", 1))
    short = _png_short_rows(data) if fmt == "PNG" else None
    if short is not None:
        raise UploadError(
            f"The file starts like a PNG image but could not be read: its image data ends "
            f"early ({short[0]:,} of the {short[1]:,} bytes its header announces; the rest "
            "would show as black).\n" + _REEXPORT_STEPS
        )
    if image.format not in _READ_AS[fmt]:
        raise UploadError(
            f"The file starts like a {fmt} image but Pillow read it as {image.format}.\n"
            + _REEXPORT_STEPS
        )
    notes = []
    if image.format == "MPO":
        notes.append(
            f"Multi-picture JPEG (MPO, {frames} pictures, as phones and 3D cameras write): "
            "the first picture was used."
        )
    elif frames > 1:
        notes.append(f"Animated {fmt} with {frames} frames: the first frame was used.")
    return image, notes


def open_upload(
    data: bytes, *, max_bytes: int = MAX_BYTES, max_pixels: int = MAX_PIXELS
) -> Image.Image:
    """Validate an uploaded file's bytes and return the decoded Pillow image.

    Args:
        data: The whole uploaded file.
        max_bytes: Largest accepted file size.
        max_pixels: Largest accepted width x height.

    Returns:
        A fully loaded ``PIL.Image.Image`` (no lazy file handle left open). For a
        multi-picture JPEG (``format == "MPO"``) the first picture is the one loaded.

    Raises:
        UploadError: empty, too large, not PNG/JPEG by content, corrupt, truncated, a
            metadata bomb, too many pixels, or anything else Pillow refuses. The message says
            what was received and what to do, in numbered steps. No other exception escapes.
    """
    fmt = _check_bytes(data, max_bytes)
    with _refusing(fmt, data, "decode"):
        return _decode(data, fmt, max_pixels)[0]


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
    return Image.fromarray(np.round(scaled * 255).astype(np.uint8))  # 2-D uint8: mode "L"


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


def _convert(
    image: Image.Image, height: int, width: int, channels: int, notes: list[str]
) -> tuple[np.ndarray, np.ndarray]:
    """Map a decoded image to ``(model input, display copy)``, appending each step to notes."""
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
    return array, display


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
        UploadError: see ``open_upload``; also for an unsupported channel count, and for any
            failure while converting the decoded image (no other exception escapes).
    """
    if channels not in (1, 3):
        raise UploadError(f"Models take 1 or 3 channels; got channels={channels!r}.")
    height, width = (size, size) if isinstance(size, int) else size
    fmt = _check_bytes(data, max_bytes)
    with _refusing(fmt, data, "decode"):
        image, notes = _decode(data, fmt, max_pixels)
    original_size, original_mode = image.size, image.mode
    with _refusing(fmt, data, "convert"):
        array, display = _convert(image, height, width, channels, notes)
    return PreparedUpload(
        array=array,
        display=display,
        format=fmt,
        original_size=original_size,
        original_mode=original_mode,
        notes=notes,
    )
