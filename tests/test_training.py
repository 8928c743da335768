"""core.training on synthetic data: best-weights restore, early stopping, schedules, callbacks,
cancellation, distribution strategies, and a full run() into the registry."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import tf_keras as keras
from conftest import md5_of, write_synthetic

from core import data, evaluation, registry, training
from core.config import TrainConfig

REPO = Path(__file__).resolve().parents[1]


def _cfg(**changes) -> TrainConfig:
    base = {"dataset": "pneumoniamnist", "model": "cnn2d", "epochs": 3, "batch_size": 8}
    return TrainConfig(**{**base, **changes})


def _constant_val(split: training.SplitData) -> training.SplitData:
    """Every validation image identical: scores tie, val AUC is 0.5 in every epoch, so the
    first epoch stays the best and the early-stopping/plateau arithmetic is deterministic."""
    x_val = np.repeat(split.x_val[:1], len(split.x_val), axis=0)
    return training.SplitData(
        split.x_train, split.y_train, x_val, split.y_val, split.x_test, split.y_test
    )


@pytest.fixture
def split(synthetic_root) -> training.SplitData:
    return training.load_data(_cfg())


class Recorder(keras.callbacks.Callback):
    """Weights after each epoch, to check which ones train() restores."""

    def __init__(self):
        super().__init__()
        self.weights: list[list[np.ndarray]] = []

    def on_epoch_end(self, epoch, logs=None):
        self.weights.append(self.model.get_weights())


class FlipLastEpoch(keras.callbacks.Callback):
    """Negate the classifier at the end of the last epoch: val AUC becomes 1 - AUC (worse), so
    the best epoch is an earlier one and restoring it is observable."""

    def on_train_batch_end(self, batch, logs=None):
        if self.params["epochs"] - 1 == self._epoch and batch == self.params["steps"] - 1:
            layer = self.model.get_layer("logits")
            layer.set_weights([-w for w in layer.get_weights()])

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch


def test_best_val_auc_weights_are_restored(split):
    cfg = _cfg(epochs=3, patience=10)
    result = training.train(cfg, callbacks=[FlipLastEpoch()], split_data=split)
    aucs = result.history["val_auc"]
    assert result.epochs_run == 3 == len(aucs) == len(result.history["loss"])
    assert aucs[-1] < max(aucs), f"the sabotaged last epoch was not worse: {aucs}"
    recomputed = evaluation.evaluate(
        split.y_val, evaluation.predict(result.model, split.x_val), "binary-class"
    )
    assert recomputed["auc"] == pytest.approx(max(aucs), abs=1e-9)
    assert result.best_epoch == int(np.argmax(aucs)) + 1
    assert result.best_val["auc"] == pytest.approx(max(aucs))


def test_restored_weights_are_those_of_the_best_epoch(split):
    recorder = Recorder()
    result = training.train(
        _cfg(epochs=3, patience=10), callbacks=[recorder], split_data=_constant_val(split)
    )
    assert result.history["val_auc"] == [0.5, 0.5, 0.5] and result.best_epoch == 1
    for got, want in zip(result.model.get_weights(), recorder.weights[0], strict=True):
        np.testing.assert_array_equal(got, want)
    assert not all(
        np.array_equal(a, b) for a, b in zip(recorder.weights[0], recorder.weights[-1], strict=True)
    ), "training did not change the weights at all"


def test_early_stopping_and_min_epochs(split):
    flat = _constant_val(split)
    stopped = training.train(_cfg(epochs=6, patience=1), split_data=flat)
    assert stopped.epochs_run == 2  # best at 1, one epoch without improvement
    waited = training.train(_cfg(epochs=6, patience=1, min_epochs=3), split_data=flat)
    assert waited.epochs_run == 4  # patience only counts after min_epochs
    assert waited.best_epoch == 1


def test_plateau_schedule_halves_lr(split):
    cfg = _cfg(epochs=8, patience=4, learning_rate=1e-3, lr_schedule="plateau")
    result = training.train(cfg, split_data=_constant_val(split))
    # halve after max(2, patience // 2) = 2 epochs without improvement; stop after 4
    assert result.epochs_run == 5
    np.testing.assert_allclose(result.history["lr"], [1e-3, 1e-3, 1e-3, 5e-4, 5e-4], rtol=1e-6)


def test_cosine_and_constant_schedules(split):
    cosine = training.train(_cfg(epochs=3, lr_schedule="cosine"), split_data=split)
    expected = [1e-3 * 0.5 * (1 + np.cos(np.pi * e / 3)) for e in range(3)]
    np.testing.assert_allclose(cosine.history["lr"], expected, rtol=1e-6)
    const = training.train(
        _cfg(epochs=3, lr_schedule="constant", patience=1), split_data=_constant_val(split)
    )
    np.testing.assert_allclose(const.history["lr"], [1e-3, 1e-3], rtol=1e-6)


def test_progress_callback_each_epoch(split):
    seen = []
    training.train(
        _cfg(epochs=2), callbacks=[training.ProgressCallback(seen.append)], split_data=split
    )
    assert [p["epoch"] for p in seen] == [1, 2]
    for p in seen:
        assert p["epochs"] == 2
        assert np.isfinite(p["loss"]) and 0 <= p["val_auc"] <= 1 and 0 <= p["val_acc"] <= 1


def test_cancel_raises_and_saves_nothing(synthetic_root, tmp_path):
    calls = []

    def should_cancel() -> bool:
        calls.append(1)
        return True

    seen = []
    output = tmp_path / "registry"
    with pytest.raises(training.TrainingCancelled, match="nothing was saved"):
        training.run(
            _cfg(epochs=5),
            output_root=output,
            callbacks=[
                training.CancelCallback(should_cancel),
                training.ProgressCallback(seen.append),
            ],
        )
    assert calls and len(seen) <= 1, "training went on after the cancel request"
    assert not output.exists() or not any(output.iterdir())


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_input_refused(split, bad):
    x = split.x_train.copy()
    x[0, 0, 0, 0] = bad
    broken = training.SplitData(
        x, split.y_train, split.x_val, split.y_val, split.x_test, split.y_test
    )
    with pytest.raises(ValueError, match="x_train contains NaN or inf"):
        training.train(_cfg(epochs=1), split_data=broken)


class PoisonWeights(keras.callbacks.Callback):
    """Turn the classifier's weights into NaN after the first batch, as a diverged step would."""

    def on_train_batch_end(self, batch, logs=None):
        if batch == 0:
            layer = self.model.get_layer("logits")
            layer.set_weights([np.full_like(w, np.nan) for w in layer.get_weights()])


