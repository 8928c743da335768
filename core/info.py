"""Dataset facts, taken only from ``medmnist.INFO``, plus the published benchmark table.

``medmnist/__init__.py`` imports its torch-based dataset classes (and prints a warning when torch
is missing), and its evaluator pulls in pandas and scikit-learn. The app's Home page only needs
INFO, so ``info.py`` is loaded straight from its file: no torch, no sklearn, no TensorFlow.
"""

from __future__ import annotations

import importlib.util
import sys
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

SPLITS: tuple[str, ...] = ("train", "val", "test")
SIZES_2D: tuple[int, ...] = (28, 64, 128, 224)
SIZES_3D: tuple[int, ...] = (28, 64)

# The task string medmnist's INFO gives multi-label datasets (ChestMNIST): one sigmoid per label.
MULTI_LABEL = "multi-label, binary-class"
TASKS: tuple[str, ...] = ("binary-class", "multi-class", "ordinal-regression", MULTI_LABEL)

# Which model families train on 2D and on 3D datasets. The only copy of this rule: TrainConfig
# and the job form both ask model_mismatch().
MODELS_2D: frozenset[str] = frozenset({"cnn2d", "vgg16", "resnet"})
MODELS_3D: frozenset[str] = frozenset({"cnn3d", "resnet"})

# What the voxels of each 3D dataset are (DESIGN.md §3). Shape-mask datasets are binary voxel
# masks (0/255), not CT intensities: no window/level applies to them. CT datasets are grey levels
# that MedMNIST already mapped from Hounsfield units to 0-255 (the mapping is not in the files).
VOLUME_CT = "ct"
VOLUME_MASK = "mask"
VOLUME_MICROSCOPY = "microscopy"
_VOLUME_KIND = {
    "organmnist3d": VOLUME_CT,
    "nodulemnist3d": VOLUME_CT,
    "fracturemnist3d": VOLUME_CT,
    "adrenalmnist3d": VOLUME_MASK,
    "vesselmnist3d": VOLUME_MASK,
    "synapsemnist3d": VOLUME_MICROSCOPY,
}


def _load_medmnist_module(name: str) -> ModuleType:
    """Import ``medmnist.<name>`` from its file without running ``medmnist/__init__.py``."""
    full = f"medmnist.{name}"
    if full in sys.modules:
        return sys.modules[full]
    package = sys.modules.get("medmnist")
    spec = getattr(package, "__spec__", None) or importlib.util.find_spec("medmnist")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            "medmnist is not installed.\n"
            "  1. Run `make setup` (or `pip install --no-deps medmnist==3.0.2`)."
        )
    if package is None:
        # A bare package object so that `from medmnist.info import INFO` inside medmnist's own
        # modules resolves without executing medmnist/__init__.py (which wants torch).
        package = ModuleType("medmnist")
        package.__spec__ = spec
        package.__path__ = list(spec.submodule_search_locations)
        sys.modules["medmnist"] = package
    path = Path(list(spec.submodule_search_locations)[0]) / f"{name}.py"
    module_spec = importlib.util.spec_from_file_location(full, path)
    module = importlib.util.module_from_spec(module_spec)
    assert module_spec.loader is not None
    sys.modules[full] = module
    module_spec.loader.exec_module(module)
    return module


INFO: dict[str, dict[str, Any]] = _load_medmnist_module("info").INFO
FLAGS: tuple[str, ...] = tuple(INFO)

