"""Seeded fuzzing of ``core.uploads``: a mutated image is a valid model input or an UploadError.

Valid PNG, JPEG, GIF, BMP, TIFF and WebP files are made with Pillow at test start (32×32 and
smaller), then mutated: byte flips, truncations, span deletions/duplications, PNG chunk-level
edits with the CRC recomputed (so Pillow gets past its CRC check into the chunk logic), JPEG
segment-level edits, and other formats' bodies behind a PNG/JPEG signature. Every variant must
come back either as a ``PreparedUpload`` honouring the module's contract (float32
``(H, W, C)`` in [0, 1], uint8 display copy) or as an ``UploadError`` whose message has
numbered steps and no object repr. Anything else (a raw ValueError, OSError, SyntaxError,
struct.error, ... from Pillow) fails the test with the variant's name and a saved copy.

The seed is fixed, so a run is reproducible; the whole file runs in well under a minute.
Regression cases from issue 17 (metadata bombs, a 12-byte IHDR, a zero-width PNG, MPO) are
checked by name at the end.
"""

from __future__ import annotations

import io
import random
import re
import struct
import warnings
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from functools import cache

import numpy as np
import pytest
from PIL import Image, ImageCms, PngImagePlugin

from core.uploads import MAX_PIXELS, PreparedUpload, UploadError, prepare_upload

SEED = 20261130
# Variants per seed format (PNG and JPEG reach Pillow's decoders directly; the others are
# refused by signature unless spliced behind a PNG/JPEG signature, so they get fewer).
COUNTS = {"PNG": 8000, "JPEG": 6000, "GIF": 1000, "BMP": 1000, "TIFF": 1000, "WEBP": 1000}
INTERESTING = (0, 1, 2, 7, 8, 15, 16, 27, 28, 31, 32, 33, 255, 256, 4095, 4096, 4097)
INTERESTING += (65535, 65536, 2**31 - 1, 2**31, 2**32 - 1)
PNG_SIG = b"\x89PNG\r\n\x1a\n"
PNG_TYPES = (b"IHDR", b"PLTE", b"IDAT", b"IEND", b"tRNS", b"gAMA", b"cHRM", b"sRGB", b"iCCP")
PNG_TYPES += (b"tEXt", b"zTXt", b"iTXt", b"bKGD", b"pHYs", b"sBIT", b"hIST", b"eXIf", b"sPLT")
PNG_TYPES += (b"acTL", b"fcTL", b"fdAT", b"tIME", b"cICP", b"xyzw")
REPR = re.compile(r"<[^<>]*\bat 0x[0-9a-fA-F]+>|object at 0x")


# ------------------------------------------------------------------------------------------
# Building blocks: PNG chunks and JPEG segments
# ------------------------------------------------------------------------------------------


def chunk(ctype: bytes, data: bytes) -> bytes:
    """One PNG chunk with a correct CRC."""
    return struct.pack(">I", len(data)) + ctype + data + struct.pack(">I", zlib.crc32(ctype + data))


def png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    """``[(type, data), ...]`` of a well-formed PNG (CRCs not checked)."""
    out, pos = [], len(PNG_SIG)
    while pos + 12 <= len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        out.append((data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]))
        pos += 12 + length
    return out


def build_png(chunks: list[tuple[bytes, bytes]]) -> bytes:
    return PNG_SIG + b"".join(chunk(t, d) for t, d in chunks)


def jpeg_segments(data: bytes) -> tuple[list[tuple[int, bytes]], bytes]:
    """``([(marker, payload), ...] up to the first SOS, rest from SOS on)`` of a JPEG."""
    segments, pos = [], 2
    while pos + 4 <= len(data) and data[pos] == 0xFF and data[pos + 1] != 0xDA:
        marker = data[pos + 1]
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        segments.append((marker, data[pos + 4 : pos + 2 + length]))
        pos += 2 + length
    return segments, data[pos:]