def test_divergence_is_reported_and_nothing_saved(synthetic_root, tmp_path):
    output = tmp_path / "registry"
    with pytest.raises(training.TrainingDiverged, match="Nothing was saved"):
        training.run(_cfg(epochs=3), output_root=output, callbacks=[PoisonWeights()])
    assert not output.exists() or not any(output.iterdir())


def test_class_weights(split):
    weights = training._class_weights(np.array([[0], [0], [0], [1]]), "binary-class")
    assert weights == pytest.approx({0: 4 / 6, 1: 2.0})  # balanced: n / (k * count)
    assert training._class_weights(np.zeros((4, 14), np.int64), "multi-label, binary-class") is None
    result = training.train(_cfg(epochs=1, class_weights=True), split_data=split)
    assert result.epochs_run == 1 and np.isfinite(result.history["loss"][0])


def test_strategies_by_name(monkeypatch):
    import tensorflow as tf

    assert training.get_strategy("default") is tf.distribute.get_strategy()
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ValueError, match=r"TF_CONFIG[\s\S]*1\.[\s\S]*2\."):
        training.get_strategy("multiworker")
    with pytest.raises(ValueError, match="'horovod' is not supported.*mirrored"):
        training.get_strategy("horovod")


MIRRORED_SCRIPT = """
import json, sys
import tensorflow as tf

# Split the CPU before anything else touches TensorFlow's devices.
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

from core import info, training
from core.config import TrainConfig

info.INFO["pneumoniamnist"]["MD5"] = sys.argv[3]  # test only: the synthetic file is "published"
strategy = training.get_strategy("mirrored")
cfg = TrainConfig(dataset="pneumoniamnist", model="cnn2d", epochs=2, batch_size=8, name="mirror")
run_dir = training.run(cfg, output_root=sys.argv[2], strategy=strategy, data_root=sys.argv[1])
print(json.dumps({"replicas": strategy.num_replicas_in_sync, "run": str(run_dir)}))
"""


