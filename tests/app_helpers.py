"""Builders shared by the app tests: synthetic MedMNIST files and a tiny model registry.

Models have random weights (training is not what the app tests check); every file is made
through the same ``core`` functions the product uses (``core.registry.save_run``,
``core.evaluation.report``, ``core.quantize.quantize_run``), so the pages read real layouts.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

# Small but structured: a bright disk (the "anatomy") on black, so masks and heatmaps differ.
SPLIT_SIZES = {"retinamnist": (20, 8, 12), "adrenalmnist3d": (6, 4, 6)}


def _disk_images(n: int, size: int, rng: np.random.Generator, three_d: bool) -> np.ndarray:
    grid = np.indices((size,) * (3 if three_d else 2)).astype(np.float32)
    out = []
    for _ in range(n):
        centre = rng.uniform(size * 0.35, size * 0.65, grid.shape[0])
        radius = rng.uniform(size * 0.2, size * 0.35)
        dist = np.sqrt(((grid - centre.reshape(-1, *([1] * grid.shape[0]))) ** 2).sum(0))
        inside = dist < radius
        if three_d:  # shape mask, 0/255 like AdrenalMNIST3D
            out.append(np.where(inside, 255, 0).astype(np.uint8))
        else:  # fundus-like RGB disk with texture
            texture = rng.integers(90, 230, (size, size, 3))
            out.append(np.where(inside[..., None], texture, 0).astype(np.uint8))
    return np.stack(out)


def write_synthetic_data(root: Path, seed: int = 0) -> Path:
    """Write ``retinamnist.npz`` and ``adrenalmnist3d.npz`` (28 px) with few samples."""
    from core import info

    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for flag, sizes in SPLIT_SIZES.items():
        arrays = {}
        n_classes = len(info.label_names(flag))
        for split, n in zip(info.SPLITS, sizes, strict=True):
            arrays[f"{split}_images"] = _disk_images(n, 28, rng, info.is_3d(flag))
            # every class present in every split (AUC needs both sides)
            arrays[f"{split}_labels"] = (np.arange(n) % n_classes).reshape(n, 1).astype(np.uint8)
        np.savez(root / info.file_name(flag, 28), **arrays)
    return root


def fake_md5(path: Path) -> str:
    """The published MD5 for a synthetic file, so ``core.data`` accepts it in tests."""
    from core import info

    stem = Path(path).name.removesuffix(".npz")
    flag, _, size = stem.partition("_")
    return info.expected_md5(flag, int(size or 28))


@contextlib.contextmanager
def synthetic_environment(tmp: Path, registry: Path | None = None) -> Iterator[dict[str, str]]:
    """Env + patches for in-process tests: synthetic data accepted, no worker autostart."""
    import core.data

    data_root = write_synthetic_data(tmp / "data")
    env = {
        "MEDMNIST_ROOT": str(data_root),
        "TRAINED_MODELS_DIR": str(registry or tmp / "registry"),
        "JOBS_WORKER_AUTOSTART": "0",
        "JOBS_DB": str(tmp / "jobs.sqlite"),
    }
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        mp.setattr(core.data, "md5sum", fake_md5)
        yield env


def make_run(
    registry: Path,
    flag: str,
    family: str,
    *,
    seed: int = 0,
    augment: bool = False,
    name: str | None = None,
) -> Path:
    """Save a random-weight run with real metrics/evaluation files computed on the data."""
    import tf_keras as keras

    from core import clinical, data, evaluation, info, models
    from core import registry as reg
    from core.config import TrainConfig

    keras.utils.set_random_seed(seed)
    cfg = TrainConfig(dataset=flag, model=family, epochs=3, seed=seed, augment=augment)
    task = info.task(flag)
    shape = models.input_shape_for(family, flag, 28)
    model = models.build_model(family, shape, info.num_classes(flag), task)
    x_val, y_val = data.load_split(flag, "val")
    x_test, y_test = data.load_split(flag, "test")
    scores = evaluation.predict(model, models.prepare_input(family, x_test))
    val_scores = evaluation.predict(model, models.prepare_input(family, x_val))
    val = evaluation.evaluate(y_val, val_scores, task)
    test = evaluation.evaluate(y_test, scores, task)
    name = name or f"{flag}-{family}-s{seed}{'-aug' if augment else ''}"
    metrics = {
        "val": val,
        "test": test,
        "seed": seed,
        "epochs_run": 3,
        "best_epoch": 2,
        "wall_time_s": 1.0,
        "s_per_epoch": 0.33,
        "params": int(model.count_params()),
        "created": f"2026-01-0{seed + 1}T10:00:00+00:00",
        "seeds": [{"seed": seed, "val": val, "test": test, "run": name}],
    }
    history = {
        "loss": [1.2, 0.9, 0.8],
        "val_auc": [0.55, 0.6, 0.58],
        "val_acc": [0.3, 0.4, 0.4],
        "lr": [1e-3, 1e-3, 5e-4],
    }
    config_dict = {
        **cfg.to_dict(),
        "task": task,
        "labels": info.label_names(flag),
        "input_shape": list(shape),
        "dataset_file": info.file_name(flag, 28),
    }
    report = evaluation.report(y_test, scores, task, info.label_names(flag))
    report["clinical"] = clinical.clinical_report(
        y_test, scores, task, info.label_names(flag), flag, y_val, val_scores
    )
    return reg.save_run(model, config_dict, history, metrics, report, root=registry, name=name)


def build_registry(registry: Path, quantize: bool = True) -> dict[str, Path]:
    """Two RetinaMNIST CNNs (augmentation off/on, one quantized) and one AdrenalMNIST3D CNN."""
    runs = {
        "retina": make_run(registry, "retinamnist", "cnn2d", seed=0),
        "retina_aug": make_run(registry, "retinamnist", "cnn2d", seed=1, augment=True),
        "adrenal": make_run(registry, "adrenalmnist3d", "cnn3d", seed=2),
    }
    if quantize:
        from core.quantize import quantize_run

        quantize_run(runs["retina"], ("dynamic",), latency_runs=2, n_representative=8)
    return runs


# --------------------------------------------------------------------------------------------
# A real `streamlit run` server (browser tests and benchmarks/app_perf.py)
# --------------------------------------------------------------------------------------------

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    # WebGL through the software rasteriser: the 3D views (vtk.js, Plotly) need it headless.
    "--use-angle=swiftshader",
    "--enable-unsafe-swiftshader",
]


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def streamlit_server(
    env: dict[str, str], log_path: Path, timeout: float = 90.0, script: str = "app/Home.py"
) -> Iterator[str]:
    """Run ``streamlit run app/Home.py`` (or ``script``) on 127.0.0.1 and a free port; yield
    its base URL.

    The server gets its own process group, so stopping it also stops what it spawned (except
    a training worker, which detaches on purpose; see ``stop_worker``).
    """
    import os
    import signal
    import subprocess
    import sys
    import time
    import urllib.request

    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        script,
        "--server.port",
        str(port),
        "--server.address",
        "127.0.0.1",
        "--server.headless",
        "true",
    ]
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            cmd,
            cwd=REPO,
            env={**os.environ, **env},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"streamlit exited with {proc.returncode}; see {log_path}")
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as resp:
                    if resp.read().strip() == b"ok":
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"streamlit not healthy after {timeout:.0f} s; see {log_path}")
            time.sleep(0.1)
        yield url
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)


def stop_worker(db_path: str) -> None:
    """Stop the detached training worker the app started for this job database, if any."""
    import os
    import signal

    from core import jobs

    status = jobs.worker_status(jobs.JobStore(db_path))
    if status.alive and status.pid:
        with contextlib.suppress(ProcessLookupError):
            os.kill(status.pid, signal.SIGTERM)


def wait_idle(page, timeout_ms: int = 120_000) -> None:
    """Wait until Streamlit has finished the current script run (and any it queued)."""
    page.wait_for_timeout(150)
    page.wait_for_selector(
        "[data-testid=stApp][data-test-script-state=notRunning]", timeout=timeout_ms
    )
    page.wait_for_timeout(100)


def poll(page, read, ok, timeout_ms: int, what: str):
    """Read the page every 250 ms until ``ok(read())``; fail with the last reading.

    Browser assertions poll because CI runs on a loaded 2-core machine: a fragment's images or
    a rerun's new text can land a moment after ``data-test-script-state`` says notRunning.
    """
    import time

    deadline = time.monotonic() + timeout_ms / 1000
    while True:
        value = read()
        if ok(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {timeout_ms / 1000:.0f} s for {what}; saw {value!r}")
        page.wait_for_timeout(250)


def wait_captions(page, *texts: str, timeout_ms: int = 30_000) -> list[str]:
    """Wait until every text in ``texts`` is an image caption on the page; return them all."""
    captions = page.locator("[data-testid=stImageCaption]")
    return poll(
        page,
        captions.all_inner_texts,
        lambda seen: all(t in seen for t in texts),
        timeout_ms,
        f"captions {texts}",
    )


def wait_body_text(page, pattern: str, *, regex: bool = False, timeout_ms: int = 30_000) -> str:
    """Wait until the page's text contains ``pattern`` (a regex when ``regex``); return it."""
    import re

    def found(body: str) -> bool:
        return bool(re.search(pattern, body)) if regex else pattern in body

    body = poll(page, lambda: page.inner_text("body"), found, timeout_ms, repr(pattern))
    return body


def wait_attribute_changes(page, locator, name: str, before, timeout_ms: int = 30_000):
    """Wait until ``locator``'s attribute ``name`` differs from ``before``; return it."""
    return poll(page, lambda: locator.get_attribute(name), lambda v: v != before, timeout_ms, name)


def eventually(page, check, timeout_ms: int = 30_000):
    """Call ``check`` (which asserts) every 250 ms until it passes; return what it returns.

    After the deadline its last ``AssertionError`` propagates, so the failure reads as the check.
    """
    import time

    deadline = time.monotonic() + timeout_ms / 1000
    while True:
        try:
            return check()
        except AssertionError:
            if time.monotonic() > deadline:
                raise
        page.wait_for_timeout(250)
