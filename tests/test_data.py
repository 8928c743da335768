"""core.data: loading every dataset family, the real files, bad input, download, tf.data."""

from __future__ import annotations

import os
import time
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import md5_of, patch_md5, require_real_file, write_synthetic

from core import data, info

# flag, size, model-input shape of one sample, labels per sample
FAMILIES = [
    ("retinamnist", 28, (28, 28, 3), 1),  # RGB, ordinal regression
    ("pneumoniamnist", 28, (28, 28, 1), 1),  # grey, binary
    ("chestmnist", 28, (28, 28, 1), 14),  # grey, multi-label
    ("pathmnist", 64, (64, 64, 3), 1),  # RGB, multi-class, 64 px file name
    ("nodulemnist3d", 28, (28, 28, 28, 1), 1),  # CT volumes
    ("adrenalmnist3d", 64, (64, 64, 64, 1), 1),  # shape masks at 64³
]


@pytest.fixture
def one_file(tmp_path, monkeypatch):
    """A verified synthetic pneumoniamnist file in an otherwise empty root."""
    path = write_synthetic(tmp_path, "pneumoniamnist")
    patch_md5(monkeypatch, "pneumoniamnist", 28, path)
    return path


@pytest.mark.parametrize(("flag", "size", "shape", "n_labels"), FAMILIES)
def test_loader_on_every_family(tmp_path, monkeypatch, flag, size, shape, n_labels):
    n = (6, 4, 5) if size == 64 and info.is_3d(flag) else (24, 12, 12)
    path = write_synthetic(tmp_path, flag, size=size, n=n)
    assert path.name == info.file_name(flag, size)
    patch_md5(monkeypatch, flag, size, path)
    raw = np.load(path)
    for split, count in zip(info.SPLITS, n, strict=True):
        x, y = data.load_split(flag, split, size, root=tmp_path)
        assert x.shape == (count, *shape)
        assert x.dtype == np.float32
        assert x.min() >= 0.0 and x.max() <= 1.0
        assert y.shape == (count, n_labels) and y.dtype == np.int64
        # values are the stored bytes / 255 (no silent reordering or rescaling)
        stored = raw[f"{split}_images"].astype(np.float32) / 255.0
        np.testing.assert_allclose(x.reshape(stored.shape), stored, rtol=0, atol=1e-7)
        np.testing.assert_array_equal(y, raw[f"{split}_labels"].reshape(count, n_labels))
        if info.is_multilabel(flag):
            assert set(np.unique(y)) == {0, 1}
        else:
            assert set(np.unique(y)) == set(range(info.num_classes(flag)))
        xr, yr = data.load_raw_split(flag, split, size, root=tmp_path)
        assert xr.dtype == np.uint8 and xr.shape == raw[f"{split}_images"].shape


def test_default_root_comes_from_env(synthetic_root):
    x, y = data.load_split("retinamnist", "val")
    assert x.shape[1:] == (28, 28, 3) and len(x) == len(y) == 12
    assert data.file_path("chestmnist") == synthetic_root / "chestmnist.npz"
    status = {(r["flag"], r["size"]): r for r in data.local_status()}
    assert status[("chestmnist", 28)]["present"] and not status[("chestmnist", 64)]["present"]


# ---------------------------------------------------------------- the real files


@pytest.mark.parametrize(
    ("flag", "size", "train_counts"),
    [
        ("retinamnist", 28, [486, 128, 206, 194, 66]),
        ("adrenalmnist3d", 28, [929, 259]),
        ("adrenalmnist3d", 64, [929, 259]),
    ],
)
def test_real_files(flag, size, train_counts):
    path = require_real_file(flag, size)
    assert md5_of(path) == info.expected_md5(flag, size)
    for split, expected_n in info.n_samples(flag).items():
        images, labels = data.load_raw_split(flag, split, size, root=path.parent)
        assert len(images) == len(labels) == expected_n
        counts = np.bincount(labels.ravel(), minlength=info.num_classes(flag))
        assert len(counts) == info.num_classes(flag) and counts.sum() == expected_n
        assert counts.min() > 0, f"{split}: a class is missing: {counts}"
        if split == "train":
            assert counts.tolist() == train_counts
        if info.is_3d(flag):
            # AdrenalMNIST3D is a binary shape mask, not CT intensities
            assert set(np.unique(images[:8])) == {0, 255}
    # float conversion on the smallest split (the 64³ train split is 1.2 GB as float32)
    x, y = data.load_split(flag, "val", size, root=path.parent)
    assert x.dtype == np.float32 and x.min() == 0.0 and x.max() == 1.0
    expected = (size, size, 3) if not info.is_3d(flag) else (size, size, size, 1)
    assert x.shape == (info.n_samples(flag)["val"], *expected)


