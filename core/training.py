"""Compile + fit with early stopping on the official validation AUC, then evaluate and save.

UI progress and cancellation come in as callbacks; the distribution strategy is a parameter, so
the same code runs on one CPU, several local devices, or several workers (``TF_CONFIG``).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf
import tf_keras as keras

from core import clinical, data, evaluation, info, registry
from core.config import OVERRIDE_SPLITS, TrainConfig
from core.models import build_model, compile_model, prepare_input
from core.models import io as model_io

STRATEGIES = ("default", "mirrored", "multiworker")


class TrainingCancelled(RuntimeError):
    """Training was cancelled on request; nothing was saved."""


class TrainingDiverged(RuntimeError):
    """The loss became NaN/inf; nothing was saved."""


@dataclass
class TrainResult:
    model: keras.Model
    history: dict[str, list[float]]
    best_epoch: int
    epochs_run: int
    wall_time_s: float
    best_val: dict[str, float] = field(default_factory=dict)


@dataclass
class SplitData:
    """Model-ready arrays of the three splits (``prepare_input`` already applied)."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def get_strategy(name: str = "default") -> tf.distribute.Strategy:
    """A ``tf.distribute`` strategy by name.

    ``multiworker`` reads the cluster from ``TF_CONFIG`` (one JSON per worker, as TensorFlow
    documents); every worker runs the same command.

    Raises:
        ValueError: unknown name, or ``multiworker`` without ``TF_CONFIG``.
    """
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multiworker":
        if not os.environ.get("TF_CONFIG"):
            raise ValueError(
                "strategy 'multiworker' needs TF_CONFIG.\n"
                '  1. On each worker set TF_CONFIG=\'{"cluster": {"worker": ["host1:port", '
                '"host2:port"]}, "task": {"type": "worker", "index": I}}\'.\n'
                "  2. Run the same training command on every worker."
            )
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ValueError(f"strategy {name!r} is not supported; choose one of {STRATEGIES}")


def strategy_name(strategy: tf.distribute.Strategy | None) -> str:
    """The strategy's public name for ``config.json`` (TensorFlow's multi-worker class is
    ``CollectiveAllReduceStrategy`` inside; users know it as ``MultiWorkerMirroredStrategy``)."""
    if strategy is None:
        return "default"
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return "MultiWorkerMirroredStrategy"
    return type(strategy).__name__


def is_chief(strategy: tf.distribute.Strategy | None = None) -> bool:
    """Whether this process saves the run: always, except a non-chief multi-worker process.

    TensorFlow's convention: the task of type ``chief``, or worker 0 when the cluster has no
    ``chief`` entry. Every worker still runs the whole training and evaluation (their
    collective ops must all take part), but only the chief's run goes to the registry.

    Args:
        strategy: the strategy in use (None: the default, single-process one).

    Returns:
        True for a single-process strategy and for the multi-worker chief.
    """
    resolver = getattr(strategy, "cluster_resolver", None)
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) or resolver is None:
        return True
    task_type, task_id = resolver.task_type, resolver.task_id
    if task_type == "chief":
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return task_type == "worker" and task_id == 0 and not has_chief


def apply_label_overrides(
    y: np.ndarray, overrides: dict[str, int] | None, split: str
) -> np.ndarray:
    """A copy of single-label ``y`` ``(N, 1)`` with ``{"index": label}`` replaced.

    Raises:
        ValueError: an index outside the split (the corrections came from another data file).
    """
    if not overrides:
        return y
    y = y.copy()
    for index, label in overrides.items():
        i = int(index)
        if not 0 <= i < len(y):
            raise ValueError(
                f"label_overrides[{split!r}] names sample {i}, but the {split} split has "
                f"{len(y)} samples: the corrections were made on another data file."
            )
        y[i, 0] = label
    return y


