"""Validation of training-job parameters (the Retrain form, ``submit_job``, API callers).

Every ``TrainConfig`` field is checked in two steps: its *type* first, then its range, so a
value of the wrong type is refused with a message naming the field instead of slipping
through a range test that happens to work on it (``64.0 in (28, 64)`` is true, and the
worker then failed on ``KeyError: 'url_64.0'``; ``bool("false")`` is true, so
``class_weights="false"`` turned class weighting *on*).

Type rules (one table, :data:`FIELDS`):

- integer fields accept ``int`` and whole-number floats, which are normalised to ``int``
  (``64.0`` becomes ``64``: JSON and number widgets often send whole numbers as floats);
  they refuse other floats, NaN/inf, ``bool`` and strings (``"64"``);
- number fields accept ``int`` and finite ``float``, never ``bool`` or strings;
- yes/no fields accept only ``True``/``False`` (never ``"false"``, ``0`` or ``1``);
- choice fields accept only one of the listed strings;
- ``name`` is ``None`` (generated) or a valid run name that is not in the registry yet;
- ``label_overrides`` is ``None`` or a mapping (``core.config.check_label_overrides``: train/val
  only, never test).

This module imports neither TensorFlow nor streamlit. ``core.jobs`` re-exports its names.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core import config, data, info, registry

# Limits of the Retrain form. Wider values are legal for TrainConfig (CLI users may want them),
# but a job launched from a shared app must finish in reasonable time on a CPU box.
UI_LIMITS: dict[str, tuple[float, float]] = {
    "epochs": (1, 300),
    "learning_rate": (1e-6, 1.0),
    "batch_size": (1, 1024),
    "fine_tune_blocks": (0, config.VGG16_BLOCKS),
    "seed": (0, 2**31 - 1),
    "patience": (1, 300),
    "min_epochs": (0, 300),
    "input_size": (32, 224),
}
MODELS_3D = info.MODELS_3D  # kept for importers; the rule lives in core.info
MODELS_2D = info.MODELS_2D

# kind of every TrainConfig field; a test asserts this covers all of them
FIELDS: dict[str, str] = {
    "dataset": "choice",
    "model": "choice",
    "size": "int",
    "epochs": "int",
    "batch_size": "int",
    "learning_rate": "number",
    "augment": "bool",
    "fine_tune_blocks": "int",
    "seed": "int",
    "patience": "int",
    "min_epochs": "int",
    "lr_schedule": "choice",
    "class_weights": "bool",
    "input_size": "int",
    "label_smoothing": "number",
    "weight_ema": "number",
    "name": "name",
    "label_overrides": "overrides",
}
REQUIRED: frozenset[str] = frozenset({"dataset", "model"})
# None means "default" (no overrides: the dataset's own labels)
OPTIONAL_NONE: frozenset[str] = frozenset({"input_size", "name", "label_overrides"})


class InvalidParamsError(ValueError):
    """Job parameters that failed validation; ``errors`` lists one message per problem."""

    def __init__(self, errors: list[str]):
        super().__init__("; ".join(errors))
        self.errors = list(errors)


@dataclass(frozen=True)
class ParamCheck:
    """Result of :func:`check_params`.

    Attributes:
        config: the validated ``TrainConfig`` (None when there are errors).
        errors: one message per invalid field, naming the field and the value received.
        warnings: things the user should know that do not block the job (e.g. a download).
    """

    config: config.TrainConfig | None
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.config is not None and not self.errors


def _choices(name: str) -> tuple[str, ...]:
    return {
        "dataset": tuple(info.FLAGS),
        "model": config.MODEL_FAMILIES,
        "lr_schedule": config.LR_SCHEDULES,
    }[name]


def _type_name(value: Any) -> str:
    return "true/false" if isinstance(value, bool) else type(value).__name__


def as_int(value: Any) -> int | None:
    """``value`` as an int when it is one or a whole-number float; None otherwise.

    Args:
        value: anything a form or an API caller may send.

    Returns:
        The integer, or None for bools, strings, fractions, NaN, inf and anything else.
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    return None


def _is_number(value: Any) -> bool:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return math.isfinite(value)


def _check_type(name: str, value: Any) -> tuple[Any, str | None]:
    """Return ``(normalised value, error)`` for one field's type (not its range)."""
    kind = FIELDS[name]
    if value is None and name in OPTIONAL_NONE:
        return None, None
    if kind == "int":
        number = as_int(value)
        if number is None:
            return value, (
                f"{name} must be a whole number, got {value!r} ({_type_name(value)}); "
                "type digits only, e.g. 64"
            )
        return number, None
    if kind == "number":
        if not _is_number(value):
            return value, f"{name} must be a number, got {value!r} ({_type_name(value)})"
        return value, None
    if kind == "bool":
        if not isinstance(value, bool):
            return value, (
                f"{name} must be true or false, got {value!r} ({_type_name(value)}); "
                "text such as 'false' is refused because it would count as true"
            )
        return value, None
    if kind == "overrides":  # its content is checked by TrainConfig (check_label_overrides)
        if not isinstance(value, dict):
            return value, (
                f"label_overrides must be a mapping or empty, got {value!r} ({_type_name(value)})"
            )
        return value, None
    if kind == "name":
        if not isinstance(value, str):
            return value, f"name must be text or empty, got {value!r} ({_type_name(value)})"
        return value, None
    if not isinstance(value, str):  # choice
        return value, f"{name} must be one of {', '.join(_choices(name))}, got {value!r}"
    return value, None