# MedMNIST v2 (Sci Data 2023) test AUC/ACC and MedMNIST+ VGG16 (DESIGN.md §4). Data, not prose:
# pages and reports read it from here.
PUBLISHED: dict[str, list[dict[str, Any]]] = {
    "retinamnist": [
        {"method": "ResNet-18 (28)", "auc": 0.717, "acc": 0.524},
        {"method": "ResNet-50 (28)", "auc": 0.726, "acc": 0.528},
        {"method": "auto-sklearn", "auc": 0.690, "acc": 0.515},
        {"method": "AutoKeras", "auc": 0.719, "acc": 0.503},
        {"method": "Google AutoML Vision", "auc": 0.750, "acc": 0.531},
        {"method": "MedMNIST+ VGG16 (28, padded to 224)", "auc": 0.7535, "acc": 0.5417},
    ],
    "chestmnist": [
        {"method": "ResNet-18 (28)", "auc": 0.768, "acc": 0.947},
        {"method": "ResNet-50 (28)", "auc": 0.769, "acc": 0.947},
        {"method": "auto-sklearn", "auc": 0.649, "acc": 0.779},
        {"method": "AutoKeras", "auc": 0.742, "acc": 0.937},
        {"method": "Google AutoML Vision", "auc": 0.778, "acc": 0.948},
        {"method": "MedMNIST+ VGG16 (28, padded to 224)", "auc": 0.7616, "acc": 0.9479},
    ],
    "adrenalmnist3d": [
        {"method": "ResNet-18 + 3D", "auc": 0.827, "acc": 0.721},
        {"method": "ResNet-50 + 3D", "auc": 0.828, "acc": 0.745},
        {"method": "ResNet-18 + ACS", "auc": 0.839, "acc": 0.754},
        {"method": "auto-sklearn", "auc": 0.828, "acc": 0.802},
        {"method": "AutoKeras", "auc": 0.804, "acc": 0.705},
    ],
    "nodulemnist3d": [
        {"method": "ResNet-18 + 3D", "auc": 0.863, "acc": 0.844},
        {"method": "ResNet-50 + 3D", "auc": 0.875, "acc": 0.847},
        {"method": "ResNet-18 + ACS", "auc": 0.873, "acc": 0.847},
        {"method": "auto-sklearn", "auc": 0.914, "acc": 0.874},
        {"method": "AutoKeras", "auc": 0.844, "acc": 0.834},
    ],
}


def dataset_info(flag: str) -> dict[str, Any]:
    """INFO entry of a MedMNIST flag.

    Raises:
        ValueError: unknown flag (the message lists the known ones).
    """
    if flag not in INFO:
        raise ValueError(f"unknown MedMNIST dataset {flag!r}; known: {', '.join(FLAGS)}")
    return INFO[flag]


def is_3d(flag: str) -> bool:
    dataset_info(flag)
    return flag.endswith("3d")


def task(flag: str) -> str:
    return dataset_info(flag)["task"]


def is_multilabel(flag: str) -> bool:
    return task(flag) == MULTI_LABEL


def models_for(flag: str) -> tuple[str, ...]:
    """The model families that can train on a dataset, sorted by name."""
    return tuple(sorted(MODELS_3D if is_3d(flag) else MODELS_2D))


def model_mismatch(model: str, flag: str) -> str | None:
    """Why a model family cannot train on a dataset (2D model, 3D data or back), or None.

    Args:
        model: a model family (``core.config.MODEL_FAMILIES``).
        flag: a MedMNIST flag.

    Returns:
        None when they fit; else one sentence naming both and the families that fit.

    Raises:
        ValueError: unknown flag.
    """
    if model in models_for(flag):
        return None
    choose = f"choose one of {', '.join(models_for(flag))}"
    if is_3d(flag):
        return f"model {model!r} is 2D and cannot train on the 3D dataset {flag!r}; {choose}"
    return f"model {model!r} needs a 3D dataset; {flag!r} is 2D; {choose}"


# INFO names RetinaMNIST's classes "0".."4": they are the grades of the international diabetic
# retinopathy scale (DeepDRiD), which a clinician reads by name. Every page and report takes
# class names from label_names(), so they are named once, here.
_DISPLAY_NAMES: dict[str, tuple[str, ...]] = {
    "retinamnist": ("No DR", "Mild", "Moderate", "Severe NPDR", "Proliferative DR"),
}


def label_names(flag: str) -> list[str]:
    """Class (or label) names ordered by index: INFO's, or the clinical names where INFO gives
    bare numbers (RetinaMNIST: the diabetic retinopathy grades)."""
    labels = dataset_info(flag)["label"]
    names = [labels[str(i)] for i in range(len(labels))]
    display = _DISPLAY_NAMES.get(flag)
    return list(display) if display and len(display) == len(names) else names


def display_label(flag: str, stored: str) -> str:
    """The display name of a class name stored in an older run's files (e.g. RetinaMNIST "2"
    → "Moderate"); any other name is returned unchanged.

    Runs saved before the grades had names keep INFO's bare numbers in their ``config.json``
    and ``evaluation.json`` (labels, ROC curves, per-class rows).
    """
    labels = dataset_info(flag)["label"]
    raw = [labels[str(i)] for i in range(len(labels))]
    text = str(stored)
    return label_names(flag)[raw.index(text)] if text in raw else text


