"""A registered run, loaded for scoring: its config, Keras model and one model-ready split.

The sequence every "score a trained run" command repeats (resolve the run, read its config,
load the model, load a data split, convert it for the model family) lives here once. It is not
in :mod:`core.models.io`, which the registry itself calls: that module must not import the
registry (an import cycle).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from core import data, registry
from core.models import prepare_input


def load_run_for_eval(
    run_dir: str | os.PathLike,
    split: str,
    data_root: str | os.PathLike | None = None,
    *,
    prepare: bool = True,
) -> tuple[dict[str, Any], Any, np.ndarray, np.ndarray]:
    """Load a run's config, model and one data split, ready to run the model on.

    The model is loaded before the split: a damaged model file fails in a second, not after a
    64³ split has been read.

    Args:
        run_dir: Run name in the registry or path of a run directory (a path outside the
            registry is accepted, as the CLIs do).
        split: ``"train"``, ``"val"`` or ``"test"``.
        data_root: MedMNIST folder (default: the ``MEDMNIST_ROOT`` setting).
        prepare: Convert the images for the model family (:func:`core.models.prepare_input`,
            VGG16: grey to RGB); ``False`` returns them as :func:`core.data.load_split` does.

    Returns:
        ``(config, model, x, y)``: ``config.json`` as a dict, the Keras model, the split's
        images ``(N, *spatial, C)`` float32 and labels ``(N, L)`` int64.

    Raises:
        core.registry.RegistryError: No run there, or no config or model file.
        core.registry.RunFileError: A damaged ``config.json`` or model file (named).
        core.data.DataError: The dataset file is missing or altered.

    Example::

        cfg, model, x, y = load_run_for_eval("cnn2d_aug", "test")
        probs = model.predict(x)
    """
    run = registry.resolve_run(run_dir, allow_outside=True)
    # read_config raises a RegistryError/RunFileError naming a missing, non-JSON or incomplete
    # config.json; the raw dict is returned because it also holds the run's derived fields
    registry.read_config(run, validate=False)
    cfg = registry.read_json(run, "config.json")
    model = registry.load_model(run, allow_outside=True)
    x, y = data.load_split(cfg["dataset"], split, int(cfg.get("size", 28)), root=data_root)
    if prepare:
        x = prepare_input(cfg["model"], x)
    return cfg, model, x, y