def build_jpeg(segments: list[tuple[int, bytes]], rest: bytes) -> bytes:
    body = b"".join(
        b"\xff" + bytes([m]) + struct.pack(">H", min(len(p) + 2, 0xFFFF)) + p for m, p in segments
    )
    return b"\xff\xd8" + body + rest


def compressed(text: bytes, repeat: int) -> bytes:
    """zlib stream of ``text * repeat`` built piecewise (no 50 MB buffer in memory)."""
    z = zlib.compressobj(9)
    return b"".join(z.compress(text) for _ in range(repeat)) + z.flush()


# ------------------------------------------------------------------------------------------
# Seed files
# ------------------------------------------------------------------------------------------


def _save(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def _picture(size: int = 32) -> Image.Image:
    """A small RGB picture with edges and gradients (so decoders have real work to do)."""
    yy, xx = np.mgrid[0:size, 0:size]
    rgb = np.stack(
        [xx * 255 // (size - 1), yy * 255 // (size - 1), ((xx // 4 + yy // 4) % 2) * 200]
    )
    return Image.fromarray(rgb.transpose(1, 2, 0).astype(np.uint8))


@cache
def seeds() -> dict[str, list[tuple[str, bytes]]]:
    """Valid files of every format and several modes, made with Pillow."""
    rgb, rgb2 = _picture(32), _picture(32).transpose(Image.Transpose.ROTATE_90)
    grey = rgb.convert("L").resize((28, 28))
    info = PngImagePlugin.PngInfo()
    info.add_text("Software", "fuzz")
    info.add_text("Comment", "compressed " * 20, zip=True)
    info.add_itxt("Title", "Überschrift", lang="de", tkey="Titel", zip=True)
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    palette = rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    deep = Image.fromarray((np.arange(28 * 28, dtype=np.uint16) * 83).reshape(28, 28))
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation
    exif[0x010E] = "fuzz seed"
    return {
        "PNG": [
            ("grey", _save(grey, "PNG")),
            ("rgb-text-icc", _save(rgb, "PNG", pnginfo=info, icc_profile=srgb)),
            ("rgba", _save(rgb.convert("RGBA"), "PNG")),
            ("palette-trns", _save(palette, "PNG", transparency=0)),
            ("palette-4bit", _save(palette, "PNG", bits=4)),
            ("grey-alpha", _save(grey.convert("LA"), "PNG")),
            ("16bit", _save(deep, "PNG")),
            ("1bit", _save(grey.convert("1"), "PNG")),
            ("apng", _save(rgb, "PNG", save_all=True, append_images=[rgb2], duration=100)),
        ],
        "JPEG": [
            ("rgb", _save(rgb, "JPEG", quality=90)),
            ("grey", _save(grey, "JPEG")),
            ("progressive", _save(rgb, "JPEG", progressive=True)),
            ("cmyk", _save(rgb.convert("CMYK"), "JPEG")),
            ("exif-444", _save(rgb, "JPEG", exif=exif, subsampling=0, icc_profile=srgb)),
            ("mpo", _save(rgb, "MPO", save_all=True, append_images=[rgb2])),
        ],
        "GIF": [
            ("still", _save(palette, "GIF")),
            ("anim", _save(rgb, "GIF", save_all=True, append_images=[rgb2])),
        ],
        "BMP": [
            ("rgb", _save(rgb, "BMP")),
            ("palette", _save(palette, "BMP")),
            ("1bit", _save(grey.convert("1"), "BMP")),
        ],
        "TIFF": [
            ("raw", _save(rgb, "TIFF")),
            ("deflate", _save(grey, "TIFF", compression="tiff_deflate")),
            ("lzw-16bit", _save(deep, "TIFF", compression="tiff_lzw")),
        ],
        "WEBP": [
            ("lossy", _save(rgb, "WEBP", quality=80)),
            ("lossless", _save(rgb, "WEBP", lossless=True)),
            ("rgba", _save(rgb.convert("RGBA"), "WEBP")),
        ],
    }


# ------------------------------------------------------------------------------------------
# Mutations: each takes (rng, data) and returns (what it did, mutated bytes)
# ------------------------------------------------------------------------------------------

Mutation = Callable[[random.Random, bytes], tuple[str, bytes]]


def flip_bytes(rng: random.Random, data: bytes) -> tuple[str, bytes]:
    """Overwrite or bit-flip 1–16 bytes, half of them in the header where parsers branch."""
    out = bytearray(data)
    n = rng.choice((1, 1, 2, 3, 4, 8, 16))
    for _ in range(n):
        pos = rng.randrange(min(len(out), 96)) if rng.random() < 0.5 else rng.randrange(len(out))
        out[pos] = rng.randrange(256) if rng.random() < 0.5 else out[pos] ^ (1 << rng.randrange(8))
    return f"flip{n}", bytes(out)


def truncate(rng: random.Random, data: bytes) -> tuple[str, bytes]:
    cut = rng.randrange(1, len(data))
    return f"truncate@{cut}", data[:cut]


def splice(rng: random.Random, data: bytes) -> tuple[str, bytes]:
    """Delete, duplicate or insert a random span (shifts every offset after it)."""
    a = rng.randrange(len(data))
    b = min(len(data), a + rng.choice((1, 2, 4, 16, 64, 256)))
    op = rng.choice(("delete", "duplicate", "insert"))
    if op == "delete":
        return f"delete{a}:{b}", data[:a] + data[b:]
    if op == "duplicate":
        return f"duplicate{a}:{b}", data[:b] + data[a:b] + data[b:]
    return f"insert@{a}", data[:a] + rng.randbytes(b - a) + data[a:]


def png_chunk_edit(rng: random.Random, data: bytes) -> tuple[str, bytes]:
    """Edit one chunk (or the chunk list) and recompute every CRC."""
    chunks = png_chunks(data)
    i = rng.randrange(len(chunks))
    ctype, cdata = chunks[i]
    op = rng.choice(
        ("drop", "duplicate", "swap", "shorten", "extend", "flip", "retype", "insert", "ihdr")
        + ("ihdr", "idat", "idat", "split", "badcrc")
    )
    name = ctype.decode("latin-1")
    if op == "drop":
        del chunks[i]
    elif op == "duplicate":
        chunks.insert(i, (ctype, cdata))
    elif op == "swap":
        j = rng.randrange(len(chunks))
        chunks[i], chunks[j] = chunks[j], chunks[i]
        name += f"<->{chunks[i][0].decode('latin-1')}"
    elif op == "shorten":  # e.g. a 12-byte IHDR
        chunks[i] = (ctype, cdata[: max(0, len(cdata) - rng.choice((1, 1, 2, 4, 8, len(cdata))))])
    elif op == "extend":
        chunks[i] = (ctype, cdata + rng.randbytes(rng.choice((1, 2, 4, 64))))
    elif op == "flip" and cdata:
        _, cdata = flip_bytes(rng, cdata)
        chunks[i] = (ctype, cdata)
    elif op == "retype":
        chunks[i] = (rng.choice(PNG_TYPES), cdata)
        name += f"->{chunks[i][0].decode('latin-1')}"
    elif op == "insert":
        new_type = rng.choice(PNG_TYPES)
        payload = rng.choice(
            (
                rng.randbytes(rng.choice((0, 1, 4, 8, 13, 26, 64))),
                b"key\0\0" + compressed(b"x", rng.choice((10, 1000))),  # zTXt/iCCP-shaped
                b"key\0\1\0\0\0" + compressed(b"x", 100),  # iTXt-shaped
                struct.pack(">II", rng.choice(INTERESTING), rng.choice(INTERESTING)),
            )
        )
        chunks.insert(rng.randrange(1, len(chunks) + 1), (new_type, payload))
        name = f"+{new_type.decode('latin-1')}"
    elif op == "ihdr":  # interesting values in one IHDR field
        i, (ctype, cdata) = 0, chunks[0]
        fields = list(struct.unpack(">IIBBBBB", cdata))
        k = rng.randrange(7)
        value = (
            rng.choice(INTERESTING) if k < 2 else rng.choice((0, 1, 2, 3, 4, 5, 6, 7, 8, 16, 255))
        )
        fields[k] = value
        chunks[0] = (ctype, struct.pack(">IIBBBBB", *fields))
        name = f"IHDR[{k}]={value}"
    elif op in ("idat", "split"):
        idat = [n for n, (t, _) in enumerate(chunks) if t == b"IDAT"]
        if idat:
            raw = bytearray(zlib.decompress(b"".join(chunks[n][1] for n in idat)))
            if op == "idat":
                edit = rng.choice(("filter", "cut", "grow", "flip"))
                if edit == "filter":  # invalid filter type byte on some row
                    raw[rng.randrange(len(raw))] = rng.choice((5, 6, 127, 255))
                elif edit == "cut":
                    raw = raw[: rng.randrange(len(raw))]
                elif edit == "grow":
                    raw += rng.randbytes(rng.choice((1, 100, 5000)))
                else:
                    raw[rng.randrange(len(raw))] ^= 0xFF
                name = f"IDAT-{edit}"
            stream = zlib.compress(bytes(raw))
            parts = (
                [stream[k : k + 7] for k in range(0, len(stream), 7)] if op == "split" else [stream]
            )
            chunks[idat[0] : idat[-1] + 1] = [(b"IDAT", p) for p in parts]
    out = build_png(chunks)
    if op == "badcrc":  # the one edit that leaves a CRC wrong
        out = bytearray(out)
        out[len(PNG_SIG) + 8 + 13 + rng.randrange(4)] ^= 0x55
        out = bytes(out)
    return f"chunk-{op}:{name}", out


def jpeg_segment_edit(rng: random.Random, data: bytes) -> tuple[str, bytes]:
    """Edit one marker segment before the scan (lengths kept consistent)."""
    segments, rest = jpeg_segments(data)
    i = rng.randrange(len(segments))
    marker, payload = segments[i]
    op = rng.choice(
        ("drop", "duplicate", "swap", "shorten", "extend", "flip", "insert", "sof", "sof")
    )
    if op == "drop":
        del segments[i]
    elif op == "duplicate":
        segments.insert(i, (marker, payload))
    elif op == "swap":
        j = rng.randrange(len(segments))
        segments[i], segments[j] = segments[j], segments[i]
    elif op == "shorten":
        segments[i] = (marker, payload[: rng.randrange(len(payload) + 1)])
    elif op == "extend":
        segments[i] = (marker, payload + rng.randbytes(rng.choice((1, 8, 64))))
    elif op == "flip" and payload:
        segments[i] = (marker, flip_bytes(rng, payload)[1])
    elif op == "insert":
        marker = rng.choice((0xE0, 0xE1, 0xE2, 0xEE, 0xFE, 0xDB, 0xC4, 0xC0, 0xC2, 0xDD))
        body = rng.choice(
            (
                rng.randbytes(rng.choice((0, 2, 14, 64))),
                b"Exif\0\0" + rng.randbytes(40),
                b"Exif\0\0II*\0\x08\0\0\0" + rng.randbytes(30),
                b"MPF\0II*\0\x08\0\0\0" + rng.randbytes(60),
                b"Adobe" + rng.randbytes(7),
            )
        )
        segments.insert(rng.randrange(len(segments) + 1), (marker, body))
    elif op == "sof":
        sof = [n for n, (m, _) in enumerate(segments) if m in (0xC0, 0xC1, 0xC2)]
        if sof:
            i, (marker, payload) = sof[0], segments[sof[0]]
            p = bytearray(payload)
            k = rng.choice(("precision", "height", "width", "ncomp", "sampling", "table"))
            if k == "precision":
                p[0] = rng.choice((0, 1, 8, 12, 16, 255))
            elif k in ("height", "width"):
                off = 1 if k == "height" else 3
                p[off : off + 2] = struct.pack(">H", rng.choice(INTERESTING) & 0xFFFF)
            elif k == "ncomp":
                p[5] = rng.choice((0, 1, 2, 3, 4, 5, 255))
            elif len(p) > 7:
                p[7 if k == "sampling" else 8] = rng.randrange(256)
            segments[i] = (marker, bytes(p))
            op = f"sof-{k}"
    return f"segment-{op}:{marker:02X}", build_jpeg(segments, rest)


def behind_signature(rng: random.Random, data: bytes) -> tuple[str, bytes]:
    """Another format's body behind a PNG or JPEG signature, so it reaches those decoders."""
    sig = rng.choice((PNG_SIG, b"\xff\xd8\xff\xe0", b"\xff\xd8\xff\xdb", b"\xff\xd8\xff\xc0"))
    how = rng.choice(("prepend", "overwrite"))
    out = sig + data if how == "prepend" else sig + data[len(sig) :]
    return f"sig-{how}:{sig[:4].hex()}", out


MUTATIONS: dict[str, tuple[Mutation, ...]] = {
    "PNG": (flip_bytes, truncate, splice, png_chunk_edit, png_chunk_edit, png_chunk_edit),
    "JPEG": (flip_bytes, flip_bytes, truncate, splice, jpeg_segment_edit, jpeg_segment_edit),
}
OTHER_MUTATIONS: tuple[Mutation, ...] = (flip_bytes, truncate, splice, behind_signature)


def variants(fmt: str) -> Iterator[tuple[str, bytes, int | tuple[int, int], int]]:
    """``(name, bytes, model size, channels)`` for COUNTS[fmt] seeded variants of fmt."""
    rng = random.Random(f"{SEED}-{fmt}")
    files = seeds()[fmt]
    mutations = MUTATIONS.get(fmt, OTHER_MUTATIONS)
    for n in range(COUNTS[fmt]):
        seed_name, data = files[n % len(files)]
        what, out = rng.choice(mutations)(rng, data)
        if rng.random() < 0.15 and len(out) > 1:  # stack a byte-level mutation now and then
            more, out = rng.choice((flip_bytes, splice))(rng, out)
            what += "+" + more
        size = rng.choice((28, 28, 64, (32, 48)))
        yield f"{fmt}/{seed_name}#{n} {what}", out, size, rng.choice((1, 3))


# ------------------------------------------------------------------------------------------
# The contract
# ------------------------------------------------------------------------------------------


def check(data: bytes, size: int | tuple[int, int], channels: int) -> tuple[str, str | None]:
    """``(outcome, problem)``: problem is None if ``prepare_upload`` honours its contract.

    The outcome is "accepted", "not PNG/JPEG" (refused by signature) or "refused by decoder".
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow warns about odd EXIF etc.; not a failure
            out = prepare_upload(data, size, channels)
    except UploadError as e:
        message = str(e)
        outcome = "not PNG/JPEG" if "not a PNG or JPEG" in message else "refused by decoder"
        if REPR.search(message):
            return outcome, f"message shows an object repr: {message!r}"
        if "\n  1. " not in message:
            return outcome, f"message has no numbered steps: {message!r}"
        if len(message) > 1200:
            return outcome, f"message is {len(message)} characters long"
        return outcome, None
    except Exception as e:  # the point of the test: nothing else may escape
        return "crashed", f"{type(e).__name__} escaped: {e}"
    height, width = (size, size) if isinstance(size, int) else size
    problems = []
    if not isinstance(out, PreparedUpload):
        return "accepted", f"returned {type(out).__name__}"
    if out.array.dtype != np.float32 or out.array.shape != (height, width, channels):
        problems.append(f"array {out.array.dtype} {out.array.shape}")
    elif not np.isfinite(out.array).all() or out.array.min() < 0 or out.array.max() > 1:
        problems.append("array values outside [0, 1]")
    if out.display.dtype != np.uint8 or not (
        out.display.ndim == 2 or (out.display.ndim == 3 and out.display.shape[-1] == 3)
    ):
        problems.append(f"display {out.display.dtype} {out.display.shape}")
    w, h = out.original_size
    if out.display.shape[:2] != (h, w) or not 0 < w * h <= MAX_PIXELS:
        problems.append(f"original size {out.original_size} vs display {out.display.shape}")
    if out.format not in ("PNG", "JPEG"):
        problems.append(f"format {out.format!r}")
    return "accepted", "; ".join(problems) or None


def test_enough_variants():
    assert sum(COUNTS.values()) >= 2000
    assert {"PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP"} == set(COUNTS)


@pytest.mark.parametrize("fmt", list(COUNTS))
def test_fuzzed_uploads_are_accepted_or_refused_cleanly(fmt, tmp_path):
    outcomes: Counter[str] = Counter()
    failures = []
    for name, data, size, channels in variants(fmt):
        outcome, problem = check(data, size, channels)
        outcomes[outcome] += 1
        if problem:
            path = tmp_path / f"variant{len(failures)}.bin"
            path.write_bytes(data)
            failures.append(f"{name} (size={size}, channels={channels}) -> {problem} [{path}]")
    if failures:
        # Crashes first: they are what a user would see as Streamlit's exception box.
        failures.sort(key=lambda f: "escaped" not in f)
        kinds = Counter(re.sub(r".* -> ([^:]*):.*", r"\1", f.splitlines()[0]) for f in failures)
        pytest.fail(
            f"{len(failures)} of {COUNTS[fmt]} variants broke the contract {dict(kinds)}:\n"
            + "\n".join(failures[:25])
        )
    assert sum(outcomes.values()) == COUNTS[fmt]
    print(fmt, dict(outcomes))
    # A fuzz run whose variants never reach the decoders (or are all accepted) tests nothing.
    assert outcomes["refused by decoder"] >= COUNTS[fmt] // 10, outcomes
    if fmt in ("PNG", "JPEG"):
        assert outcomes["accepted"] >= COUNTS[fmt] // 20, outcomes


def test_unmutated_seeds_are_accepted_or_named():
    """The seeds themselves: PNG/JPEG become model input, the others are refused by name."""
    for fmt, files in seeds().items():
        for name, data in files:
            if fmt in ("PNG", "JPEG"):
                out = prepare_upload(data, 28, 3)
                assert out.array.shape == (28, 28, 3), name
                assert out.array.std() > 0.05, name  # a picture, not a blank
            else:
                kind = "WebP" if fmt == "WEBP" else fmt
                with pytest.raises(UploadError, match=f"it is an? {kind} image"):
                    prepare_upload(data, 28, 3)


# ------------------------------------------------------------------------------------------
# Regression cases from issue 17 (each one escaped or was misreported before the fix)
# ------------------------------------------------------------------------------------------


@cache
def grey_png() -> bytes:
    return _save(_picture(28).convert("L"), "PNG")


def with_chunks(extra: list[tuple[bytes, bytes]], *, after_idat: bool = False) -> bytes:
    """grey_png() with extra chunks right after IHDR (read when opening) or before IEND."""
    chunks = png_chunks(grey_png())
    at = len(chunks) - 1 if after_idat else 1
    return build_png(chunks[:at] + extra + chunks[at:])


@cache
def fifty_mb() -> bytes:
    return compressed(b"a" * 1_000_000, 50)  # 50 MB of text in ~50 KB


BOMBS = {
    "zTXt 50 MB": lambda: with_chunks([(b"zTXt", b"Comment\0\0" + fifty_mb())]),
    "zTXt 50 MB after IDAT": lambda: with_chunks(
        [(b"zTXt", b"Comment\0\0" + fifty_mb())], after_idat=True
    ),
    "iTXt 50 MB": lambda: with_chunks([(b"iTXt", b"Comment\0\1\0en\0\0" + fifty_mb())]),
    "iCCP 50 MB": lambda: with_chunks([(b"iCCP", b"sRGB\0\0" + fifty_mb())]),
    # each chunk under Pillow's 1 MB per-chunk limit, 68 MB in all (> its 64 MB total limit)
    "70 zTXt chunks, 68 MB": lambda: with_chunks(
        [(b"zTXt", b"k%d\0\0" % n + compressed(b"a" * 100_000, 10)) for n in range(70)]
    ),
}


@pytest.mark.parametrize("case", list(BOMBS))
def test_png_metadata_bombs_are_refused_with_a_message(case):
    data = BOMBS[case]()
    assert len(data) < 100_000  # a small upload ...
    with pytest.raises(UploadError, match="decompression bombs") as refused:
        prepare_upload(data, 28, 1)
    message = str(refused.value)
    assert "metadata" in message and "\n  1. Re-export the image without metadata" in message
    assert isinstance(refused.value.__cause__, ValueError)  # ... Pillow's own refusal, chained


def test_ihdr_one_byte_short_is_refused():
    chunks = png_chunks(grey_png())
    chunks[0] = (b"IHDR", chunks[0][1][:12])  # 12 bytes, CRC recomputed
    with pytest.raises(UploadError, match="cut short") as refused:
        prepare_upload(build_png(chunks), 28, 1)
    assert "Truncated IHDR chunk" in str(refused.value)
    assert "\n  1. " in str(refused.value)


@pytest.mark.parametrize(("width", "height"), [(0, 28), (28, 0), (0, 0)])
def test_zero_sized_png_message_names_the_size_not_an_object(width, height):
    chunks = png_chunks(grey_png())
    chunks[0] = (b"IHDR", struct.pack(">II", width, height) + chunks[0][1][8:])
    with pytest.raises(UploadError) as refused:
        prepare_upload(build_png(chunks), 28, 1)
    message = str(refused.value)
    assert not REPR.search(message) and "0x" not in message, message
    assert f"{width}×{height} pixels" in message
    assert "\n  1. " in message


def test_mpo_uses_the_first_picture():
    red, green = (
        Image.new("RGB", (32, 32), (220, 20, 20)),
        Image.new("RGB", (32, 32), (20, 220, 20)),
    )
    data = _save(red, "MPO", save_all=True, append_images=[green])
    with Image.open(io.BytesIO(data)) as probe:
        assert probe.format == "MPO" and probe.n_frames == 2  # a real multi-picture file
    out = prepare_upload(data, 28, 3)
    assert out.format == "JPEG"
    red_mean, green_mean, _ = out.array.reshape(-1, 3).mean(axis=0)
    assert red_mean > 0.7 and green_mean < 0.2  # the red first picture, not the green second
    assert any("MPO" in n and "first picture" in n for n in out.notes), out.notes


def test_png_with_rows_missing_is_refused():
    # Pillow decodes a complete zlib stream holding 28 rows for a header saying 56 and fills
    # the rest with black; the model would then explain half an image as if it were whole.
    chunks = png_chunks(grey_png())
    chunks[0] = (b"IHDR", chunks[0][1][:4] + struct.pack(">I", 56) + chunks[0][1][8:])
    data = build_png(chunks)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with Image.open(io.BytesIO(data)) as im:
            im.load()  # Pillow itself does not complain
    with pytest.raises(UploadError, match="ends early"):
        prepare_upload(data, 28, 1)


@pytest.mark.parametrize(
    ("case", "edit"),
    [
        ("no IDAT", lambda c: [x for x in c if x[0] != b"IDAT"]),  # IndexError inside Pillow
        ("IEND before IDAT", lambda c: [c[0], c[-1], *c[1:-1]]),
        ("truncated pHYs", lambda c: [c[0], (b"pHYs", b"\0\0\0\1"), *c[1:]]),  # ValueError
    ],
)
def test_chunk_level_damage_found_by_the_fuzzer_is_refused(case, edit):
    with pytest.raises(UploadError, match=r"could not be read") as refused:
        prepare_upload(build_png(edit(png_chunks(grey_png()))), 28, 1)
    assert "\n  1. " in str(refused.value)
