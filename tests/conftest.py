"""Shared fixtures: synthetic MedMNIST files, real-data and VGG16-weights locators.

Synthetic files are shaped exactly like the real dataset family and carry a learnable signal
(class-dependent brightness plus a class-dependent blob position), so a model can learn them in
a couple of epochs. Their MD5s are patched into ``core.info.INFO`` with ``monkeypatch`` so the
loader's MD5 check stays on in every test.

Real files are never copied: ``real_data_root`` points at ``MEDMNIST_ROOT`` (falling back to the
repo's sibling ``../shared/data``). A missing real file fails the test when
``REQUIRE_REAL_DATA=1`` (CI) and skips it otherwise.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parents[1]

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from core import info  # noqa: E402

SYNTHETIC_FLAGS = ("retinamnist", "pneumoniamnist", "chestmnist", "adrenalmnist3d", "nodulemnist3d")


def md5_of(path: Path) -> str:
    """Hex MD5 of a file."""
    return hashlib.md5(Path(path).read_bytes()).hexdigest()


def _images_for(flag: str, size: int, labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """uint8 images whose brightness and blob position depend on the (first) class."""
    n = len(labels)
    cls = labels[:, 0] if labels.shape[1] == 1 else labels.argmax(axis=1)
    n_cls = max(2, info.num_classes(flag))
    spatial = (size,) * (3 if info.is_3d(flag) else 2)
    base = 40 + 150 * (cls / (n_cls - 1))  # brightness ramps with the class
    images = rng.normal(0, 12, size=(n, *spatial)) + base.reshape((n,) + (1,) * len(spatial))
    # a bright blob whose position encodes the class: a spatial signal a CNN picks up easily
    grid = np.stack(np.meshgrid(*[np.arange(size)] * len(spatial), indexing="ij"), axis=0)
    for i in range(n):
        centre = size * (0.25 + 0.5 * cls[i] / (n_cls - 1))
        dist2 = ((grid - centre) ** 2).sum(axis=0)
        images[i] += 60 * np.exp(-dist2 / (2 * (size / 8) ** 2))
    images = np.clip(images, 0, 255).astype(np.uint8)
    if not info.is_3d(flag) and info.n_channels(flag) == 3:
        images = np.stack([images, images // 2 + 20, 255 - images], axis=-1)
    return images


def _labels_for(flag: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """Labels shaped (N, 1), or (N, L) 0/1 for multi-label; every class in every split."""
    if info.is_multilabel(flag):
        n_labels = len(info.label_names(flag))
        labels = (rng.random((n, n_labels)) < 0.3).astype(np.uint8)
        # each label both present and absent at least once, so per-label AUC is defined
        labels[0, :] = 1
        labels[1, :] = 0
        return labels
    n_cls = info.num_classes(flag)
    if n < n_cls:
        raise ValueError(f"need at least {n_cls} samples per split for {flag}, got {n}")
    cls = np.concatenate([np.arange(n_cls), rng.integers(0, n_cls, n - n_cls)])
    return rng.permutation(cls).astype(np.uint8).reshape(n, 1)


def write_synthetic(
    root: Path, flag: str, size: int = 28, n: tuple[int, int, int] = (24, 12, 12), seed: int = 0
) -> Path:
    """Write a small synthetic npz for ``flag`` at ``size`` under ``root``; return its path.

    Args:
        root: folder (created if needed).
        flag: MedMNIST flag; decides the image layout, channels and label shape.
        size: image side (file name follows ``core.info.file_name``).
        n: samples in train, val and test.
        seed: NumPy seed, so the same call writes the same bytes.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, count in zip(info.SPLITS, n, strict=True):
        labels = _labels_for(flag, count, rng)
        arrays[f"{split}_images"] = _images_for(flag, size, labels, rng)
        arrays[f"{split}_labels"] = labels
    path = root / info.file_name(flag, size)
    np.savez_compressed(path, **arrays)
    return path


def patch_md5(monkeypatch: pytest.MonkeyPatch, flag: str, size: int, path: Path) -> str:
    """Make INFO publish ``path``'s MD5 for ``flag``/``size`` (test only); return the MD5."""
    digest = md5_of(path)
    key = "MD5" if size == 28 else f"MD5_{size}"
    monkeypatch.setitem(info.INFO[flag], key, digest)
    return digest