def load_data(cfg: TrainConfig, root: str | os.PathLike | None = None) -> SplitData:
    """The three splits of ``cfg.dataset`` at ``cfg.size``, converted for ``cfg.model``;
    ``cfg.label_overrides`` replace train/val labels (never test ones: TrainConfig refuses)."""
    overrides = cfg.label_overrides or {}
    arrays = []
    for split in ("train", "val", "test"):
        x, y = data.load_split(cfg.dataset, split, cfg.size, root=root)
        if split in OVERRIDE_SPLITS:
            y = apply_label_overrides(y, overrides.get(split), split)
        arrays += [prepare_input(cfg.model, x), y]
    return SplitData(*arrays)


class ProgressCallback(keras.callbacks.Callback):
    """Calls ``fn(dict)`` at the end of every epoch (and ``fn`` with ``batch`` keys if asked)."""

    def __init__(self, fn: Callable[[dict[str, Any]], None], epochs: int | None = None):
        super().__init__()
        self.fn = fn
        self.epochs = epochs

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        logs = dict(logs or {})
        self.fn(
            {
                "epoch": epoch + 1,
                "epochs": self.epochs or self.params.get("epochs"),
                **{k: float(v) for k, v in logs.items() if np.isscalar(v)},
            }
        )


class CancelCallback(keras.callbacks.Callback):
    """Stops training as soon as ``should_cancel()`` is true (checked every few batches)."""

    def __init__(self, should_cancel: Callable[[], bool], every_n_batches: int = 5):
        super().__init__()
        self.should_cancel = should_cancel
        self.every = every_n_batches
        self.cancelled = False

    def _check(self) -> None:
        if not self.cancelled and self.should_cancel():
            self.cancelled = True
            self.model.stop_training = True

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        if batch % self.every == 0:
            self._check()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._check()


class WeightAverage(keras.callbacks.Callback):
    """Exponential moving average of the trainable weights, updated after every training step.

    The momentum warms up as ``min(momentum, (1 + step) / (10 + step))`` (as TensorFlow's
    ``ExponentialMovingAverage`` with ``num_updates``), so the freshly initialised head does not
    linger in the average. Non-trainable state (BatchNorm statistics, frozen layers) is shared.
    """

    def __init__(self, momentum: float):
        super().__init__()
        if not 0 < momentum < 1:
            raise ValueError(f"momentum must be in (0, 1), got {momentum}")
        self.momentum = momentum
        self._vars: list[tf.Variable] = []
        self._shadow: list[tf.Variable] = []

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self._vars = list(self.model.trainable_variables)
        with self.model.distribute_strategy.scope():
            self._shadow = [tf.Variable(v, trainable=False) for v in self._vars]
            self._step = tf.Variable(0.0, trainable=False)
        self._update = tf.function(self._update_average)

    def _update_average(self) -> None:
        self._step.assign_add(1.0)
        decay = tf.minimum(self.momentum, (1.0 + self._step) / (10.0 + self._step))
        for shadow, var in zip(self._shadow, self._vars, strict=True):
            shadow.assign(decay * shadow + (1.0 - decay) * var)

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        self._update()

    @contextlib.contextmanager
    def applied(self) -> Iterator[None]:
        """Swap the averaged weights into the model for the duration of the block."""
        raw = [v.numpy() for v in self._vars]
        for var, shadow in zip(self._vars, self._shadow, strict=True):
            var.assign(shadow)
        try:
            yield
        finally:
            for var, value in zip(self._vars, raw, strict=True):
                var.assign(value)


