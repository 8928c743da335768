"""``python -m core.train`` / ``python -m core.evaluate`` as a user runs them, on the real files."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import md5_of, real_root, require_real_file

REPO = Path(__file__).resolve().parents[1]
# a proxy on a closed local port: every download fails at once, with or without internet
OFFLINE = {"http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9", "no_proxy": ""}


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {**os.environ, "MEDMNIST_ROOT": str(real_root()), "TF_CPP_MIN_LOG_LEVEL": "2"}
    # a run that ignored --output would land here, not in the repo's trained_models/
    env["TRAINED_MODELS_DIR"] = str(tmp_path / "default-registry")
    env.update(extra)
    return env


def _cli(module: str, *args: str, env: dict[str, str], timeout: int = 600):
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _check_run(run_dir: Path, flag: str, epochs: int) -> dict:
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for split in ("val", "test"):
        for key in ("auc", "acc"):
            assert 0.0 <= metrics[split][key] <= 1.0, (split, key, metrics[split])
    assert metrics["seed"] == 0
    assert 1 <= metrics["epochs_run"] <= epochs
    assert metrics["wall_time_s"] > 0 and metrics["s_per_epoch"] > 0
    assert {"tensorflow", "tf-keras", "numpy", "python", "medmnist"} <= set(metrics["versions"])
    assert metrics["data_md5"] == md5_of(require_real_file(flag))
    assert (run_dir / "model.keras").is_file()
    assert (run_dir / "evaluation.json").is_file() and (run_dir / "history.json").is_file()
    print(
        f"\n{flag}: test AUC {metrics['test']['auc']:.4f} ACC {metrics['test']['acc']:.4f}, "
        f"val AUC {metrics['val']['auc']:.4f}, {metrics['s_per_epoch']} s/epoch, "
        f"{metrics['epochs_run']} epochs"
    )
    return metrics


def _train_and_evaluate(tmp_path: Path, flag: str, model: str, *extra: str) -> Path:
    require_real_file(flag)
    output = tmp_path / "runs"
    env = _env(tmp_path)
    out = _cli(
        "core.train",
        "--dataset",
        flag,
        "--model",
        model,
        *extra,
        "--epochs",
        "2",
        "--output",
        str(output),
        env=env,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    run_dir = Path(out.stdout.strip().splitlines()[-1])
    assert run_dir.parent == output and run_dir.is_dir()
    assert "epoch" in out.stderr  # the progress bar
    assert not (tmp_path / "default-registry").exists()
    metrics = _check_run(run_dir, flag, 2)
    config = json.loads((run_dir / "config.json").read_text())
    assert config["dataset"] == flag and config["model"] == model
    assert config["augment"] == ("--augment" in extra)

    ev = _cli("core.evaluate", str(run_dir), env=env)
    assert ev.returncode == 0, ev.stderr[-3000:]
    auc = re.search(r"^test AUC (\d\.\d{4})$", ev.stdout, re.M)
    acc = re.search(r"^test ACC (\d\.\d{4})$", ev.stdout, re.M)
    assert auc and acc, ev.stdout
    assert auc.group(1) == f"{metrics['test']['auc']:.4f}"
    assert acc.group(1) == f"{metrics['test']['acc']:.4f}"
    assert f"(metrics.json: AUC {metrics['test']['auc']:.4f}" in ev.stdout
    return run_dir


@pytest.mark.slow
def test_train_retinamnist_cnn2d_with_augmentation(tmp_path):
    run_dir = _train_and_evaluate(
        tmp_path,
        "retinamnist",
        "cnn2d",
        "--augment",
        "--weight-ema",
        "0.9",
        "--label-smoothing",
        "0.1",
    )
    cfg = json.loads((run_dir / "config.json").read_text())
    assert (cfg["weight_ema"], cfg["label_smoothing"]) == (0.9, 0.1)
    # a run name resolves inside the registry (TRAINED_MODELS_DIR)
    env = _env(tmp_path, TRAINED_MODELS_DIR=str(run_dir.parent))
    ev = _cli("core.evaluate", run_dir.name, "--split", "val", env=env)
    assert ev.returncode == 0, ev.stderr[-3000:]
    val = json.loads((run_dir / "metrics.json").read_text())["val"]
    assert f"val AUC {val['auc']:.4f}" in ev.stdout
    assert f"(metrics.json: AUC {val['auc']:.4f}, ACC {val['acc']:.4f})" in ev.stdout


@pytest.mark.slow
def test_train_adrenalmnist3d_cnn3d(tmp_path):
    _train_and_evaluate(tmp_path, "adrenalmnist3d", "cnn3d")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--dataset", "mnist", "--model", "cnn2d"], "unknown MedMNIST dataset 'mnist'"),
        (["--dataset", "retinamnist", "--model", "cnn3d"], "needs a 3D dataset"),
        (["--dataset", "retinamnist", "--model", "cnn2d", "--epochs", "0"], "epochs=0"),
        (["--dataset", "retinamnist", "--model", "cnn2d", "--size", "32"], "size=32"),
        (["--dataset", "retinamnist", "--model", "cnn2d", "--name", "../x"], "invalid run name"),
        (["--dataset", "retinamnist", "--model", "alexnet"], "invalid choice: 'alexnet'"),
        (
            ["--dataset", "retinamnist", "--model", "cnn2d", "--weight-ema", "1.5"],
            "weight_ema=1.5",
        ),
        (
            ["--dataset", "chestmnist", "--model", "cnn2d", "--label-smoothing", "0.1"],
            "single-label",
        ),
        (["--model", "cnn2d"], "--dataset"),
    ],
)
def test_train_bad_arguments(tmp_path, args, message):
    output = tmp_path / "runs"
    out = _cli("core.train", *args, "--output", str(output), env=_env(tmp_path), timeout=120)
    assert out.returncode != 0
    assert message in out.stderr, out.stderr
    assert "Traceback" not in out.stderr
    assert not output.exists() or not any(output.iterdir())


def test_train_refuses_an_existing_run_name_before_training(tmp_path):
    output = tmp_path / "runs"
    (output / "taken").mkdir(parents=True)
    (output / "taken" / "keep.txt").write_text("mine")
    out = _cli(
        "core.train",
        "--dataset",
        "retinamnist",
        "--model",
        "cnn2d",
        "--name",
        "taken",
        "--output",
        str(output),
        env=_env(tmp_path),
        timeout=120,
    )
    assert out.returncode == 2 and "'taken' already exists" in out.stderr, out.stderr
    assert sorted(p.name for p in output.iterdir()) == ["taken"]
    assert (output / "taken" / "keep.txt").read_text() == "mine"


def test_train_missing_data_file_explains(tmp_path):
    out = _cli(
        "core.train",
        "--dataset",
        "dermamnist",
        "--model",
        "cnn2d",
        "--epochs",
        "1",
        "--output",
        str(tmp_path / "runs"),
        env=_env(tmp_path, MEDMNIST_ROOT=str(tmp_path / "empty"), **OFFLINE),
        timeout=300,
    )
    # the CLI tries to download the missing file; offline that is a clear error, no traceback
    assert out.returncode != 0
    assert "dermamnist.npz is not available: download failed" in out.stderr, out.stderr[-3000:]
    assert "1. Download https://" in out.stderr
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_evaluate_bad_run_dir(tmp_path):
    out = _cli("core.evaluate", str(tmp_path / "nothing"), env=_env(tmp_path), timeout=120)
    assert out.returncode == 2  # core.cli: every user error exits 2
    assert "no run at" in out.stderr and "Traceback" not in out.stderr
