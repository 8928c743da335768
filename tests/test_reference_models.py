"""The reference models shipped in the repository's trained_models/ are what they claim.

For every shipped run: the JSON files are complete and consistent, the model reloads and scores
the real test split within 0.002 of ``metrics.json`` (official MedMNIST evaluator), and every
shipped ``.tflite`` file scores within 0.002 of its ``quantized/results.json``. The committed
size stays within the 150 MB budget, and no dataset or ImageNet weights file is committed.

These tests always look at the repository's own ``trained_models/`` (not ``TRAINED_MODELS_DIR``,
which fixtures point at temporary registries). With ``REQUIRE_REAL_DATA=1`` (CI) a missing data
file, a missing VGG16 weights file or an empty trained_models/ is a failure, not a skip.
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import REPO, _require, require_real_file

from core import info, registry

SHIPPED = REPO / "trained_models"
TOLERANCE = 0.002
MAX_TOTAL_BYTES = 150 * 1000 * 1000  # the budget: 150 MB of committed files
GITHUB_MAX_FILE_BYTES = 100 * 1024 * 1024  # GitHub rejects pushes with a larger file
WEIGHTS_NAMES = {
    "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
    "vgg16_weights_tf_dim_ordering_tf_kernels.h5",
}

RUNS = registry.list_runs(SHIPPED)
# An empty trained_models/ yields one "no-runs" case, so the suite cannot pass vacuously in CI.
RUN_PARAMS = [pytest.param(r, id=r["name"]) for r in RUNS] or [pytest.param(None, id="no-runs")]


def _need_runs(run: dict[str, Any] | None) -> dict[str, Any]:
    if run is None:
        _require(f"no reference runs shipped in {SHIPPED} (run `python -m benchmarks.reproduce`)")
    return run


def _need_vgg16_weights(run: dict[str, Any]) -> None:
    """Lean VGG16 runs rebuild the backbone from the local ImageNet weights file."""
    if run["config"].get("model") != "vgg16":
        return
    value = os.environ.get("VGG16_WEIGHTS", "")
    if not value or not Path(value).expanduser().is_file():
        _require(
            f"VGG16_WEIGHTS={value!r} is not an existing file (needed to rebuild {run['name']})"
        )


def _test_split(run: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, str]:
    from core import data
    from core.models import prepare_input

    cfg = run["config"]
    flag, size = cfg["dataset"], int(cfg.get("size", 28))
    path = require_real_file(flag, size)
    x, y = data.load_split(flag, "test", size, root=path.parent)
    return prepare_input(cfg["model"], x), y, info.task(flag)


# --------------------------------------------------------------------------------------------
# Metadata (fast, no TensorFlow)
# --------------------------------------------------------------------------------------------
def _is_score(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value) and 0.0 <= value <= 1.0


def _check_split_metrics(where: str, entry: dict[str, Any]) -> None:
    for split in ("val", "test"):
        for metric in ("auc", "acc"):
            value = (entry.get(split) or {}).get(metric)
            assert _is_score(value), (
                f"{where}: {split}.{metric} = {value!r} is not a score in [0, 1]"
            )


def test_every_shipped_directory_is_a_run() -> None:
    """list_runs silently skips incomplete runs; a shipped directory must never be one."""
    listed = {r["name"] for r in RUNS}
    # ensemble folders (core.trust) hold member names, no model: listed by ensemble_dirs
    listed |= {p.name for p in registry.ensemble_dirs(SHIPPED)}
    dirs = (
        {p.name for p in SHIPPED.iterdir() if p.is_dir() and not p.name.startswith(".")}
        if SHIPPED.is_dir()
        else set()
    )
    assert dirs <= listed, f"incomplete run directories in trained_models/: {sorted(dirs - listed)}"


def test_every_shipped_ensemble_is_complete() -> None:
    """An ensemble names shipped member runs and carries its fitted trust values."""
    for ens in registry.ensemble_dirs(SHIPPED):
        members, _ = registry.ensemble_members(ens)  # raises when a member run is missing
        assert members, ens
        for name in ("metrics.json", "calibration.json", "ood.npz"):
            assert (ens / name).is_file(), f"{ens.name} lacks {name}"
        assert not list(ens.glob("*.keras")), f"{ens.name} copies member weights"


@pytest.mark.parametrize("run", RUN_PARAMS)
def test_shipped_run_metadata(run: dict[str, Any] | None) -> None:
    run = _need_runs(run)
    path = Path(run["path"])
    name = run["name"]
    for fname in registry.JSON_FILES:
        assert (path / fname).is_file(), f"{name}: {fname} is missing"
    assert (path / registry.MODEL_FILE).is_file() or (path / registry.LEAN_FILE).is_file(), (
        f"{name}: neither {registry.MODEL_FILE} nor {registry.LEAN_FILE}"
    )

    cfg = run["config"]
    for key in ("dataset", "model", "seed", "task", "labels", "input_shape"):
        assert key in cfg, f"{name}: config.json lacks {key!r}"
    assert cfg["task"] == info.task(cfg["dataset"]), f"{name}: config task disagrees with INFO"

    metrics = run["metrics"]
    _check_split_metrics(f"{name} metrics.json", metrics)
    for key in ("seed", "epochs_run", "best_epoch", "wall_time_s"):
        assert key in metrics, f"{name}: metrics.json lacks {key!r}"
    seeds = metrics.get("seeds")
    assert isinstance(seeds, list) and seeds, f"{name}: metrics.json needs a non-empty 'seeds' list"
    for entry in seeds:
        assert "seed" in entry, f"{name}: a seeds entry has no 'seed'"
        _check_split_metrics(f"{name} seeds[{entry['seed']}]", entry)
    own = [e for e in seeds if e["seed"] == metrics["seed"]]
    assert len(own) == 1, f"{name}: the shipped seed {metrics['seed']} must appear once in seeds"
    assert own[0]["test"] == metrics["test"] and own[0]["val"] == metrics["val"], (
        f"{name}: the shipped seed's entry in seeds disagrees with metrics.json"
    )
    summary = metrics.get("summary")
    if cfg.get("arm") or len(seeds) > 1:
        assert isinstance(summary, dict), f"{name}: a reference run needs a 'summary'"
    if summary:
        assert summary.get("n_seeds") == len(seeds), f"{name}: summary.n_seeds != len(seeds)"
        assert summary.get("reference_seed") == metrics["seed"], f"{name}: wrong reference_seed"
        for split in ("val", "test"):
            for metric in ("auc", "acc"):
                values = [e[split][metric] for e in seeds]
                mean = summary.get(f"{split}_{metric}_mean")
                assert mean == pytest.approx(float(np.mean(values)), abs=1e-9), (
                    f"{name}: summary {split}_{metric}_mean {mean} is not the mean of the seeds"
                )

    history = registry.read_json(path, "history.json")
    for key in ("loss", "val_auc", "val_acc"):
        assert isinstance(history.get(key), list) and history[key], f"{name}: history.{key}"
    assert len(history["val_auc"]) == metrics["epochs_run"], (
        f"{name}: history has {len(history['val_auc'])} epochs, metrics says "
        f"{metrics['epochs_run']}"
    )
    assert 1 <= metrics["best_epoch"] <= metrics["epochs_run"], f"{name}: best_epoch out of range"

    evaluation = registry.read_json(path, "evaluation.json")
    for key in ("auc", "acc", "task", "n", "roc"):
        assert key in evaluation, f"{name}: evaluation.json lacks {key!r}"
    for metric in ("auc", "acc"):
        assert evaluation[metric] == pytest.approx(metrics["test"][metric], abs=1e-6), (
            f"{name}: evaluation.json {metric} disagrees with metrics.json"
        )
    assert evaluation["n"] == info.n_samples(cfg["dataset"])["test"], (
        f"{name}: evaluation.json was not computed on the full official test split"
    )


# --------------------------------------------------------------------------------------------
# Real data (slow): the shipped files reproduce the shipped numbers
# --------------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("run", RUN_PARAMS)
def test_shipped_model_reproduces_test_metrics(run: dict[str, Any] | None) -> None:
    from core import data, evaluation

    run = _need_runs(run)
    _need_vgg16_weights(run)
    x, y, task = _test_split(run)
    cfg, claimed = run["config"], run["metrics"]["test"]
    md5 = run["metrics"].get("data_md5")
    if md5:
        actual = data.md5sum(require_real_file(cfg["dataset"], int(cfg.get("size", 28))))
        assert actual == md5, f"{run['name']} was evaluated on a different data file ({md5})"
    model = registry.load_model(run["path"], root=SHIPPED)
    got = evaluation.evaluate(y, evaluation.predict(model, x), task)
    for metric in ("auc", "acc"):
        assert abs(got[metric] - claimed[metric]) <= TOLERANCE, (
            f"{run['name']}: recomputed test {metric.upper()} {got[metric]:.4f} differs from "
            f"metrics.json {claimed[metric]:.4f} by more than {TOLERANCE}"
        )


@pytest.mark.slow
@pytest.mark.parametrize("run", RUN_PARAMS)
def test_shipped_tflite_files_reproduce_results(run: dict[str, Any] | None) -> None:
    from core import evaluation
    from core.tflite_runner import TFLiteModel

    run = _need_runs(run)
    qdir = Path(run["path"]) / "quantized"
    files = sorted(qdir.glob("*.tflite"))
    results = registry.read_json(qdir, "results.json")
    if results is None:
        assert not files, f"{run['name']}: .tflite files ship without quantized/results.json"
        return
    modes = results.get("modes") or {}
    float_test = (results.get("float") or {}).get("test") or {}
    for metric in ("auc", "acc"):
        # The float baseline of the quantized results must be the shipped model itself; a
        # retrained model with stale quantized files would break this.
        assert abs(float_test.get(metric, -1) - run["metrics"]["test"][metric]) <= TOLERANCE, (
            f"{run['name']}: quantized/results.json was measured on another model "
            f"(float {metric} {float_test.get(metric)} vs {run['metrics']['test'][metric]})"
        )
    for entry in modes.values():
        if entry.get("ok") and entry.get("file"):
            assert (Path(run["path"]) / entry["file"]).is_file(), (
                f"{run['name']}: results.json lists {entry['file']} but it is not shipped"
            )
    if not files:
        return
    x, y, task = _test_split(run)
    for path in files:
        entry = modes.get(path.stem)
        assert entry and entry.get("ok"), (
            f"{run['name']}: {path.name} has no result in results.json"
        )
        scores = TFLiteModel(path).predict(x)
        # A shipped deployable model must still depend on its input (see fold_head_batchnorm).
        assert scores.std(axis=0).max() > 1e-3, f"{run['name']}/{path.name}: constant output"
        assert not any("collapsed" in n for n in entry.get("notes") or []), (
            f"{run['name']}/{path.name} ships although results.json marks it collapsed"
        )
        got = evaluation.evaluate(y, scores, task)
        for metric in ("auc", "acc"):
            claimed = entry["test"][metric]
            assert abs(got[metric] - claimed) <= TOLERANCE, (
                f"{run['name']}/{path.name}: test {metric.upper()} {got[metric]:.4f} differs from "
                f"results.json {claimed:.4f} by more than {TOLERANCE}"
            )


# --------------------------------------------------------------------------------------------
# What is committed
# --------------------------------------------------------------------------------------------
def visible_files(root: Path) -> list[Path]:
    """Every file under ``root`` outside hidden directories (staging, scratch)."""
    files = []
    if root.is_dir():
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            files += [Path(dirpath) / f for f in filenames]
    return sorted(files)


def committed_files(root: Path = SHIPPED, repo: Path = REPO) -> list[Path]:
    """Files under ``root`` that git tracks or would add (tracked + untracked, not ignored).

    Counting untracked files too makes the budget bite before the commit, not after. Outside a
    git checkout (a source tarball) every visible file counts.
    """
    git = shutil.which("git")
    if not git or not (repo / ".git").exists():
        return visible_files(root)
    rel = os.path.relpath(root, repo)
    proc = subprocess.run(
        [git, "ls-files", "-z", "--cached", "--others", "--exclude-standard", "--", rel],
        cwd=repo,
        capture_output=True,
    )
    if proc.returncode != 0:  # e.g. git's "dubious ownership" refusal: count what is visible
        return visible_files(root)
    paths = [repo / p for p in proc.stdout.decode().split("\0") if p]
    return sorted(p for p in paths if p.is_file())


def _dataset_names() -> set[str]:
    names = set()
    for flag in info.FLAGS:
        for size in info.sizes(flag):
            names.add(info.file_name(flag, size))
    return names


def test_committed_size_budget() -> None:
    files = committed_files()
    total = sum(p.stat().st_size for p in files)
    biggest = sorted(files, key=lambda p: p.stat().st_size, reverse=True)[:5]
    listing = ", ".join(f"{p.relative_to(REPO)} ({p.stat().st_size / 1e6:.1f} MB)" for p in biggest)
    assert total <= MAX_TOTAL_BYTES, (
        f"trained_models/ commits {total / 1e6:.1f} MB > {MAX_TOTAL_BYTES / 1e6:.0f} MB. "
        f"Largest: {listing}"
    )
    for p in files:
        assert p.stat().st_size < GITHUB_MAX_FILE_BYTES, f"{p} is over GitHub's 100 MB file limit"


def test_no_dataset_or_imagenet_weights_committed() -> None:
    datasets = _dataset_names()
    for p in sorted(set(committed_files()) | set(visible_files(SHIPPED))):
        assert p.name not in WEIGHTS_NAMES, f"{p}: the ImageNet weights must not be committed"
        if p.suffix != ".npz":
            continue
        assert p.name not in datasets, f"{p}: MedMNIST dataset files must not be committed"
        with np.load(p, allow_pickle=False) as npz:
            split_keys = [k for k in npz.files if k.endswith(("_images", "_labels"))]
        assert not split_keys, f"{p} holds dataset arrays {split_keys[:4]}"


def test_committed_files_helper_skips_hidden_dirs(tmp_path: Path) -> None:
    root = tmp_path / "trained_models"
    (root / "run" / "quantized").mkdir(parents=True)
    (root / ".staging" / "run-s0").mkdir(parents=True)
    (root / "run" / "model.keras").write_bytes(b"x" * 10)
    (root / "run" / "quantized" / "int8.tflite").write_bytes(b"x" * 5)
    (root / ".staging" / "run-s0" / "model.keras").write_bytes(b"x" * 1000)
    files = committed_files(root, tmp_path)  # tmp_path is no git checkout: the walk fallback
    assert [p.relative_to(root).as_posix() for p in files] == [
        "run/model.keras",
        "run/quantized/int8.tflite",
    ]