@pytest.fixture(scope="session", autouse=True)
def _session_job_queue(tmp_path_factory: pytest.TempPathFactory):
    """Keep the suite's training workers off the checkout's own ``var/jobs.sqlite``.

    Every AppTest of Home starts the app's default detached worker (autostart stays on: that
    default is what a new user gets, so it is exercised, not switched off). Without this, those
    workers served the developer's real queue and outlived the test run. Tests that set
    ``JOBS_DB`` themselves still win (``monkeypatch.setenv``); ``test_config`` checks the
    default path with ``delenv``. At the end, the worker the suite started is stopped.
    """
    if "JOBS_DB" in os.environ:  # a developer's explicit choice
        yield
        return
    db = tmp_path_factory.mktemp("jobs") / "jobs.sqlite"
    os.environ["JOBS_DB"] = str(db)
    try:
        yield
    finally:
        from app_helpers import stop_worker

        stop_worker(str(db))
        os.environ.pop("JOBS_DB", None)


@pytest.fixture
def synthetic_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A MEDMNIST_ROOT of synthetic files (28 px), with a tmp registry and jobs DB."""
    root = tmp_path / "medmnist"
    for i, flag in enumerate(SYNTHETIC_FLAGS):
        path = write_synthetic(root, flag, seed=i)
        patch_md5(monkeypatch, flag, 28, path)
    monkeypatch.setenv("MEDMNIST_ROOT", str(root))
    monkeypatch.setenv("TRAINED_MODELS_DIR", str(tmp_path / "trained_models"))
    monkeypatch.setenv("JOBS_DB", str(tmp_path / "var" / "jobs.sqlite"))
    return root


def _require(what: str) -> None:
    if os.environ.get("REQUIRE_REAL_DATA") == "1":
        pytest.fail(f"REQUIRE_REAL_DATA=1 but {what}", pytrace=False)
    pytest.skip(f"{what} (CI sets REQUIRE_REAL_DATA=1 and fails instead)")


def real_root() -> Path:
    """``MEDMNIST_ROOT`` if set, else the repo's sibling ``../shared/data``."""
    value = os.environ.get("MEDMNIST_ROOT")
    return Path(value).expanduser() if value else REPO.parent / "shared" / "data"


def require_real_file(flag: str, size: int = 28) -> Path:
    """Path of a real MedMNIST file; fail (CI) or skip (local) when it is missing."""
    path = real_root() / info.file_name(flag, size)
    if not path.is_file():
        _require(f"real data file {path} is missing")
    return path


@pytest.fixture
def real_data_root() -> Path:
    """Folder of the real MedMNIST files (must exist)."""
    root = real_root()
    if not root.is_dir():
        _require(f"real data folder {root} is missing")
    return root


@pytest.fixture
def real_data_env(real_data_root, monkeypatch) -> Path:
    """``real_data_root``, also set as ``MEDMNIST_ROOT`` for the code under test.

    Why: ``real_root`` falls back to ``../shared/data`` when the variable is unset (a new
    developer's shell), but the product then reads its own default (``~/.medmnist``), so a test
    that checked the sibling folder and calls the product without a root must point it there.
    """
    monkeypatch.setenv("MEDMNIST_ROOT", str(real_data_root))
    return real_data_root


@pytest.fixture
def vgg16_weights_file() -> Path:
    """The local no-top ImageNet VGG16 weights named by ``VGG16_WEIGHTS``."""
    value = os.environ.get("VGG16_WEIGHTS", "")
    path = Path(value).expanduser() if value else None
    if path is None or not path.is_file():
        _require(f"VGG16_WEIGHTS={value!r} is not an existing file")
    return path


@pytest.fixture
def tiny_cnn3d_run(synthetic_root: Path) -> Path:
    """An untrained 28³ cnn3d (filters 2, 4) saved as run ``tiny3d`` in the tmp registry."""
    from core import registry
    from core.models import build_model

    flag = "adrenalmnist3d"
    model = build_model(
        "cnn3d",
        (28, 28, 28, 1),
        info.num_classes(flag),
        info.task(flag),
        filters=(2, 4),
        dense_units=4,
    )
    cfg = {"dataset": flag, "model": "cnn3d", "size": 28, "seed": 0}
    return registry.save_run(model, cfg, {}, {}, name="tiny3d")


# --- real-browser fixtures (test_browser*.py) -------------------------------------------------


@pytest.fixture(scope="module")
def browser():
    """Debian's Chromium driven by Playwright, one per test module."""
    from app_helpers import CHROMIUM, CHROMIUM_ARGS
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture()
def page(browser):
    """A fresh browser context and tab (downloads allowed) per test."""
    context = browser.new_context(viewport={"width": 1500, "height": 1900}, accept_downloads=True)
    pg = context.new_page()
    yield pg
    context.close()