class ValidationMonitor(keras.callbacks.Callback):
    """Official val AUC/ACC per epoch, best weights kept in memory, early stopping, LR schedule.

    Patience only counts after ``min_epochs``: a 98–120 image validation split can peak by
    chance in epoch 2 and would otherwise end training before the model learned anything.
    With an ``averager`` the averaged weights are the ones scored and kept.
    """

    def __init__(
        self,
        x_val: np.ndarray,
        y_val: np.ndarray,
        task: str,
        cfg: TrainConfig,
        checkpoint: Path | None = None,
        averager: WeightAverage | None = None,
    ):
        super().__init__()
        self.x_val, self.y_val, self.task, self.cfg = x_val, y_val, task, cfg
        self.checkpoint = checkpoint
        self.averager = averager
        self.best_auc = -math.inf
        self.best_epoch = 0
        self.best_weights: list[np.ndarray] | None = None
        self.best_val: dict[str, float] = {}
        self.wait = 0
        self.plateau_wait = 0
        self.history: dict[str, list[float]] = {"val_auc": [], "val_acc": [], "lr": []}

    def _set_lr(self, value: float) -> None:
        self.model.optimizer.learning_rate.assign(value)

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if self.cfg.lr_schedule == "cosine":
            progress = epoch / max(1, self.cfg.epochs)
            self._set_lr(self.cfg.learning_rate * 0.5 * (1 + math.cos(math.pi * progress)))

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if self.averager is None:
            self._score_epoch(epoch, logs)
        else:
            with self.averager.applied():
                self._score_epoch(epoch, logs)

    def _score_epoch(self, epoch: int, logs: dict[str, Any] | None) -> None:
        logs = logs if logs is not None else {}
        scores = evaluation.predict(self.model, self.x_val)
        if not np.all(np.isfinite(scores)):  # diverged: let train() report it, not the metric
            self.model.stop_training = True
            return
        metrics = evaluation.evaluate(self.y_val, scores, self.task)
        lr = float(keras.backend.get_value(self.model.optimizer.learning_rate))
        logs.update(val_auc=metrics["auc"], val_acc=metrics["acc"], lr=lr)
        self.history["val_auc"].append(metrics["auc"])
        self.history["val_acc"].append(metrics["acc"])
        self.history["lr"].append(lr)
        if metrics["auc"] > self.best_auc + 1e-6:
            self.best_auc, self.best_epoch, self.best_val = metrics["auc"], epoch + 1, metrics
            self.best_weights = self.model.get_weights()
            self.wait = self.plateau_wait = 0
            if self.checkpoint is not None:
                self.model.save_weights(self.checkpoint)
            return
        self.plateau_wait += 1
        if epoch + 1 > self.cfg.min_epochs:
            self.wait += 1
        if self.cfg.lr_schedule == "plateau" and self.plateau_wait >= max(
            2, self.cfg.patience // 2
        ):
            self._set_lr(max(lr * 0.5, 1e-6))
            self.plateau_wait = 0
        if self.wait >= self.cfg.patience:
            self.model.stop_training = True


def _class_weights(y: np.ndarray, task: str) -> dict[int, float] | None:
    if task == evaluation.MULTI_LABEL:
        return None
    counts = np.bincount(y.ravel())
    weights = len(y) / (len(counts) * np.maximum(counts, 1))
    return {i: float(w) for i, w in enumerate(weights)}


