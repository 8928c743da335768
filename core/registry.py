"""The model registry: one directory per run under ``trained_models/``, saved atomically.

Listing and reading JSON never imports TensorFlow (the app's Home page uses them); loading a
model does. Run names are validated and resolved inside the registry root only.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from core import config, scratch_dirs

_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
MODEL_FILE = "model.keras"
# npz content; not named .npz so it is never mistaken for a MedMNIST data file
LEAN_FILE = "trained_layers.weights"
JSON_FILES = ("config.json", "history.json", "metrics.json", "evaluation.json")


class RegistryError(RuntimeError):
    """A run is missing, malformed, or a name/path tries to leave the registry."""


def root_dir(root: str | os.PathLike | None = None) -> Path:
    return Path(root).expanduser() if root is not None else config.trained_models_dir()


def validate_run_name(name: str) -> str:
    """A run name is one path component of letters, digits, ``.``, ``_`` and ``-``.

    Raises:
        ValueError: anything else (slashes, ``..``, control characters, empty).
    """
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name) or name in (".", ".."):
        raise ValueError(
            f"invalid run name {name!r}: use 1-128 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return name


def resolve_run(
    name_or_path: str | os.PathLike,
    root: str | os.PathLike | None = None,
    allow_outside: bool = False,
) -> Path:
    """The directory of a run, given its name or a path.

    Args:
        allow_outside: accept a path outside the registry root (the CLI's ``--output DIR``);
            the app never sets it, so names and paths from the UI stay inside the registry.

    Raises:
        RegistryError: invalid name, no run there, or a path outside the registry root.
    """
    base = root_dir(root).resolve()
    candidate = Path(name_or_path)
    if len(candidate.parts) == 1 and not candidate.is_absolute():
        try:
            validate_run_name(str(name_or_path))
        except ValueError as exc:
            raise RegistryError(str(exc)) from exc
        path = (base / candidate).resolve()
    else:
        path = candidate.expanduser().resolve()
    if not allow_outside and base not in path.parents:
        raise RegistryError(f"{name_or_path} is outside the model registry {base}")
    if not (path / "metrics.json").is_file():
        raise RegistryError(f"no run at {path} (a run directory holds metrics.json)")
    return path


def read_json(run_dir: str | os.PathLike, name: str, default: Any = None) -> Any:
    """A JSON file of a run, or ``default`` when it is absent."""
    path = Path(run_dir) / name
    if not path.is_file():
        return default
    with path.open() as fh:
        return json.load(fh)


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    """Write JSON through a temp file + fsync + rename, so readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(obj, fh, indent=2, sort_keys=True, default=_json_default)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; runs are shared read-only data
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def list_runs(root: str | os.PathLike | None = None) -> list[dict[str, Any]]:
    """Every finished run: name, path, config, metrics, and whether quantized files exist.

    Hidden directories (atomic-save scratch, staging) and malformed runs are skipped.
    """
    base = root_dir(root)
    runs: list[dict[str, Any]] = []
    if not base.is_dir():
        return runs
    for path in sorted(base.iterdir()):
        if path.name.startswith(".") or not path.is_dir():
            continue
        try:
            metrics = read_json(path, "metrics.json")
            cfg = read_json(path, "config.json")
        except (OSError, json.JSONDecodeError):
            continue
        if not metrics or not cfg:
            continue
        runs.append(
            {
                "name": path.name,
                "path": str(path),
                "config": cfg,
                "metrics": metrics,
                "quantized": _read_optional(path / "quantized", "results.json"),
                "explain": _read_optional(path, "explain.json"),
            }
        )
    return runs


def _read_optional(run_dir: Path, name: str) -> Any:
    """An optional JSON file of a run, or None when absent or unreadable (listing must not
    fail because a quantization or explanation file is half-written or damaged)."""
    try:
        return read_json(run_dir, name)
    except (OSError, json.JSONDecodeError):
        return None


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def default_run_name(cfg: dict[str, Any]) -> str:
    parts = [cfg.get("dataset", "run"), cfg.get("model", "model")]
    if cfg.get("model") == "vgg16":
        parts.append(f"ft{cfg.get('fine_tune_blocks', 0)}")
    if cfg.get("augment"):
        parts.append("aug")
    parts += [f"s{cfg.get('seed', 0)}", time.strftime("%Y%m%d-%H%M%S"), uuid.uuid4().hex[:4]]
    return "-".join(str(p) for p in parts)


def save_run(
    model: Any,
    cfg: dict[str, Any],
    history: dict[str, Any],
    metrics: dict[str, Any],
    evaluation: dict[str, Any] | None = None,
    root: str | os.PathLike | None = None,
    name: str | None = None,
    lean: bool = False,
) -> Path:
    """Save a finished run atomically and return its directory.

    Everything is written into a hidden scratch directory inside the registry, fsynced, then
    renamed into place in one step: a crash or kill leaves either no run or a whole run, and an
    existing run is never overwritten.

    Args:
        lean: store only the layers that training changed (VGG16: head + fine-tuned blocks) in
            ``trained_layers.weights`` (npz format); loading rebuilds the rest from the
            ImageNet weights.
    """
    base = root_dir(root)
    base.mkdir(parents=True, exist_ok=True)
    name = validate_run_name(name or cfg.get("name") or default_run_name(cfg))
    final = base / name
    if final.exists():
        raise RegistryError(f"run {name!r} already exists in {base}; choose another name")
    # the saver's pid in the name: clean_scratch never removes the folder of a live save
    scratch = Path(tempfile.mkdtemp(prefix=scratch_dirs.scratch_prefix(name), dir=base))
    os.chmod(scratch, 0o755)
    try:
        if lean:
            save_lean_weights(model, scratch / LEAN_FILE)
        else:
            _save_without_optimizer(model, scratch / MODEL_FILE)
        cfg = {**cfg, "name": name, "lean": lean}
        for fname, obj in (
            ("config.json", cfg),
            ("history.json", history),
            ("metrics.json", metrics),
            ("evaluation.json", evaluation),
        ):
            if obj is not None:
                write_json_atomic(scratch / fname, obj)
        for child in scratch.iterdir():
            if child.is_file():
                with child.open("rb") as fh:
                    os.fsync(fh.fileno())
        os.rename(scratch, final)  # atomic on one filesystem; fails if final appeared meanwhile
        _fsync_dir(base)
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    return final


def _save_without_optimizer(model: Any, path: Path) -> None:
    """Save architecture + weights only: Adam's two moment copies would triple the file."""
    import tf_keras as keras

    from core.models import CUSTOM_OBJECTS

    with keras.utils.custom_object_scope(CUSTOM_OBJECTS):
        clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    clone.save(path)


def clean_scratch(
    root: str | os.PathLike | None = None, max_age_s: float = scratch_dirs.MAX_AGE_S
) -> list[str]:
    """Remove scratch directories left by interrupted saves; return their names.

    A folder whose save may still be running is kept: its process (recorded in the name) is
    alive on this machine, or it was written to within ``max_age_s`` (see core.scratch_dirs).
    The worker and ``python -m core.train`` call this when they start.
    """
    return scratch_dirs.clean_stale(root_dir(root), max_age_s)


def trained_layer_names(model: Any) -> list[str]:
    """Layers whose weights are not the ImageNet VGG16 ones (trainable blocks, head, BN)."""
    names = []
    for layer in model.layers:
        if not layer.weights or layer.name == "caffe_preprocess":
            continue
        if layer.name.startswith("block") and not layer.trainable:
            continue
        names.append(layer.name)
    return names


def _half(w: Any) -> Any:
    """``w`` as float16, or unchanged where float16 cannot hold it (|w| > 65504 → inf).

    On one seed a fine-tuned VGG16's head BatchNorm moving variance exceeded float16's 65504; as
    float16 it became inf and silenced that channel.
    """
    import numpy as np

    with np.errstate(over="ignore"):
        half = w.astype(np.float16)
    return half if np.all(np.isfinite(half) == np.isfinite(w)) else w


def round_trained_to_float16(model: Any) -> None:
    """Round the trained layers' weights to float16 in place.

    Lean runs store these weights as float16 (half the bytes: a fine-tuned VGG16 block is 7M
    parameters). Rounding *before* evaluation makes the reported metrics those of the exact
    model that ships and reloads.
    """
    for lname in trained_layer_names(model):
        layer = model.get_layer(lname)
        layer.set_weights([_half(w).astype(w.dtype) for w in layer.get_weights()])


def save_lean_weights(model: Any, path: Path) -> None:
    import numpy as np

    arrays = {}
    for lname in trained_layer_names(model):
        for i, w in enumerate(model.get_layer(lname).get_weights()):
            arrays[f"{lname}/{i}"] = _half(w)
    with path.open("wb") as fh:
        np.savez(fh, **arrays)


def _rebuild_lean(run_dir: Path, cfg: dict[str, Any]) -> Any:
    import numpy as np

    from core import info
    from core.models import build_model, input_shape_for

    model = build_model(
        "vgg16",
        input_shape_for("vgg16", cfg["dataset"], cfg.get("size", 28)),
        info.num_classes(cfg["dataset"]),
        info.task(cfg["dataset"]),
        input_size=config.TrainConfig.from_dict(cfg).effective_input_size,
        fine_tune_blocks=cfg.get("fine_tune_blocks", 0),
    )
    with np.load(run_dir / LEAN_FILE, allow_pickle=False) as npz:
        grouped: dict[str, dict[int, Any]] = {}
        for key in npz.files:
            lname, idx = key.rsplit("/", 1)
            grouped.setdefault(lname, {})[int(idx)] = npz[key]
    for lname, weights in grouped.items():
        model.get_layer(lname).set_weights([weights[i].astype(np.float32) for i in sorted(weights)])
    return model


def load_model(
    run_dir: str | os.PathLike, root: str | os.PathLike | None = None, allow_outside: bool = False
) -> Any:
    """The trained Keras model of a run (Keras safe mode: no arbitrary code is deserialised).

    Raises:
        RegistryError: the run is missing or holds no model file.
    """
    import tf_keras as keras

    from core.models import CUSTOM_OBJECTS

    path = resolve_run(run_dir, root, allow_outside)
    cfg = read_json(path, "config.json", {})
    if cfg.get("lean") or (path / LEAN_FILE).is_file():
        return _rebuild_lean(path, cfg)
    model_file = path / MODEL_FILE
    if not model_file.is_file():
        raise RegistryError(f"{path} has no {MODEL_FILE}")
    return keras.models.load_model(
        model_file, custom_objects=CUSTOM_OBJECTS, compile=False, safe_mode=True
    )
