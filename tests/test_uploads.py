"""Uploads are judged by content, bounded in bytes and pixels, and converted to model input."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

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
    with pytest.raises(UploadError, match=message):
        prepare_upload(data, 28, 1)


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


def test_pixel_limit_is_a_parameter():
    data = encode(gradient("L", (40, 30)))
    with pytest.raises(UploadError, match="megapixels"):
        open_upload(data, max_pixels=1000)
    assert open_upload(data, max_pixels=1200).size == (40, 30)


def test_channels_must_be_one_or_three():
    with pytest.raises(UploadError, match="channels=4"):
        prepare_upload(encode(gradient()), 28, 4)
