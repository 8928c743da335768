"""core.config: settings from the environment and TrainConfig validation/serialisation."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from core import config
from core.config import TrainConfig

REPO = Path(__file__).resolve().parents[1]
GOOD = {"dataset": "retinamnist", "model": "cnn2d"}


def test_defaults_match_the_contract():
    cfg = TrainConfig(**GOOD)
    assert (cfg.size, cfg.epochs, cfg.batch_size, cfg.learning_rate) == (28, 50, 32, 1e-3)
    assert (cfg.augment, cfg.fine_tune_blocks, cfg.seed, cfg.patience, cfg.min_epochs) == (
        False,
        0,
        0,
        10,
        0,
    )
    assert (cfg.lr_schedule, cfg.class_weights, cfg.input_size, cfg.name) == (
        "plateau",
        False,
        None,
        None,
    )
    assert config.MODEL_FAMILIES == ("cnn3d", "cnn2d", "vgg16", "resnet")
    assert cfg.validate() is cfg


@pytest.mark.parametrize(
    ("changes", "field", "shown"),
    [
        ({"dataset": "mnist"}, "mnist", "retinamnist"),
        ({"model": "alexnet"}, "model", "'alexnet'"),
        ({"size": 32}, "size", "32"),
        ({"dataset": "adrenalmnist3d", "model": "resnet", "size": 128}, "size", "128"),
        ({"model": "cnn3d"}, "cnn3d", "'retinamnist'"),
        ({"dataset": "adrenalmnist3d", "model": "cnn2d"}, "cnn2d", "'adrenalmnist3d'"),
        ({"dataset": "nodulemnist3d", "model": "vgg16"}, "vgg16", "'nodulemnist3d'"),
        ({"epochs": 0}, "epochs", "0"),
        ({"epochs": 1001}, "epochs", "1001"),
        ({"epochs": 2.5}, "epochs", "2.5"),
        ({"batch_size": 0}, "batch_size", "0"),
        ({"batch_size": "32"}, "batch_size", "'32'"),
        ({"learning_rate": 0}, "learning_rate", "0"),
        ({"learning_rate": -1e-3}, "learning_rate", "-0.001"),
        ({"learning_rate": 2.0}, "learning_rate", "2.0"),
        ({"model": "vgg16", "fine_tune_blocks": 6}, "fine_tune_blocks", "6"),
        ({"model": "vgg16", "fine_tune_blocks": -1}, "fine_tune_blocks", "-1"),
        ({"fine_tune_blocks": 2}, "fine_tune_blocks", "vgg16"),
        ({"seed": -1}, "seed", "-1"),
        ({"seed": 2**31}, "seed", str(2**31)),
        ({"patience": 0}, "patience", "0"),
        ({"min_epochs": -1}, "min_epochs", "-1"),
        ({"lr_schedule": "step"}, "lr_schedule", "'step'"),
        ({"model": "vgg16", "input_size": 16}, "input_size", "16"),
        ({"model": "vgg16", "input_size": 512}, "input_size", "512"),
        ({"input_size": 64}, "input_size", "64"),
        ({"label_smoothing": 1.0}, "label_smoothing", "1.0"),
        ({"label_smoothing": -0.1}, "label_smoothing", "-0.1"),
        ({"label_smoothing": True}, "label_smoothing", "True"),
        ({"dataset": "chestmnist", "label_smoothing": 0.1}, "label_smoothing", "single-label"),
        ({"weight_ema": 1}, "weight_ema", "1"),
        ({"weight_ema": "0.99"}, "weight_ema", "'0.99'"),
        ({"name": "../evil"}, "run name", "'../evil'"),
        ({"name": "a/b"}, "run name", "'a/b'"),
    ],
)
def test_validate_rejects_bad_values(changes, field, shown):
    cfg = TrainConfig(**{**GOOD, **changes})
    with pytest.raises(ValueError) as err:
        cfg.validate()
    message = str(err.value)
    assert field in message and shown in message, message


@pytest.mark.parametrize(
    "changes",
    [
        {"dataset": "adrenalmnist3d", "model": "cnn3d", "size": 64},
        {"dataset": "nodulemnist3d", "model": "resnet"},
        {"model": "vgg16", "fine_tune_blocks": 5, "input_size": 224},
        {"model": "resnet", "size": 224, "lr_schedule": "cosine", "min_epochs": 3},
        {"name": "my-run_1.0", "epochs": 1000, "batch_size": 4096, "learning_rate": 1},
        {"label_smoothing": 0.1, "weight_ema": 0.99},
        {"dataset": "chestmnist", "weight_ema": 0.999},
    ],
)
def test_validate_accepts_good_values(changes):
    TrainConfig(**{**GOOD, **changes}).validate()


def test_effective_input_size():
    assert TrainConfig(**GOOD).effective_input_size is None
    assert TrainConfig(dataset="retinamnist", model="vgg16").effective_input_size == 32
    assert TrainConfig(dataset="retinamnist", model="vgg16", size=64).effective_input_size == 64
    vgg = TrainConfig(dataset="retinamnist", model="vgg16", input_size=48)
    assert vgg.effective_input_size == 48


def test_dict_round_trip():
    cfg = TrainConfig(
        dataset="chestmnist",
        model="vgg16",
        size=64,
        epochs=7,
        augment=True,
        fine_tune_blocks=2,
        seed=5,
        lr_schedule="cosine",
        class_weights=True,
        input_size=64,
        weight_ema=0.99,
        name="x1",
    )
    d = cfg.to_dict()
    assert d["fine_tune_blocks"] == 2 and d["name"] == "x1"
    assert TrainConfig.from_dict(d) == cfg
    # run metadata stored next to the config in config.json is ignored
    assert TrainConfig.from_dict({**d, "task": "multi-label", "lean": True, "md5": "x"}) == cfg
    with pytest.raises(ValueError, match="missing.*dataset"):
        TrainConfig.from_dict({"model": "cnn2d"})
    assert cfg.replace(seed=9).seed == 9 and cfg.seed == 5
    with pytest.raises(AttributeError):
        cfg.seed = 1  # frozen


def test_medmnist_root(monkeypatch, tmp_path):
    monkeypatch.delenv("MEDMNIST_ROOT", raising=False)
    assert config.medmnist_root() == Path.home() / ".medmnist"
    monkeypatch.setenv("MEDMNIST_ROOT", str(tmp_path))
    assert config.medmnist_root() == tmp_path
    monkeypatch.setenv("MEDMNIST_ROOT", "~/somewhere")
    assert config.medmnist_root() == Path.home() / "somewhere"


def test_vgg16_weights(monkeypatch, tmp_path):
    monkeypatch.delenv("VGG16_WEIGHTS", raising=False)
    assert config.vgg16_weights() == "imagenet"
    monkeypatch.setenv("VGG16_WEIGHTS", "imagenet")
    assert config.vgg16_weights() == "imagenet"
    weights = tmp_path / "w.h5"
    weights.write_bytes(b"h5")
    monkeypatch.setenv("VGG16_WEIGHTS", str(weights))
    assert config.vgg16_weights() == str(weights)
    missing = tmp_path / "nope.h5"
    monkeypatch.setenv("VGG16_WEIGHTS", str(missing))
    with pytest.raises(FileNotFoundError) as err:
        config.vgg16_weights()
    assert str(missing) in str(err.value) and "1." in str(err.value) and "2." in str(err.value)


def test_registry_and_jobs_paths(monkeypatch, tmp_path):
    monkeypatch.delenv("TRAINED_MODELS_DIR", raising=False)
    monkeypatch.delenv("JOBS_DB", raising=False)
    assert config.trained_models_dir() == REPO / "trained_models"
    assert config.jobs_db() == REPO / "var" / "jobs.sqlite"
    monkeypatch.setenv("TRAINED_MODELS_DIR", str(tmp_path / "reg"))
    monkeypatch.setenv("JOBS_DB", str(tmp_path / "q.sqlite"))
    assert config.trained_models_dir() == tmp_path / "reg"
    assert config.jobs_db() == tmp_path / "q.sqlite"


def test_importing_core_config_is_light():
    code = (
        "import sys, core, core.config, core.info\n"
        "core.config.TrainConfig(dataset='retinamnist', model='cnn2d').validate()\n"
        "import os; assert os.environ['TF_USE_LEGACY_KERAS'] == '1'\n"
        "heavy = [m for m in sys.modules if m.split('.')[0] in "
        "('tensorflow', 'tf_keras', 'sklearn', 'torch', 'streamlit')]\n"
        "assert not heavy, heavy\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