def _range_errors(values: Mapping[str, Any], registry_root: Any) -> list[str]:
    """Range and cross-field checks on values whose type is already right."""
    errors: list[str] = []
    dataset = values.get("dataset")
    model = values.get("model")
    for name in ("dataset", "model", "lr_schedule"):
        if name in values and values[name] not in _choices(name):
            errors.append(
                f"{name} must be one of {', '.join(_choices(name))}, got {values[name]!r}"
            )
    dataset_ok = dataset in info.INFO
    model_ok = model in config.MODEL_FAMILIES
    if dataset_ok and model_ok and (mismatch := info.model_mismatch(model, dataset)):
        errors.append(mismatch)
    if dataset_ok and "size" in values and values["size"] not in info.sizes(dataset):
        errors.append(
            f"size must be one of {info.sizes(dataset)} for {dataset}, got {values['size']!r}"
        )
    for name in ("epochs", "batch_size", "fine_tune_blocks", "seed", "patience", "min_epochs"):
        if name in values:
            lo, hi = UI_LIMITS[name]
            if not lo <= values[name] <= hi:
                errors.append(
                    f"{name} must be an integer in {int(lo)}..{int(hi)}, got {values[name]!r}"
                )
    if (
        values.get("fine_tune_blocks")
        and model != "vgg16"
        and not any(e.startswith("fine_tune_blocks") for e in errors)
    ):
        errors.append(
            f"fine_tune_blocks only applies to model 'vgg16'; got "
            f"{values['fine_tune_blocks']!r} with model {model!r} (use 0)"
        )
    if values.get("input_size") is not None:
        lo, hi = UI_LIMITS["input_size"]
        if not lo <= values["input_size"] <= hi:
            errors.append(
                f"input_size must be an integer in {int(lo)}..{int(hi)}, "
                f"got {values['input_size']!r}"
            )
        elif model != "vgg16":
            errors.append(
                f"input_size only applies to model 'vgg16'; got {values['input_size']!r} "
                f"with model {model!r} (leave it empty)"
            )
    if "learning_rate" in values:
        lo, hi = UI_LIMITS["learning_rate"]
        if not lo <= values["learning_rate"] <= hi:
            errors.append(
                f"learning_rate must be a number in {lo:g}..{hi:g}, got {values['learning_rate']!r}"
            )
    for name in ("label_smoothing", "weight_ema"):
        if name in values and not 0 <= values[name] < 1:
            errors.append(f"{name} must be a number in [0, 1), got {values[name]!r}")
    if values.get("label_overrides") is not None and dataset_ok:
        try:
            config.check_label_overrides(values["label_overrides"], dataset)
        except ValueError as exc:
            shown = repr(values["label_overrides"])
            shown = shown if len(shown) <= 300 else shown[:297] + "..."
            errors.append(f"{exc} (got label_overrides={shown})")
    if values.get("name") is not None:
        errors.extend(_name_errors(values["name"], registry_root))
    return errors


def _name_errors(name: str, registry_root: Any) -> list[str]:
    """A run name must be valid and free: the job would train fully, then fail at save."""
    try:
        registry.validate_run_name(name)
    except ValueError as exc:
        return [f"name: {exc}"]
    root = registry.root_dir(registry_root)
    if (root / name).exists():
        return [
            f"name {name!r} is already a run in {root}; choose another name, or leave it "
            "empty for a generated one"
        ]
    return []


def check_params(params: Mapping[str, Any], registry_root: str | Path | None = None) -> ParamCheck:
    """Validate job parameters against the Retrain form's limits and ``TrainConfig``.

    Args:
        params: ``TrainConfig`` fields (``dataset`` and ``model`` required), as the form sends
            them: ``epochs``, ``learning_rate``, ``batch_size``, ``augment``,
            ``fine_tune_blocks``, ``seed``, ``size`` ...
        registry_root: the registry a ``name`` must not exist in yet (default:
            ``TRAINED_MODELS_DIR``, the registry the worker saves into).

    Returns:
        A :class:`ParamCheck`; every problem is reported, not just the first. Its ``config``
        holds normalised values (a whole-number float such as ``64.0`` becomes ``64``).
    """
    if not isinstance(params, Mapping):
        return ParamCheck(None, [f"parameters must be a mapping, got {type(params).__name__}"])
    errors: list[str] = []
    warnings: list[str] = []
    for key in params:
        if key not in FIELDS:
            errors.append(f"unknown parameter {key!r}; known: {', '.join(sorted(FIELDS))}")
    for name in sorted(REQUIRED):
        if params.get(name) is None:
            errors.append(f"{name} is missing; choose one of {', '.join(_choices(name))}, got None")

    values: dict[str, Any] = {}
    for name, value in params.items():
        if name not in FIELDS or (name in REQUIRED and value is None):
            continue
        normalised, error = _check_type(name, value)
        if error:
            errors.append(error)
        else:
            values[name] = normalised
    errors.extend(_range_errors(values, registry_root))

    if errors:
        return ParamCheck(None, errors, warnings)
    try:
        cfg = config.TrainConfig.from_dict(values).validate()
    except (ValueError, TypeError) as exc:  # cross-field rules TrainConfig owns
        return ParamCheck(None, [str(exc)], warnings)

    path = data.file_path(cfg.dataset, cfg.size)
    if not path.is_file():
        # sizes() only lists files MedMNIST publishes a URL for, so the worker can fetch it.
        warnings.append(
            f"{path.name} is not in {path.parent} yet: the worker will download it "
            f"from {info.url(cfg.dataset, cfg.size)} (needs internet access)."
        )
    return ParamCheck(cfg, errors, warnings)


def field_names() -> set[str]:
    """``TrainConfig``'s fields, for tests that every one has a row in :data:`FIELDS`."""
    return {f.name for f in dataclasses.fields(config.TrainConfig)}