@pytest.mark.slow
def test_mirrored_strategy_on_two_logical_cpus(tmp_path):
    path = write_synthetic(tmp_path / "data", "pneumoniamnist")
    env = {**os.environ, "TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            textwrap.dedent(MIRRORED_SCRIPT),
            str(path.parent),
            str(tmp_path / "reg"),
            md5_of(path),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["replicas"] == 2
    run = Path(result["run"])
    assert run == tmp_path / "reg" / "mirror" and (run / "model.keras").is_file()
    assert registry.read_json(run, "config.json")["strategy"] == "MirroredStrategy"
    assert registry.read_json(run, "metrics.json")["epochs_run"] == 2


def test_run_writes_a_complete_run(synthetic_root, tmp_path):
    cfg = _cfg(dataset="retinamnist", epochs=2, seed=3, name="retina-run")
    run = training.run(cfg)  # registry from TRAINED_MODELS_DIR (the fixture's tmp folder)
    assert run == Path(os.environ["TRAINED_MODELS_DIR"]) / "retina-run"
    metrics = registry.read_json(run, "metrics.json")
    for split in ("val", "test"):
        assert set(metrics[split]) == {"auc", "acc"}
        assert 0 <= metrics[split]["auc"] <= 1 and 0 <= metrics[split]["acc"] <= 1
    assert metrics["seed"] == 3 and metrics["epochs_run"] == 2
    assert metrics["data_md5"] == md5_of(synthetic_root / "retinamnist.npz")
    assert metrics["s_per_epoch"] > 0 and metrics["params"] > 0
    assert {"tensorflow", "tf-keras", "numpy", "python"} <= set(metrics["versions"])
    cfg_json = registry.read_json(run, "config.json")
    assert TrainConfig.from_dict(cfg_json) == cfg
    assert cfg_json["task"] == "ordinal-regression" and len(cfg_json["labels"]) == 5
    assert cfg_json["input_shape"] == [28, 28, 3] and cfg_json["dataset_file"] == "retinamnist.npz"
    history = registry.read_json(run, "history.json")
    assert len(history["loss"]) == len(history["val_auc"]) == len(history["lr"]) == 2
    report = registry.read_json(run, "evaluation.json")
    assert report["auc"] == pytest.approx(metrics["test"]["auc"])
    assert np.array(report["confusion"]).shape == (5, 5)
    # clinical metrics beside the official ones: kappa for the ordinal grades, referable DR
    assert -1.0 <= report["clinical"]["kappa_quadratic"] <= 1.0
    assert report["clinical"]["referable"]["operating_point"]["chosen_on"] == "val"
    # the saved model reproduces the stored test metrics
    x, y = data.load_split("retinamnist", "test")
    again = evaluation.evaluate(
        y, evaluation.predict(registry.load_model(run), x), "ordinal-regression"
    )
    assert again == pytest.approx(metrics["test"], abs=1e-9)
    assert [r["name"] for r in registry.list_runs()] == ["retina-run"]


@pytest.mark.slow
def test_lean_vgg16_run_reports_the_shipped_model(synthetic_root, vgg16_weights_file, monkeypatch):
    monkeypatch.setenv("VGG16_WEIGHTS", str(vgg16_weights_file))
    cfg = _cfg(model="vgg16", epochs=1, fine_tune_blocks=1, name="lean")
    run = training.run(cfg)
    assert (run / registry.LEAN_FILE).is_file() and not (run / registry.MODEL_FILE).exists()
    metrics = registry.read_json(run, "metrics.json")
    x, y = data.load_split("pneumoniamnist", "test")
    model = registry.load_model(run)
    again = evaluation.evaluate(y, evaluation.predict(model, data.to_rgb(x)), "binary-class")
    assert again == pytest.approx(metrics["test"], abs=1e-12)


class BatchRecorder(keras.callbacks.Callback):
    """Trainable weights after every step (runs after WeightAverage's own batch hook)."""

    def __init__(self):
        super().__init__()
        self.steps: list[list[np.ndarray]] = []

    def on_train_batch_end(self, batch, logs=None):
        self.steps.append([v.numpy() for v in self.model.trainable_variables])


def test_weight_average_is_the_warmed_up_moving_average():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    start = [v.numpy() for v in model.trainable_variables]
    averager, recorder = training.WeightAverage(0.9), BatchRecorder()
    x, y = np.random.default_rng(0).normal(size=(40, 4)), np.ones((40, 1))
    model.fit(x, y, batch_size=8, epochs=2, verbose=0, callbacks=[averager, recorder])
    expected = start
    for step, weights in enumerate(recorder.steps, start=1):
        decay = min(0.9, (1 + step) / (10 + step))
        expected = [decay * e + (1 - decay) * w for e, w in zip(expected, weights, strict=True)]
    raw = [v.numpy() for v in model.trainable_variables]
    with averager.applied():
        for var, want, last in zip(model.trainable_variables, expected, raw, strict=True):
            np.testing.assert_allclose(var.numpy(), want, rtol=1e-5, atol=1e-6)
            assert not np.allclose(var.numpy(), last), "the average equals the raw weights"
    for var, last in zip(model.trainable_variables, raw, strict=True):
        np.testing.assert_array_equal(var.numpy(), last)  # raw weights are back after the block
    with pytest.raises(ValueError, match="momentum"):
        training.WeightAverage(1.0)


def test_train_with_weight_ema_scores_and_keeps_the_averaged_weights(split):
    recorder = Recorder()
    result = training.train(
        _cfg(epochs=3, patience=10, weight_ema=0.9), callbacks=[recorder], split_data=split
    )
    recomputed = evaluation.evaluate(
        split.y_val, evaluation.predict(result.model, split.x_val), "binary-class"
    )
    assert recomputed["auc"] == pytest.approx(max(result.history["val_auc"]), abs=1e-9)
    for raw in recorder.weights:  # the model returned is none of the raw epoch-end models
        assert not all(
            np.array_equal(a, b) for a, b in zip(result.model.get_weights(), raw, strict=True)
        )


def test_train_with_label_smoothing(split):
    result = training.train(_cfg(epochs=1, label_smoothing=0.1), split_data=split)
    assert np.isfinite(result.history["loss"][0])
    # a confident, correct prediction still costs something against smoothed targets
    loss = float(result.model.loss(np.array([[0]]), np.array([[0.999, 0.001]], np.float32)))
    assert loss == pytest.approx(-(0.95 * np.log(0.999) + 0.05 * np.log(0.001)), rel=1e-4)
