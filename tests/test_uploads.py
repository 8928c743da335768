"""Uploads are judged by content, bounded in bytes and pixels, and converted to model input."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image, ImageFile

from core.uploads import (
    MAX_BYTES,
    MAX_PIXELS,
    PreparedUpload,
    UploadError,
    open_upload,
    prepare_upload,
    sniff_format,
)


def encode(image: Image.Image, fmt: str = "PNG", **kwargs) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def gradient(mode: str = "L", size: tuple[int, int] = (40, 30)) -> Image.Image:
    w, h = size
    ramp = (np.arange(w * h, dtype=np.float64).reshape(h, w) / (w * h - 1) * 255).astype(np.uint8)
    grey = Image.fromarray(ramp, mode="L")
    return grey if mode == "L" else grey.convert(mode)


# Good inputs of every kind, each with the channels and the note the conversion must report.
GOOD_CASES = [
    ("grey png", encode(gradient("L")), 1, None),
    ("rgb png to grey model", encode(gradient("RGB")), 1, "converted to grey"),
    ("grey png to rgb model", encode(gradient("L")), 3, "replicated to 3 channels"),
    ("jpeg", encode(gradient("RGB"), "JPEG", quality=90), 3, None),
    ("rgba png", encode(gradient("RGBA")), 3, "alpha channel"),
    ("palette png", encode(gradient("RGB").convert("P")), 3, "Palette"),
    ("grey+alpha png", encode(gradient("LA")), 1, "alpha channel"),
    (
        "16-bit png",
        encode(Image.fromarray((np.linspace(0, 65535, 40 * 30).reshape(30, 40)).astype(np.uint16))),
        1,
        "8-bit",
    ),
]


@pytest.mark.parametrize(
    ("name", "data", "channels", "note"), GOOD_CASES, ids=[c[0] for c in GOOD_CASES]
)
def test_good_uploads_become_model_input(name, data, channels, note):
    out = prepare_upload(data, 28, channels)
    assert isinstance(out, PreparedUpload)
    assert out.array.shape == (28, 28, channels)
    assert out.array.dtype == np.float32
    assert out.array.min() >= 0.0 and out.array.max() <= 1.0
    # a gradient must survive the conversion (not collapse to a constant image)
    assert out.array.std() > 0.1
    assert out.original_size == (40, 30)
    assert any("Resized from 40×30 to 28×28" in n for n in out.notes)
    if note:
        assert any(note in n for n in out.notes), out.notes


def test_16_bit_uses_the_full_range():
    arr = np.full((28, 28), 1000, np.uint16)
    arr[:, 14:] = 3000  # narrow 16-bit range: a naive >>8 would give nearly black
    out = prepare_upload(encode(Image.fromarray(arr)), 28, 1)
    assert out.array.min() == 0.0 and out.array.max() == 1.0


def test_alpha_is_flattened_onto_black():
    rgba = Image.new("RGBA", (28, 28), (255, 255, 255, 0))  # fully transparent white
    out = prepare_upload(encode(rgba), 28, 3)
    assert out.array.max() == 0.0


def test_exact_size_is_not_resized():
    out = prepare_upload(encode(gradient("L", (28, 28))), 28, 1)
    assert not any("Resized" in n for n in out.notes)
    expected = np.asarray(gradient("L", (28, 28)), np.float32) / 255.0
    np.testing.assert_allclose(out.array[..., 0], expected)


def test_rectangular_target_and_aspect_note():
    out = prepare_upload(encode(gradient("L", (100, 50))), (32, 64), 3)
    assert out.array.shape == (32, 64, 3)
    assert not any("Aspect" in n for n in out.notes)
    out = prepare_upload(encode(gradient("L", (100, 100))), (32, 64), 3)
    assert any("Aspect" in n for n in out.notes)


def test_display_copy_keeps_original_resolution():
    out = prepare_upload(encode(gradient("RGBA", (60, 50))), 28, 1)
    assert out.display.shape == (50, 60, 3)
    assert out.display.dtype == np.uint8


def test_sniff_format():
    assert sniff_format(encode(gradient())) == "PNG"
    assert sniff_format(encode(gradient("RGB"), "JPEG")) == "JPEG"
    assert sniff_format(b"GIF89a....") is None
    assert sniff_format(b"") is None


BAD_CASES = [
    ("empty", b"", "empty"),
    ("text renamed png", b"this is not an image, just text\n" * 10, "not a PNG or JPEG"),
    ("gif", encode(gradient(), "GIF"), "not a PNG or JPEG"),
    ("bmp", encode(gradient(), "BMP"), "not a PNG or JPEG"),
    ("truncated png", encode(gradient("RGB", (64, 64)))[:120], "could not"),
    ("png signature then junk", b"\x89PNG\r\n\x1a\n" + b"\x00" * 200, "could not be read"),
]


@pytest.mark.parametrize(("name", "data", "message"), BAD_CASES, ids=[c[0] for c in BAD_CASES])
def test_bad_uploads_are_rejected_with_a_clear_message(name, data, message):
    with pytest.raises(UploadError, match=message) as refused:
        prepare_upload(data, 28, 1)
    text = str(refused.value)
    assert "\n  1. " in text, text  # numbered next steps
    assert " at 0x" not in text, text  # never an object repr


def test_too_many_bytes():
    with pytest.raises(UploadError, match=r"limit is 5\.0 MB"):
        open_upload(b"\x89PNG\r\n\x1a\n" + b"\x00" * MAX_BYTES)


def test_too_many_pixels_is_rejected_before_decoding():
    # 5000 x 5000 zeros compress to a few KB: small file, huge image (a decompression bomb).
    bomb = encode(Image.new("L", (5000, 5000)), optimize=True)
    assert len(bomb) < MAX_BYTES
    assert MAX_PIXELS < 5000 * 5000
    with pytest.raises(UploadError, match="megapixels"):
        prepare_upload(bomb, 28, 1)


def test_pillow_bomb_limit_gives_our_message():
    # 20000 x 20000 is over twice Pillow's own limit: Image.open itself raises.
    header = encode(gradient("L", (28, 28)))
    ihdr = struct.pack(">IIBBBBB", 20000, 20000, 8, 0, 0, 0, 0)
    data = header[:8] + struct.pack(">I", 13) + b"IHDR" + ihdr
    data += struct.pack(">I", zlib.crc32(b"IHDR" + ihdr)) + header[33:]
    with pytest.raises(UploadError, match=r"limit is 1\.0 megapixels\.\n  1\. Downscale"):
        prepare_upload(data, 28, 1, max_pixels=1_000_000)


def test_pixel_limit_is_a_parameter():
    data = encode(gradient("L", (40, 30)))
    with pytest.raises(UploadError, match="megapixels"):
        open_upload(data, max_pixels=1000)
    assert open_upload(data, max_pixels=1200).size == (40, 30)


def test_channels_must_be_one_or_three():
    with pytest.raises(UploadError, match="channels=4"):
        prepare_upload(encode(gradient()), 28, 4)


@pytest.mark.parametrize(
    ("data", "kind"),
    [
        (encode(gradient(), "GIF"), "a GIF image"),
        (encode(gradient(), "BMP"), "a BMP image"),
        (encode(gradient(), "TIFF"), "a TIFF image"),
        (encode(gradient("RGB"), "WEBP"), "a WebP image"),
        (b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00" + b"\x00" * 64, "a HEIC"),
    ],
    ids=["gif", "bmp", "tiff", "webp", "heic"],
)
def test_other_formats_are_named(data, kind):
    with pytest.raises(UploadError, match="not a PNG or JPEG image: by its content it is " + kind):
        prepare_upload(data, 28, 1)


def test_too_many_bytes_gives_steps():
    with pytest.raises(UploadError, match=r"\n  1\. Downscale"):
        open_upload(b"\x89PNG\r\n\x1a\n" + b"\x00" * MAX_BYTES)


def test_animated_png_uses_the_first_frame():
    first, second = Image.new("L", (28, 28), 200), Image.new("L", (28, 28), 10)
    out = prepare_upload(encode(first, save_all=True, append_images=[second]), 28, 1)
    assert out.array.mean() == pytest.approx(200 / 255)
    assert any("Animated PNG with 2 frames" in n for n in out.notes), out.notes


def interlaced_png(arr: np.ndarray, colour: int) -> bytes:
    """An Adam7-interlaced 8-bit PNG built by hand (Pillow cannot write one)."""

    def chunk(ctype: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body))
            + ctype
            + body
            + struct.pack(">I", zlib.crc32(ctype + body))
        )

    passes = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2))
    raw = b"".join(
        b"\0" + row.tobytes()
        for x0, y0, dx, dy in (*passes, (0, 1, 1, 2))
        for row in arr[y0::dy, x0::dx]
        if row.size
    )
    h, w = arr.shape[:2]
    ihdr = struct.pack(">IIBBBBB", w, h, 8, colour, 0, 0, 1)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize("shape", [(1, 1), (3, 2), (9, 7), (17, 33), (1, 64), (64, 1)])
@pytest.mark.parametrize(("colour", "channels"), [(0, 0), (2, 3), (4, 2), (6, 4)])
def test_interlaced_pngs_are_complete(shape, colour, channels):
    # Guards the missing-rows check: Adam7 row counts (and empty passes) must be counted right.
    rng = np.random.default_rng(sum(shape) + colour)
    arr = rng.integers(0, 256, shape + ((channels,) if channels else ()), dtype=np.uint8)
    out = prepare_upload(interlaced_png(arr, colour), 28, 3)
    assert out.original_size == (shape[1], shape[0])
    if colour in (0, 2):  # no alpha: the display copy is the pixels themselves
        np.testing.assert_array_equal(out.display, arr)


def test_memory_error_while_decoding_becomes_a_message(monkeypatch):
    def out_of_memory(self, *args, **kwargs):
        raise MemoryError

    monkeypatch.setattr(ImageFile.ImageFile, "load", out_of_memory)
    with pytest.raises(UploadError, match="more memory than the server has free") as refused:
        prepare_upload(encode(gradient()), 28, 1)
    assert isinstance(refused.value.__cause__, MemoryError)
    assert "\n  1. Downscale" in str(refused.value)


@pytest.mark.parametrize("error", [KeyError("tile"), ZeroDivisionError("division by zero")])
def test_unexpected_pillow_errors_become_a_message(monkeypatch, error):
    def broken(self, *args, **kwargs):
        raise error

    monkeypatch.setattr(ImageFile.ImageFile, "load", broken)
    with pytest.raises(UploadError, match="could not be read") as refused:
        prepare_upload(encode(gradient()), 28, 1)
    assert refused.value.__cause__ is error
    assert type(error).__name__ in str(refused.value)


def test_failure_while_converting_becomes_a_message(monkeypatch):
    def broken(self, *args, **kwargs):
        raise ValueError("unsupported resampling for mode <Image object at 0x7f00>")

    monkeypatch.setattr(Image.Image, "resize", broken)
    with pytest.raises(UploadError, match="could not be converted") as refused:
        prepare_upload(encode(gradient()), 28, 1)
    assert "0x7f00" not in str(refused.value)
    assert "\n  1. " in str(refused.value)