def train(
    cfg: TrainConfig,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    strategy: tf.distribute.Strategy | None = None,
    split_data: SplitData | None = None,
    checkpoint: Path | None = None,
    verbose: int = 0,
) -> TrainResult:
    """Train a model for ``cfg``; return it with the best validation-AUC weights restored.

    Raises:
        TrainingCancelled: a ``CancelCallback`` fired.
        TrainingDiverged: the loss became NaN or inf.
        ValueError: invalid config or non-finite input data.
    """
    cfg.validate()
    keras.utils.set_random_seed(cfg.seed)
    split_data = split_data or load_data(cfg)
    for name in ("x_train", "x_val"):
        if not np.all(np.isfinite(getattr(split_data, name))):
            raise ValueError(f"{name} contains NaN or inf; refusing to train on it")
    task = info.task(cfg.dataset)
    strategy = strategy or tf.distribute.get_strategy()
    with strategy.scope():
        kwargs: dict[str, Any] = {}
        if cfg.model == "vgg16":
            kwargs = {
                "input_size": cfg.effective_input_size,
                "fine_tune_blocks": cfg.fine_tune_blocks,
            }
        model = build_model(
            cfg.model, split_data.x_train.shape[1:], info.num_classes(cfg.dataset), task, **kwargs
        )
        compile_model(model, task, cfg.learning_rate, cfg.label_smoothing)
    train_ds = data.make_dataset(
        split_data.x_train,
        split_data.y_train,
        cfg.batch_size,
        shuffle=True,
        augment=cfg.augment,
        seed=cfg.seed,
    )
    averager = WeightAverage(cfg.weight_ema) if cfg.weight_ema else None
    monitor = ValidationMonitor(split_data.x_val, split_data.y_val, task, cfg, checkpoint, averager)
    nan_guard = keras.callbacks.TerminateOnNaN()
    cancel = [c for c in callbacks if isinstance(c, CancelCallback)]
    start = time.perf_counter()
    hist = model.fit(
        train_ds,
        epochs=cfg.epochs,
        verbose=verbose,
        callbacks=[*([averager] if averager else []), monitor, nan_guard, *callbacks],
        class_weight=_class_weights(split_data.y_train, task) if cfg.class_weights else None,
    )
    wall = time.perf_counter() - start
    if any(c.cancelled for c in cancel):
        raise TrainingCancelled("training was cancelled; nothing was saved")
    losses = hist.history.get("loss", [])
    if (losses and not np.isfinite(losses[-1])) or monitor.best_weights is None:
        raise TrainingDiverged(
            "the loss became NaN/inf; lower the learning rate. Nothing was saved."
        )
    model.set_weights(monitor.best_weights)
    history = {"loss": [float(v) for v in losses], **monitor.history}
    return TrainResult(model, history, monitor.best_epoch, len(losses), wall, monitor.best_val)


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in ("tensorflow", "tf-keras", "numpy", "medmnist", "scikit-learn"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def run(
    cfg: TrainConfig,
    output_root: str | os.PathLike | None = None,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    strategy: tf.distribute.Strategy | None = None,
    data_root: str | os.PathLike | None = None,
    verbose: int = 0,
) -> Path:
    """Train, evaluate on val and (once) on test, and save the run atomically.

    Returns:
        The run directory in the registry.
    """
    cfg.validate()
    split_data = load_data(cfg, root=data_root)
    result = train(cfg, callbacks, strategy, split_data, verbose=verbose)
    lean = cfg.model == "vgg16"
    if lean:
        model_io.round_trained_to_float16(result.model)
    task = info.task(cfg.dataset)
    labels = info.label_names(cfg.dataset)
    val_scores = evaluation.predict(result.model, split_data.x_val)
    val = evaluation.evaluate(split_data.y_val, val_scores, task)
    test_scores = evaluation.predict(result.model, split_data.x_test)
    test = evaluation.evaluate(split_data.y_test, test_scores, task)
    evaluation_report = evaluation.report(split_data.y_test, test_scores, task, labels)
    # kappa, referable disease, per-class sensitivity/specificity; thresholds chosen on val
    evaluation_report["clinical"] = clinical.clinical_report(
        split_data.y_test, test_scores, task, labels, cfg.dataset, split_data.y_val, val_scores
    )
    path = data.file_path(cfg.dataset, cfg.size, data_root)
    config_dict = {
        **cfg.to_dict(),
        "task": task,
        "labels": labels,
        "input_shape": list(split_data.x_train.shape[1:]),
        "dataset_file": path.name,
        "strategy": strategy_name(strategy),
    }
    name = cfg.name or registry.default_run_name(config_dict)
    metrics = {
        "val": val,
        "test": test,
        "seed": cfg.seed,
        "epochs_run": result.epochs_run,
        "best_epoch": result.best_epoch,
        "wall_time_s": round(result.wall_time_s, 2),
        "s_per_epoch": round(result.wall_time_s / max(1, result.epochs_run), 3),
        "params": int(result.model.count_params()),
        "trainable_params": int(sum(np.prod(w.shape) for w in result.model.trainable_weights)),
        "versions": _versions(),
        "data_md5": data.md5sum(path),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "seeds": [{"seed": cfg.seed, "val": val, "test": test, "run": name}],
    }
    return registry.save_run(
        result.model,
        config_dict,
        result.history,
        metrics,
        evaluation_report,
        root=output_root,
        name=name,
        lean=lean,
    )


def dumps(obj: Any) -> str:
    return json.dumps(obj, indent=2, sort_keys=True)
