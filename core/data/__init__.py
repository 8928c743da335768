"""MedMNIST ``.npz`` files: locate, download (MD5-checked, atomic), load, convert, and feed.

Dataset facts (URLs, MD5s, tasks, split sizes) come only from ``medmnist.INFO`` via
:mod:`core.info`. TensorFlow is imported lazily, only by :func:`make_dataset`.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import threading
import urllib.request
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from core import config, info

ProgressFn = Callable[[int, int], None]
_KEYS = tuple(f"{split}_{kind}" for split in info.SPLITS for kind in ("images", "labels"))
_md5_cache: dict[tuple[str, int, int, int, int], str] = {}
_md5_lock = threading.Lock()


class DataError(RuntimeError):
    """A dataset file is missing, unreachable or not the published file."""


class DatasetUnavailableError(DataError):
    """The file is not on disk and could not be downloaded."""


class DatasetCorruptError(DataError):
    """The file exists but is truncated, altered or malformed."""


def _root(root: str | os.PathLike | None) -> Path:
    return Path(root).expanduser() if root is not None else config.medmnist_root()


def file_path(flag: str, size: int = 28, root: str | os.PathLike | None = None) -> Path:
    """Where the file of ``flag`` at ``size`` lives (it may not exist)."""
    return _root(root) / info.file_name(flag, size)


def local_status(root: str | os.PathLike | None = None) -> list[dict[str, Any]]:
    """Every (flag, size) MedMNIST publishes with whether its file is present; no hashing."""
    rows = []
    for flag in info.FLAGS:
        for size in info.sizes(flag):
            path = file_path(flag, size, root)
            rows.append(
                {
                    "flag": flag,
                    "size": size,
                    "path": str(path),
                    "present": path.is_file(),
                    "bytes": path.stat().st_size if path.is_file() else None,
                    "is_3d": info.is_3d(flag),
                    "task": info.task(flag),
                }
            )
    return rows


def md5sum(path: Path) -> str:
    """MD5 of a file, cached per (path, size, mtime) so a 400 MB file is hashed once."""
    stat = path.stat()
    # inode and ctime too: mtime alone has coarse (jiffy) resolution, so a same-size rewrite
    # right after a hash could otherwise reuse the stale digest
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns, stat.st_ino, stat.st_ctime_ns)
    with _md5_lock:
        if key in _md5_cache:
            return _md5_cache[key]
    digest = hashlib.md5()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    value = digest.hexdigest()
    with _md5_lock:
        _md5_cache[key] = value
    return value


def _unavailable(
    flag: str, size: int, path: Path, reason: str, downloads: bool = False
) -> DatasetUnavailableError:
    """The missing-file error with numbered steps.

    Args:
        downloads: the caller downloads missing files itself, so retrying online helps; a
            caller that never downloads (the app's viewing pages) points to the ways that do.
    """
    if downloads:
        last = "  4. Or connect to the internet and retry: the file is then downloaded for you."
    else:
        size_flag = "" if size == 28 else f" --size {size}"
        last = (
            "  4. Or download it with the app's Home page (*Download a dataset*) or "
            f"`python -m core.data download {flag}{size_flag}`."
        )
    return DatasetUnavailableError(
        f"{info.file_name(flag, size)} is not available: {reason}\n"
        f"  1. Download {info.url(flag, size)}\n"
        f"  2. Check its MD5 is {info.expected_md5(flag, size)} (e.g. `md5sum {path.name}`).\n"
        f"  3. Save it as {path} (or set MEDMNIST_ROOT to the folder that holds it).\n" + last
    )


def _download(
    flag: str, size: int, path: Path, progress: ProgressFn | None, timeout: float
) -> None:
    source = info.url(flag, size)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Download next to the target and rename at the end: a crash or a bad file never leaves a
    # half-written npz under the real name.
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(source, timeout=timeout) as resp:
            total = int(resp.headers.get("Content-Length") or 0)
            done = 0
            for chunk in iter(lambda: resp.read(1 << 16), b""):
                out.write(chunk)
                done += len(chunk)
                if progress:
                    progress(done, total)
            out.flush()
            os.fsync(out.fileno())
        got = md5sum(tmp)
        if got != info.expected_md5(flag, size):
            raise DatasetCorruptError(
                f"downloaded {path.name} has MD5 {got}, expected {info.expected_md5(flag, size)}; "
                "the download was discarded. Retry, or fetch it by hand (see the steps below)."
            )
        os.replace(tmp, path)
    except DatasetCorruptError as exc:
        raise _unavailable(flag, size, path, str(exc), downloads=True) from exc
    except OSError as exc:  # URLError, timeouts, disk full
        raise _unavailable(flag, size, path, f"download failed ({exc})", downloads=True) from exc
    finally:
        tmp.unlink(missing_ok=True)


def ensure_file(
    flag: str,
    size: int = 28,
    root: str | os.PathLike | None = None,
    download: bool = True,
    progress: ProgressFn | None = None,
    timeout: float = 30.0,
) -> Path:
    """Return the path of a verified file, downloading it first when allowed.

    Raises:
        DatasetUnavailableError: missing and not downloadable (numbered steps in the message).
        DatasetCorruptError: present but its MD5 is not the published one.
    """
    path = file_path(flag, size, root)
    if not path.is_file():
        if not download:
            raise _unavailable(flag, size, path, f"no file at {path}")
        _download(flag, size, path, progress, timeout)
    got = md5sum(path)
    want = info.expected_md5(flag, size)
    if got != want:
        raise DatasetCorruptError(
            f"{path} has MD5 {got}, but MedMNIST publishes {want} for it: the file is truncated "
            "or altered and will not be used.\n"
            f"  1. Delete {path}.\n"
            f"  2. Download it again from {info.url(flag, size)} (or let the app download it)."
        )
    return path


def _open_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [k for k in _KEYS if k not in npz.files]
            if missing:
                raise DatasetCorruptError(f"{path} lacks the arrays {missing}; found {npz.files}")
            return {k: npz[k] for k in _KEYS}
    except (zipfile.BadZipFile, ValueError, EOFError, OSError) as exc:
        raise DatasetCorruptError(f"{path} is not a readable npz file ({exc})") from exc


_raw_cache: dict[tuple[str, int, str], dict[str, np.ndarray]] = {}
_raw_lock = threading.Lock()


def load_raw(
    flag: str,
    size: int = 28,
    root: str | os.PathLike | None = None,
    download: bool = False,
    verify: bool = True,
) -> dict[str, np.ndarray]:
    """All six arrays of a dataset as stored (uint8), checked against INFO.

    Args:
        verify: check the file's MD5 against INFO (disable only for synthetic test files).
    """
    path = ensure_file(flag, size, root, download) if verify else file_path(flag, size, root)
    if not path.is_file():
        raise _unavailable(flag, size, path, f"no file at {path}")
    key = (str(path.resolve()), path.stat().st_mtime_ns, flag)
    with _raw_lock:
        if key in _raw_cache:
            return _raw_cache[key]
    arrays = _open_npz(path)
    _check_arrays(flag, size, path, arrays)
    with _raw_lock:
        _raw_cache.clear()  # keep at most one dataset resident: the 64³ files are ~400 MB
        _raw_cache[key] = arrays
    return arrays


def _check_arrays(flag: str, size: int, path: Path, arrays: dict[str, np.ndarray]) -> None:
    n_labels = len(info.label_names(flag)) if info.is_multilabel(flag) else 1
    channels = info.n_channels(flag)
    for split in info.SPLITS:
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if info.is_3d(flag):
            expected = (size, size, size)
            ok = images.ndim == 4 and images.shape[1:] == expected
        elif channels == 1:
            expected = (size, size)
            ok = images.ndim == 3 and images.shape[1:] == expected
        else:
            expected = (size, size, channels)
            ok = images.ndim == 4 and images.shape[1:] == expected
        if not ok:
            raise DatasetCorruptError(
                f"{path}: {split}_images has shape {images.shape}, expected (N, "
                f"{', '.join(map(str, expected))}) for {flag} at size {size}"
            )
        labels2 = labels.reshape(len(labels), -1) if labels.ndim == 1 else labels
        if labels2.shape != (len(images), n_labels):
            raise DatasetCorruptError(
                f"{path}: {split}_labels has shape {labels.shape}, expected "
                f"({len(images)}, {n_labels})"
            )
        n_cls = info.num_classes(flag)
        if not info.is_multilabel(flag) and (labels2.min() < 0 or labels2.max() >= n_cls):
            raise DatasetCorruptError(f"{path}: {split}_labels outside 0..{n_cls - 1}")


def _to_model_array(flag: str, images: np.ndarray) -> np.ndarray:
    x = images.astype(np.float32) / 255.0
    if info.is_3d(flag) or info.n_channels(flag) == 1:
        x = x[..., np.newaxis]
    return x


def load_raw_split(
    flag: str,
    split: str,
    size: int = 28,
    root: str | os.PathLike | None = None,
    download: bool = False,
    verify: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images as stored (no channel axis for grey/3D) and labels ``(N, L)``."""
    if split not in info.SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {info.SPLITS}")
    arrays = load_raw(flag, size, root, download, verify)
    labels = arrays[f"{split}_labels"]
    return arrays[f"{split}_images"], labels.reshape(len(labels), -1).astype(np.int64)


def load_split(
    flag: str,
    split: str,
    size: int = 28,
    root: str | os.PathLike | None = None,
    download: bool = False,
    verify: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """One split as model input: float32 channels-last in [0, 1] and int64 labels ``(N, L)``.

    2D images come as ``(N, H, W, C)``, 3D volumes as ``(N, D, H, W, 1)``; ``L`` is 1 except for
    multi-label datasets (14 for ChestMNIST).
    """
    images, labels = load_raw_split(flag, split, size, root, download, verify)
    return _to_model_array(flag, images), labels


def to_rgb(x: np.ndarray) -> np.ndarray:
    """Repeat a single channel to three (VGG16 needs RGB); RGB input is returned as is."""
    if x.shape[-1] == 3:
        return x
    if x.shape[-1] != 1:
        raise ValueError(f"expected 1 or 3 channels, got shape {x.shape}")
    return np.repeat(x, 3, axis=-1)


def resize(x: np.ndarray, size: int) -> np.ndarray:
    """Bilinear resize of a 2D batch ``(N, H, W, C)`` to ``size`` × ``size``."""
    import cv2

    if x.ndim != 4:
        raise ValueError(f"resize expects a 2D batch (N, H, W, C), got shape {x.shape}")
    if x.shape[1] == size and x.shape[2] == size:
        return x
    out = np.stack([cv2.resize(img, (size, size), interpolation=cv2.INTER_LINEAR) for img in x])
    return out.reshape(len(x), size, size, x.shape[-1]).astype(x.dtype)


def make_dataset(
    x: np.ndarray,
    y: np.ndarray,
    batch_size: int,
    shuffle: bool = False,
    augment: bool = False,
    seed: int = 0,
):
    """A batched, prefetched ``tf.data.Dataset`` of ``(x, y)``.

    Augmentation (training split only: the caller decides) uses :mod:`core.augment` and is
    seeded, so a run is repeatable.
    """
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices((x, y))
    if shuffle:
        ds = ds.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)
    if augment:
        from core.augment import augment_batch

        # one stateless seed pair per batch: repeatable for a given run seed, and redrawn each
        # epoch (without rerandomize, every epoch would replay the same transforms)
        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
        ds = tf.data.Dataset.zip((ds, seeds)).map(
            lambda batch, s: (augment_batch(batch[0], s), batch[1]),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
    return ds.prefetch(tf.data.AUTOTUNE)
