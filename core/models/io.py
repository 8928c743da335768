"""A run's Keras model on disk: save without optimizer, load in safe mode, lean VGG16 weights.

The registry (:mod:`core.registry`) owns the run directory, its file names and its error
messages; it calls these functions (with an import inside ``load_model``/``save_run``, so
listing runs never imports TensorFlow). This module must not import ``core.registry``: that
would close an import cycle. Errors are the libraries' own; the registry wraps them in
``RunFileError`` messages that name the file.

Example::

    from core.models import io

    io.save_model(model, run_dir / "model.keras")
    model = io.load_model_file(run_dir / "model.keras")
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import tf_keras as keras

from core import config, info
from core.models import CUSTOM_OBJECTS, build_model, input_shape_for

# --- Keras model files (core.registry) ----------------------------------------------------------


def save_model(model: keras.Model, path: Path) -> None:
    """Save architecture + weights only: Adam's two moment copies would triple the file."""
    with keras.utils.custom_object_scope(CUSTOM_OBJECTS):
        clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    clone.save(path)


def load_model_file(path: Path) -> keras.Model:
    """A ``.keras`` file in Keras safe mode (no arbitrary code is deserialised), uncompiled.

    Raises:
        Exception: whatever h5py, zipfile or Keras raise for a damaged file.
    """
    return keras.models.load_model(
        path, custom_objects=CUSTOM_OBJECTS, compile=False, safe_mode=True
    )


def trained_layer_names(model: keras.Model) -> list[str]:
    """Layers whose weights are not the ImageNet VGG16 ones (trainable blocks, head, BN)."""
    names = []
    for layer in model.layers:
        if not layer.weights or layer.name == "caffe_preprocess":
            continue
        if layer.name.startswith("block") and not layer.trainable:
            continue
        names.append(layer.name)
    return names


def _half(w: np.ndarray) -> np.ndarray:
    """``w`` as float16, or unchanged where float16 cannot hold it (|w| > 65504 → inf).

    On one seed a fine-tuned VGG16's head BatchNorm moving variance exceeded float16's 65504; as
    float16 it became inf and silenced that channel.
    """
    with np.errstate(over="ignore"):
        half = w.astype(np.float16)
    return half if np.all(np.isfinite(half) == np.isfinite(w)) else w


def round_trained_to_float16(model: keras.Model) -> None:
    """Round the trained layers' weights to float16 in place.

    Lean runs store these weights as float16 (half the bytes: a fine-tuned VGG16 block is 7M
    parameters). Rounding *before* evaluation makes the reported metrics those of the exact
    model that ships and reloads.
    """
    for lname in trained_layer_names(model):
        layer = model.get_layer(lname)
        layer.set_weights([_half(w).astype(w.dtype) for w in layer.get_weights()])


def save_lean_weights(model: keras.Model, path: Path) -> None:
    """Only the trained layers' weights (float16 where it holds them), npz format."""
    arrays = {}
    for lname in trained_layer_names(model):
        for i, w in enumerate(model.get_layer(lname).get_weights()):
            arrays[f"{lname}/{i}"] = _half(w)
    with path.open("wb") as fh:
        np.savez(fh, **arrays)


def build_lean(cfg: dict[str, Any]) -> keras.Model:
    """The VGG16 a lean run was trained as, with ImageNet weights (``config.json`` as a dict).

    Raises:
        FileNotFoundError: ``VGG16_WEIGHTS`` names a missing file (not the run's fault).
    """
    return build_model(
        "vgg16",
        input_shape_for("vgg16", cfg["dataset"], cfg.get("size", 28)),
        info.num_classes(cfg["dataset"]),
        info.task(cfg["dataset"]),
        input_size=config.TrainConfig.from_dict(cfg).effective_input_size,
        fine_tune_blocks=cfg.get("fine_tune_blocks", 0),
    )


def load_lean_weights(model: keras.Model, path: Path) -> keras.Model:
    """Put a lean run's trained-layer weights (see :func:`save_lean_weights`) into ``model``.

    Raises:
        Exception: zip, npz, key and shape errors of a damaged file.
    """
    with np.load(path, allow_pickle=False) as npz:
        grouped: dict[str, dict[int, Any]] = {}
        for key in npz.files:
            lname, idx = key.rsplit("/", 1)
            grouped.setdefault(lname, {})[int(idx)] = npz[key]
    for lname, weights in grouped.items():
        model.get_layer(lname).set_weights([weights[i].astype(np.float32) for i in sorted(weights)])
    return model


# --- end of core.registry's Keras file functions ------------------------------------------------
