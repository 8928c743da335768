"""The Retrain form as data: one entry per ``TrainConfig`` field a researcher may set there.

The page (``app.retrain_ui.retrain_form_ui``) draws one widget per :data:`FORM_FIELDS` entry,
in order, and returns their values; :func:`core.jobs.params.check_params` validates them with
the limits of :data:`core.jobs.params.UI_LIMITS`, which the help texts below quote. So a new
``TrainConfig`` field reaches the form by one entry here (or one line in :data:`NOT_IN_FORM`
saying why not); a test fails until it is in one of the two.

No streamlit and no TensorFlow here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from core.jobs.params import UI_LIMITS

# MedMNIST's file sizes (the form lists them all; check_params refuses one a dataset lacks)
SIZES: tuple[int, ...] = (28, 64, 128, 224)


@dataclass(frozen=True)
class FormField:
    """One widget of the Retrain form.

    Attributes:
        name: the ``TrainConfig`` field it sets.
        label: the widget's label.
        widget: ``"select"`` (options given by the page), ``"int"``, ``"float"``, ``"text"``
            (a number typed as text, e.g. ``1e-3``) or ``"check"``.
        default: the value the form opens with.
        help: the tooltip; limits are quoted from ``UI_LIMITS``.
        key: the Streamlit widget key (stable: tests and saved sessions use it).
        step: step of a number input.
        format: printf format of a float input.
    """

    name: str
    label: str
    widget: str
    default: Any
    help: str
    key: str
    step: float | None = None
    format: str | None = None


def _range(name: str, unit: str = "") -> str:
    lo, hi = UI_LIMITS[name]
    text = f"{lo:g} to {hi:g}" if name == "learning_rate" else f"{int(lo)} to {int(hi):,}"
    return f"{text}{unit}"


FORM_FIELDS: tuple[FormField, ...] = (
    FormField(
        "dataset",
        "Dataset",
        "select",
        None,
        "MedMNIST flag. 3D datasets need cnn3d or resnet.",
        "retrain_dataset",
    ),
    FormField(
        "model",
        "Model family",
        "select",
        None,
        "cnn2d/vgg16 for 2D images, cnn3d for volumes, resnet for both.",
        "retrain_model",
    ),
    FormField(
        "size",
        "Image size (px)",
        "select",
        28,
        "Side of the MedMNIST file used (28 is always available).",
        "retrain_size",
    ),
    FormField(
        "epochs",
        "Epochs",
        "int",
        20,
        f"{_range('epochs')}. Early stopping may end the run sooner.",
        "retrain_epochs",
        step=1,
    ),
    FormField(
        "learning_rate",
        "Learning rate",
        "text",
        "0.001",
        f"Initial Adam learning rate, {_range('learning_rate')} (e.g. 1e-3).",
        "retrain_lr",
    ),
    FormField(
        "batch_size",
        "Batch size",
        "int",
        32,
        f"{_range('batch_size', ' images per step')}.",
        "retrain_batch_size",
        step=1,
    ),
    FormField(
        "augment",
        "Augment training images",
        "check",
        False,
        "Random rotation, flips and scaling of the training split only.",
        "retrain_augment",
    ),
    FormField(
        "fine_tune_blocks",
        "VGG16 fine-tuned blocks",
        "int",
        0,
        "VGG16 only: 0 keeps the ImageNet features frozen; "
        f"{_range('fine_tune_blocks').replace('0 to', '1 to')} also trains the last blocks.",
        "retrain_fine_tune_blocks",
        step=1,
    ),
    FormField(
        "weight_ema",
        "Weight averaging (EMA momentum)",
        "float",
        0.0,
        "0 = off. E.g. 0.99: validation, early stopping and the saved model use a moving "
        "average of the weights (about the last 100 steps), which smooths epoch-to-epoch swings.",
        "retrain_weight_ema",
        step=0.01,
        format="%.3f",
    ),
    FormField(
        "label_smoothing",
        "Label smoothing",
        "float",
        0.0,
        "0 = off; 0 to 0.99, e.g. 0.1. Single-label datasets only.",
        "retrain_label_smoothing",
        step=0.05,
        format="%.2f",
    ),
    FormField(
        "seed",
        "Seed",
        "int",
        0,
        f"{_range('seed')}; the same seed repeats the same run.",
        "retrain_seed",
        step=1,
    ),
)

# TrainConfig fields the form leaves at their defaults, and why (CLI users can set them all).
NOT_IN_FORM: dict[str, str] = {
    "patience": "early stopping keeps TrainConfig's default patience",
    "min_epochs": "only needed for tiny validation splits",
    "lr_schedule": "the plateau schedule every reference arm but one uses",
    "class_weights": "off, as in the reference runs",
    "input_size": "VGG16 keeps its 32 px default",
    "name": "generated from dataset, model and time; a name is an API/CLI option",
    "label_overrides": "set from reviewers' corrections by the Case review page's retrain button",
}
