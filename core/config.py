"""Settings (environment variables with working defaults) and validated run configurations.

Imports nothing from ``core`` but :mod:`core.info` (dataset facts), so every other module can
import it: the registry, the models, the data loader and the job queue all read settings here.
"""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core import info

REPO_ROOT = Path(__file__).resolve().parents[1]

MODEL_FAMILIES: tuple[str, ...] = ("cnn3d", "cnn2d", "vgg16", "resnet")
LR_SCHEDULES: tuple[str, ...] = ("plateau", "cosine", "constant")
VGG16_BLOCKS = 5


def medmnist_root() -> Path:
    """Folder holding the MedMNIST ``.npz`` files (``MEDMNIST_ROOT``, default ``~/.medmnist``)."""
    return Path(os.environ.get("MEDMNIST_ROOT") or Path.home() / ".medmnist").expanduser()


def vgg16_weights() -> str:
    """ImageNet VGG16 no-top weights: a local file from ``VGG16_WEIGHTS`` or ``"imagenet"``.

    Raises:
        FileNotFoundError: ``VGG16_WEIGHTS`` names a file that does not exist.
    """
    value = os.environ.get("VGG16_WEIGHTS", "").strip()
    if not value or value == "imagenet":
        return "imagenet"
    path = Path(value).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"VGG16_WEIGHTS points to {path}, which does not exist.\n"
            "  1. Download vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5 "
            "(Keras applications).\n"
            "  2. Set VGG16_WEIGHTS to its full path, or unset VGG16_WEIGHTS to let Keras "
            "download it."
        )
    return str(path)


def trained_models_dir() -> Path:
    """The model registry (``TRAINED_MODELS_DIR``, default ``<repo>/trained_models``)."""
    value = os.environ.get("TRAINED_MODELS_DIR")
    return Path(value).expanduser() if value else REPO_ROOT / "trained_models"


def jobs_db() -> Path:
    """SQLite file of the training job queue (``JOBS_DB``, default ``<repo>/var/jobs.sqlite``)."""
    value = os.environ.get("JOBS_DB")
    return Path(value).expanduser() if value else REPO_ROOT / "var" / "jobs.sqlite"


def reviews_db() -> Path:
    """SQLite file of the case reviews (``REVIEWS_DB``, default ``<repo>/var/reviews.sqlite``)."""
    value = os.environ.get("REVIEWS_DB")
    return Path(value).expanduser() if value else REPO_ROOT / "var" / "reviews.sqlite"