# ---------------------------------------------------------------- bad input


def test_truncated_file_is_refused(one_file, monkeypatch):
    content = one_file.read_bytes()
    one_file.write_bytes(content[: len(content) // 2])
    # MD5 check catches it first ...
    with pytest.raises(data.DatasetCorruptError, match="MD5"):
        data.load_split("pneumoniamnist", "train", root=one_file.parent)
    # ... and even if INFO agreed with the truncated file, the npz reader refuses it
    patch_md5(monkeypatch, "pneumoniamnist", 28, one_file)
    with pytest.raises(data.DatasetCorruptError, match="not a readable npz"):
        data.load_split("pneumoniamnist", "train", root=one_file.parent)


def test_one_altered_byte_is_refused(one_file):
    content = bytearray(one_file.read_bytes())
    content[len(content) // 2] ^= 0xFF
    one_file.write_bytes(bytes(content))
    with pytest.raises(data.DatasetCorruptError) as err:
        data.ensure_file("pneumoniamnist", root=one_file.parent, download=False)
    message = str(err.value)
    assert md5_of(one_file) in message and info.expected_md5("pneumoniamnist") in message
    assert str(one_file) in message and "1." in message and "2." in message
    assert isinstance(err.value, data.DataError)


def test_missing_file_offline_gives_numbered_steps(tmp_path, monkeypatch):
    calls = []

    def offline(*args, **kwargs):
        calls.append(args)
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(data.DatasetUnavailableError) as err:
        data.ensure_file("retinamnist", root=tmp_path, download=True)
    assert calls, "a download was not even attempted"
    message = str(err.value)
    for needle in (
        "retinamnist.npz",
        info.url("retinamnist"),
        info.expected_md5("retinamnist"),
        str(tmp_path),
        "1. ",
        "2. ",
        "3. ",
    ):
        assert needle in message, f"{needle!r} missing from:\n{message}"
    assert list(tmp_path.iterdir()) == [], "a partial file was left behind"
    # download=False never touches the network and still explains what to do
    calls.clear()
    with pytest.raises(data.DatasetUnavailableError, match="1. Download"):
        data.load_split("retinamnist", "test", root=tmp_path)
    assert not calls


def _serve_as_file_url(monkeypatch, flag: str, source: Path) -> None:
    monkeypatch.setitem(info.INFO[flag], "url", source.resolve().as_uri())


def test_download_from_file_url(tmp_path, monkeypatch):
    source = write_synthetic(tmp_path / "server", "retinamnist")
    digest = patch_md5(monkeypatch, "retinamnist", 28, source)
    _serve_as_file_url(monkeypatch, "retinamnist", source)
    root = tmp_path / "root"
    seen: list[tuple[int, int]] = []
    path = data.ensure_file("retinamnist", root=root, progress=lambda d, t: seen.append((d, t)))
    assert path == root / "retinamnist.npz"
    assert md5_of(path) == digest
    assert seen and seen[-1] == (source.stat().st_size, source.stat().st_size)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)
    assert [p.name for p in root.iterdir()] == ["retinamnist.npz"], "temp files left behind"
    x, _ = data.load_split("retinamnist", "train", root=root)
    assert x.shape == (24, 28, 28, 3)


def test_download_with_wrong_md5_is_discarded(tmp_path, monkeypatch):
    source = write_synthetic(tmp_path / "server", "retinamnist")
    _serve_as_file_url(monkeypatch, "retinamnist", source)
    monkeypatch.setitem(info.INFO["retinamnist"], "MD5", "0" * 32)
    root = tmp_path / "root"
    with pytest.raises(data.DatasetUnavailableError) as err:
        data.ensure_file("retinamnist", root=root)
    assert md5_of(source) in str(err.value) and "discarded" in str(err.value)
    assert not any(root.iterdir()), "a bad download was kept"


def test_same_size_rewrite_is_rehashed(one_file):
    """The MD5 cache must not vouch for a file rewritten in place with its old mtime."""
    data.ensure_file("pneumoniamnist", root=one_file.parent, download=False)  # hashed, cached
    stat = one_file.stat()
    time.sleep(0.05)
    content = bytearray(one_file.read_bytes())
    content[100] ^= 0xFF
    with one_file.open("r+b") as fh:  # same inode, same size
        fh.write(bytes(content))
    os.utime(one_file, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # and the old mtime
    assert one_file.stat().st_mtime_ns == stat.st_mtime_ns
    with pytest.raises(data.DatasetCorruptError, match="MD5"):
        data.ensure_file("pneumoniamnist", root=one_file.parent, download=False)


def test_wrong_keys_are_refused(tmp_path, monkeypatch):
    path = write_synthetic(tmp_path, "pneumoniamnist")
    arrays = dict(np.load(path))
    arrays["training_images"] = arrays.pop("train_images")
    np.savez(path, **arrays)
    patch_md5(monkeypatch, "pneumoniamnist", 28, path)
    with pytest.raises(data.DatasetCorruptError, match="train_images"):
        data.load_split("pneumoniamnist", "val", root=tmp_path)


def test_pickled_object_arrays_are_refused(tmp_path, monkeypatch):
    path = write_synthetic(tmp_path, "pneumoniamnist")
    arrays = dict(np.load(path))
    arrays["train_labels"] = np.array([{"evil": 1}] * 24, dtype=object)
    np.savez(path, **arrays)
    patch_md5(monkeypatch, "pneumoniamnist", 28, path)
    with pytest.raises(data.DatasetCorruptError):
        data.load_split("pneumoniamnist", "train", root=tmp_path)


@pytest.mark.parametrize(
    ("key", "bad", "match"),
    [
        (
            "train_images",
            np.zeros((24, 30, 30), np.uint8),
            r"train_images has shape \(24, 30, 30\)",
        ),
        ("val_images", np.zeros((12, 28, 28, 3), np.uint8), "val_images has shape"),
        ("test_labels", np.zeros((12, 2), np.uint8), "test_labels has shape"),
        ("train_labels", np.full((24, 1), 7, np.uint8), "outside 0..1"),
    ],
)
def test_wrong_shapes_are_refused(tmp_path, monkeypatch, key, bad, match):
    path = write_synthetic(tmp_path, "pneumoniamnist")
    arrays = dict(np.load(path))
    arrays[key] = bad
    np.savez(path, **arrays)
    patch_md5(monkeypatch, "pneumoniamnist", 28, path)
    with pytest.raises(data.DatasetCorruptError, match=match):
        data.load_split("pneumoniamnist", "train", root=tmp_path)


def test_unknown_flag_size_split(one_file):
    with pytest.raises(ValueError, match="unknown MedMNIST dataset 'mnist'.*retinamnist"):
        data.load_split("mnist", "train", root=one_file.parent)
    with pytest.raises(ValueError, match=r"no size 32.*\(28, 64, 128, 224\)"):
        data.load_split("pneumoniamnist", "train", 32, root=one_file.parent)
    with pytest.raises(ValueError, match=r"adrenalmnist3d has no size 128"):
        data.ensure_file("adrenalmnist3d", 128, root=one_file.parent)
    with pytest.raises(ValueError, match="unknown split 'validation'"):
        data.load_split("pneumoniamnist", "validation", root=one_file.parent)


def test_not_a_zip_at_all(tmp_path, monkeypatch):
    path = tmp_path / "pneumoniamnist.npz"
    path.write_bytes(b"<html>captive portal</html>")
    patch_md5(monkeypatch, "pneumoniamnist", 28, path)
    with pytest.raises(data.DatasetCorruptError, match="not a readable npz"):
        data.load_split("pneumoniamnist", "train", root=tmp_path)
    assert not zipfile.is_zipfile(path)


# ---------------------------------------------------------------- conversions


def test_to_rgb():
    grey = np.random.default_rng(0).random((2, 5, 5, 1), dtype=np.float32)
    rgb = data.to_rgb(grey)
    assert rgb.shape == (2, 5, 5, 3)
    for c in range(3):
        np.testing.assert_array_equal(rgb[..., c], grey[..., 0])
    already = np.zeros((2, 5, 5, 3), np.float32)
    assert data.to_rgb(already) is already
    with pytest.raises(ValueError, match="1 or 3 channels"):
        data.to_rgb(np.zeros((2, 5, 5, 2)))


def test_resize():
    rng = np.random.default_rng(0)
    x = rng.random((3, 28, 28, 3), dtype=np.float32)
    out = data.resize(x, 32)
    assert out.shape == (3, 32, 32, 3) and out.dtype == np.float32
    assert out.min() >= x.min() - 1e-6 and out.max() <= x.max() + 1e-6  # bilinear: no overshoot
    const = np.full((2, 28, 28, 1), 0.25, np.float32)
    np.testing.assert_allclose(data.resize(const, 64), 0.25, atol=1e-6)
    assert data.resize(const, 64).shape == (2, 64, 64, 1)
    assert data.resize(x, 28) is x
    # a left-dark/right-bright image keeps its layout
    ramp = np.tile(np.linspace(0, 1, 28, dtype=np.float32), (1, 28, 1))[..., None]
    big = data.resize(ramp, 56)
    assert big[0, :, :10].mean() < 0.2 and big[0, :, -10:].mean() > 0.8
    with pytest.raises(ValueError, match="2D batch"):
        data.resize(np.zeros((2, 8, 8, 8, 1), np.float32), 16)


# ---------------------------------------------------------------- tf.data


def _batches(ds) -> list[tuple[np.ndarray, np.ndarray]]:
    return [(x.numpy(), y.numpy()) for x, y in ds]


def _arrays(rank: int, n: int = 10) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    shape = (n, 8, 8, 1) if rank == 2 else (n, 8, 8, 8, 1)
    x = rng.random(shape, dtype=np.float32)
    y = np.arange(n, dtype=np.int64).reshape(n, 1)  # labels = index, to track order
    return x, y


@pytest.mark.parametrize("rank", [2, 3])
def test_make_dataset_batches_and_shuffle(rank):
    x, y = _arrays(rank)
    plain = _batches(data.make_dataset(x, y, 4))
    assert [len(b[0]) for b in plain] == [4, 4, 2]
    np.testing.assert_array_equal(np.concatenate([b[0] for b in plain]), x)
    np.testing.assert_array_equal(np.concatenate([b[1] for b in plain]), y)

    def order(seed):
        ds = data.make_dataset(x, y, 4, shuffle=True, seed=seed)
        return np.concatenate([b[1] for b in _batches(ds)]).ravel()

    o0 = order(0)
    assert sorted(o0) == list(range(10)), "shuffling lost or duplicated samples"
    np.testing.assert_array_equal(o0, order(0))
    assert not np.array_equal(o0, np.arange(10))
    assert not np.array_equal(o0, order(1))


@pytest.mark.parametrize("rank", [2, 3])
def test_make_dataset_augmentation(rank):
    x, y = _arrays(rank, n=6)
    aug0 = _batches(data.make_dataset(x, y, 3, augment=True, seed=0))
    again = _batches(data.make_dataset(x, y, 3, augment=True, seed=0))
    other = _batches(data.make_dataset(x, y, 3, augment=True, seed=1))
    xa = np.concatenate([b[0] for b in aug0])
    assert xa.shape == x.shape and xa.dtype == np.float32
    assert xa.min() >= 0.0 and xa.max() <= 1.0
    np.testing.assert_array_equal(xa, np.concatenate([b[0] for b in again]))
    assert not np.allclose(xa, np.concatenate([b[0] for b in other]))
    assert not np.allclose(xa, x), "augment=True changed nothing"
    np.testing.assert_array_equal(np.concatenate([b[1] for b in aug0]), y)  # labels untouched
    # without augment=True the images pass through bit for bit
    plain = np.concatenate([b[0] for b in _batches(data.make_dataset(x, y, 3))])
    np.testing.assert_array_equal(plain, x)


@pytest.mark.parametrize("rank", [2, 3])
def test_augmentation_differs_between_epochs_but_repeats_per_seed(rank):
    x, y = _arrays(rank, n=4)

    def two_epochs(seed):
        ds = data.make_dataset(x, y, 4, augment=True, seed=seed)
        return [np.concatenate([b[0] for b in _batches(ds)]) for _ in range(2)]

    first, second = two_epochs(0)
    assert not np.allclose(first, second), "every epoch replays the same augmentation"
    again_first, again_second = two_epochs(0)
    np.testing.assert_array_equal(first, again_first)
    np.testing.assert_array_equal(second, again_second)