def num_classes(flag: str) -> int:
    """Output units of a model for this dataset (binary tasks use a 2-way softmax)."""
    return max(2, len(label_names(flag)))


def n_channels(flag: str) -> int:
    return int(dataset_info(flag)["n_channels"])


def n_samples(flag: str) -> dict[str, int]:
    return dict(dataset_info(flag)["n_samples"])


def sizes(flag: str) -> tuple[int, ...]:
    """Image sizes MedMNIST publishes for the flag (those with a URL in INFO)."""
    meta = dataset_info(flag)
    candidates = SIZES_3D if is_3d(flag) else SIZES_2D
    return tuple(s for s in candidates if s == 28 or meta.get(f"url_{s}"))


def _check_size(flag: str, size: int) -> None:
    if size not in sizes(flag):
        raise ValueError(f"{flag} has no size {size!r}; available: {sizes(flag)}")


def file_name(flag: str, size: int = 28) -> str:
    _check_size(flag, size)
    return f"{flag}.npz" if size == 28 else f"{flag}_{size}.npz"


def url(flag: str, size: int = 28) -> str:
    _check_size(flag, size)
    return dataset_info(flag)["url" if size == 28 else f"url_{size}"]


def expected_md5(flag: str, size: int = 28) -> str:
    _check_size(flag, size)
    return dataset_info(flag)["MD5" if size == 28 else f"MD5_{size}"]


def volume_kind(flag: str) -> str | None:
    """What a 3D dataset's voxels are: ``VOLUME_CT``, ``VOLUME_MASK`` or ``VOLUME_MICROSCOPY``.

    Args:
        flag: MedMNIST flag.

    Returns:
        The kind, or None for a 2D dataset. A 3D flag this table does not know is taken as CT
        intensity (what most MedMNIST 3D sets are), as ``modality_note`` always did.
    """
    if not is_3d(flag):
        return None
    return _VOLUME_KIND.get(flag, VOLUME_CT)


def is_ct_intensity(flag: str) -> bool:
    """True for 3D datasets of CT grey levels: the viewer offers window/level presets."""
    return volume_kind(flag) == VOLUME_CT


def modality_note(flag: str) -> str:
    """What the voxel values mean, so a clinician does not read masks as intensities."""
    kind = volume_kind(flag)
    if kind is None:
        return "2D image"
    if kind == VOLUME_MASK:
        return "binary shape mask (0/255), not CT intensity"
    if kind == VOLUME_MICROSCOPY:
        return "electron microscopy intensity"
    return "CT intensity"


# What one image of each dataset *is*, in words a clinician uses ("this does not look like a
# retinal fundus photograph"). INFO's descriptions are paragraphs; these are the nouns.
_MODALITY_NOUN = {
    "retinamnist": "a retinal fundus photograph",
    "pneumoniamnist": "a chest X-ray",
    "chestmnist": "a chest X-ray",
    "breastmnist": "a breast ultrasound image",
    "dermamnist": "a dermatoscopic skin image",
    "pathmnist": "a colon pathology slide",
    "bloodmnist": "a blood cell microscope image",
    "octmnist": "a retinal OCT scan",
    "adrenalmnist3d": "an adrenal gland shape mask from CT",
    "vesselmnist3d": "a brain vessel shape mask from MRA",
    "nodulemnist3d": "a lung nodule CT volume",
}


def modality_noun(flag: str) -> str:
    """What one image of ``flag`` is, with its article ("a retinal fundus photograph").

    Raises:
        ValueError: unknown flag.
    """
    dataset_info(flag)
    return _MODALITY_NOUN.get(flag, f"an image like the {python_class(flag)} training images")


def python_class(flag: str) -> str:
    return dataset_info(flag)["python_class"]


def best_published(flag: str) -> dict[str, tuple[float, str]] | None:
    """Best published test AUC and ACC with the method that reached each, or None."""
    rows = PUBLISHED.get(flag)
    if not rows:
        return None
    best_auc = max(rows, key=lambda r: r["auc"])
    best_acc = max(rows, key=lambda r: r["acc"])
    return {
        "auc": (best_auc["auc"], best_auc["method"]),
        "acc": (best_acc["acc"], best_acc["method"]),
    }


@cache
def evaluator_functions() -> tuple[Any, Any]:
    """medmnist's own ``getAUC``/``getACC`` (imports scikit-learn and pandas on first use)."""
    module = _load_medmnist_module("evaluator")
    return module.getAUC, module.getACC
