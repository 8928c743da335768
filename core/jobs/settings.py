"""The settings a training worker runs with, and how they differ from the app's.

A worker started by an earlier ``make run`` keeps the environment it was started with. If the
app is then restarted with, say, another ``MEDMNIST_ROOT``, the form says a dataset is "on
disk" while every job fails in the worker ("breastmnist.npz is not available"). So the worker
records :func:`current` in its row of the job database when it registers, and the app compares
that with its own :func:`current` (:func:`differences`); ``core.jobs.control`` restarts a
stale worker or offers a restart.

Only settings that change what a job does are compared. Paths are compared resolved, so
``~/data`` and ``/home/me/data`` are the same setting. No TensorFlow, no streamlit.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from core import config

# environment variable -> what it sets, for messages
NAMES: dict[str, str] = {
    "MEDMNIST_ROOT": "dataset folder",
    "TRAINED_MODELS_DIR": "model registry",
    "VGG16_WEIGHTS": "VGG16 ImageNet weights",
    "JOBS_DB": "job database",
}
NOT_RECORDED = "not recorded (a worker started by an older version of the app)"


def _path(value: Path) -> str:
    return str(value.expanduser().resolve())


def current(db_path: str | os.PathLike) -> dict[str, str]:
    """This process's effective settings, as a worker records them and the app compares them.

    Args:
        db_path: the job database this process serves or reads (its ``JobStore.path``).

    Returns:
        ``{variable: value}`` for every name in :data:`NAMES`; never raises for a bad value
        (``VGG16_WEIGHTS`` naming a missing file is recorded as that path).
    """
    weights = os.environ.get("VGG16_WEIGHTS", "").strip()
    return {
        "MEDMNIST_ROOT": _path(config.medmnist_root()),
        "TRAINED_MODELS_DIR": _path(config.trained_models_dir()),
        "VGG16_WEIGHTS": "imagenet" if weights in ("", "imagenet") else _path(Path(weights)),
        "JOBS_DB": _path(Path(db_path)),
    }


@dataclass(frozen=True)
class SettingDiff:
    """One setting that differs: the worker's value (None: not recorded) and the app's."""

    name: str
    worker: str | None
    app: str | None

    def describe(self) -> str:
        worker = self.worker if self.worker is not None else NOT_RECORDED
        return (
            f"{self.name} ({NAMES.get(self.name, 'setting')}): worker `{worker}`, app `{self.app}`"
        )


def differences(worker: Mapping[str, str] | None, app: Mapping[str, str]) -> list[SettingDiff]:
    """The settings in which a worker differs from the app, in :data:`NAMES` order.

    Args:
        worker: the settings the worker recorded, or None when it recorded none (a worker
            from before this check existed: it counts as different in every setting).
        app: the app's :func:`current` settings.

    Returns:
        One :class:`SettingDiff` per differing setting; empty when the worker is current.
    """
    if worker is None:
        return [SettingDiff(name, None, app.get(name)) for name in NAMES]
    return [
        SettingDiff(name, worker.get(name), app.get(name))
        for name in NAMES
        if worker.get(name) != app.get(name)
    ]