_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def validate_run_name(name: str) -> str:
    """A run name is one path component of letters, digits, ``.``, ``_`` and ``-``.

    Lives here, not in the registry, because ``TrainConfig.name`` is checked with it and the
    registry imports this module.

    Raises:
        ValueError: anything else (slashes, ``..``, control characters, empty).
    """
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name) or name in (".", ".."):
        raise ValueError(
            f"invalid run name {name!r}: use 1-128 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return name


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check(condition: bool, field: str, value: Any, expected: str) -> None:
    if not condition:
        raise ValueError(f"{field}={value!r} is invalid: expected {expected}.")


# Splits whose labels a run may override (reviewers' corrections). Never "test": a model
# trained on corrected test labels would be scored on the answers it was taught.
OVERRIDE_SPLITS: tuple[str, ...] = ("train", "val")


def check_label_overrides(value: Any, dataset: str) -> None:
    """Check ``TrainConfig.label_overrides``: ``{"train"|"val": {"index": label}, "review_ids":
    [row ids]}`` (indices as text, as JSON stores them; the labels the trainer uses instead).

    Raises:
        ValueError: not a mapping, a ``test`` entry, an unknown key, a bad index or label, a
            multi-label dataset, or review ids that are not positive integers.
    """
    if value is None:
        return
    if not isinstance(value, dict):
        raise ValueError(f"label_overrides must be a mapping or None, got {type(value).__name__}")
    if "test" in value:
        raise ValueError(
            "label_overrides: test-split labels are never trained on (the test split measures "
            "the model); use corrections on the train or val split only."
        )
    unknown = set(value) - {*OVERRIDE_SPLITS, "review_ids"}
    if unknown:
        raise ValueError(f"label_overrides: unknown keys {sorted(unknown)}")
    if info.is_multilabel(dataset):
        raise ValueError("label_overrides applies to single-label tasks only.")
    classes = info.num_classes(dataset)
    for split in OVERRIDE_SPLITS:
        entries = value.get(split) or {}
        if not isinstance(entries, dict):
            raise ValueError(f"label_overrides[{split!r}] must map sample indices to labels")
        for index, label in entries.items():
            if not str(index).isdigit():
                raise ValueError(f"label_overrides[{split!r}]: index {index!r} is not a number")
            if not (_is_int(label) and 0 <= label < classes):
                raise ValueError(
                    f"label_overrides[{split!r}][{index!r}]={label!r}: expected a class "
                    f"in 0..{classes - 1}"
                )
    ids = value.get("review_ids", [])
    if not isinstance(ids, list) or not all(_is_int(i) and i > 0 for i in ids):
        raise ValueError("label_overrides['review_ids'] must be a list of positive integers")


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines one training run. Serialised into the run's ``config.json``.

    Attributes:
        dataset: MedMNIST flag, e.g. ``"retinamnist"`` or ``"adrenalmnist3d"``.
        model: model family, one of ``MODEL_FAMILIES``.
        size: image size of the data file (28, 64, 128, 224 for 2D; 28, 64 for 3D).
        epochs: maximum number of epochs (early stopping may end earlier).
        batch_size: mini-batch size.
        learning_rate: initial learning rate of Adam.
        augment: augment the training split (never val/test).
        fine_tune_blocks: VGG16 only: how many of the last conv blocks train (0 = frozen).
        seed: seeds Python, NumPy, TensorFlow, shuffling and augmentation.
        patience: epochs without a val-AUC improvement before stopping.
        min_epochs: patience counts only after this many epochs (tiny val splits are noisy).
        lr_schedule: ``"plateau"`` (halve on val-AUC plateau), ``"cosine"`` or ``"constant"``.
        class_weights: weight the loss by inverse class frequency (single-label tasks).
        input_size: VGG16 only: side the images are resized to in-graph (default 32).
        label_smoothing: single-label tasks: mix ``label_smoothing / classes`` into every
            one-hot target (0 = plain cross-entropy).
        weight_ema: momentum of an exponential moving average of the trainable weights, updated
            every step; validation, early stopping and the saved model use the averaged
            weights (0 = off).
        name: run-directory name; generated when None.
        label_overrides: labels used instead of the dataset's for some train/val samples, and
            the review rows they came from (:func:`check_label_overrides`); None = none.
            Set by the Case review page's retraining button (``core.reviews.retrain``).
    """

    dataset: str
    model: str
    size: int = 28
    epochs: int = 50
    batch_size: int = 32
    learning_rate: float = 1e-3
    augment: bool = False
    fine_tune_blocks: int = 0
    seed: int = 0
    patience: int = 10
    min_epochs: int = 0
    lr_schedule: str = "plateau"
    class_weights: bool = False
    input_size: int | None = None
    label_smoothing: float = 0.0
    weight_ema: float = 0.0
    name: str | None = None
    # a dict: left out of the hash (a frozen dataclass hashes its fields), kept in equality
    label_overrides: dict[str, Any] | None = dataclasses.field(default=None, hash=False)

    def validate(self) -> TrainConfig:
        """Check every field; return self so calls chain.

        Raises:
            ValueError: naming the first invalid field and the value received.
        """
        info.dataset_info(self.dataset)  # raises with the list of flags
        _check(self.model in MODEL_FAMILIES, "model", self.model, f"one of {MODEL_FAMILIES}")
        _check(
            self.size in info.sizes(self.dataset),
            "size",
            self.size,
            f"one of {info.sizes(self.dataset)} for {self.dataset}",
        )
        mismatch = info.model_mismatch(self.model, self.dataset)
        if mismatch:
            raise ValueError(mismatch)
        _check(
            _is_int(self.epochs) and 1 <= self.epochs <= 1000,
            "epochs",
            self.epochs,
            "an integer in 1..1000",
        )
        _check(
            _is_int(self.batch_size) and 1 <= self.batch_size <= 4096,
            "batch_size",
            self.batch_size,
            "an integer in 1..4096",
        )
        _check(
            not isinstance(self.learning_rate, bool)
            and isinstance(self.learning_rate, int | float)
            and 0 < self.learning_rate <= 1,
            "learning_rate",
            self.learning_rate,
            "a number in (0, 1]",
        )
        _check(
            _is_int(self.fine_tune_blocks) and 0 <= self.fine_tune_blocks <= VGG16_BLOCKS,
            "fine_tune_blocks",
            self.fine_tune_blocks,
            f"an integer in 0..{VGG16_BLOCKS}",
        )
        if self.fine_tune_blocks and self.model != "vgg16":
            raise ValueError("fine_tune_blocks only applies to model='vgg16'.")
        _check(
            _is_int(self.seed) and 0 <= self.seed < 2**31,
            "seed",
            self.seed,
            "an integer in 0..2**31-1",
        )
        _check(
            _is_int(self.patience) and self.patience >= 1,
            "patience",
            self.patience,
            "an integer >= 1",
        )
        _check(
            _is_int(self.min_epochs) and self.min_epochs >= 0,
            "min_epochs",
            self.min_epochs,
            "an integer >= 0",
        )
        _check(
            self.lr_schedule in LR_SCHEDULES,
            "lr_schedule",
            self.lr_schedule,
            f"one of {LR_SCHEDULES}",
        )
        if self.input_size is not None:
            _check(
                self.model == "vgg16" and _is_int(self.input_size) and 32 <= self.input_size <= 224,
                "input_size",
                self.input_size,
                "an integer in 32..224, for model='vgg16' only",
            )
        for field_name in ("label_smoothing", "weight_ema"):
            value = getattr(self, field_name)
            _check(
                not isinstance(value, bool) and isinstance(value, int | float) and 0 <= value < 1,
                field_name,
                value,
                "a number in [0, 1)",
            )
        if self.label_smoothing and info.is_multilabel(self.dataset):
            raise ValueError("label_smoothing applies to single-label tasks only.")
        if self.name is not None:
            validate_run_name(self.name)
        check_label_overrides(self.label_overrides, self.dataset)
        return self

    @property
    def effective_input_size(self) -> int | None:
        """Side of the VGG16 input (VGG16 needs at least 32 px), None for other families."""
        if self.model != "vgg16":
            return None
        return self.input_size or max(32, self.size)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Build from a dict, ignoring keys that are not config fields (run metadata)."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown_required = {"dataset", "model"} - set(data)
        if unknown_required:
            raise ValueError(f"config is missing {sorted(unknown_required)}")
        return cls(**{k: v for k, v in data.items() if k in names})

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)
