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


class RunFileError(RegistryError, ValueError):
    """A file of a run exists but cannot be read: not JSON, truncated, not a Keras model.

    Also a ``ValueError``, so callers that skipped a damaged file when it raised
    ``json.JSONDecodeError`` (a ``ValueError``) still skip it.
    """


# Files a command recomputes from the run; any other damaged file means training again.
_RECOMPUTED_BY = {
    "results.json": "python -m core.quantize",
    "explain.json": "python -m core.explain",
}


def _damaged(path: Path, what: str, run_dir: Path) -> str:
    """The message for a damaged run file: what is wrong, which file, numbered next steps."""
    redo = _RECOMPUTED_BY.get(path.name)
    second = (
        f"Or delete it and run `{redo} RUN` again to recompute it."
        if redo
        else f"Or delete the run folder {run_dir} and train the run again."
    )
    return (
        f"{path} {what}: the file is damaged or was not written by this project.\n"
        f"  1. Restore it from a backup (a shipped run: `git checkout -- {path}`).\n"
        f"  2. {second}"
    )


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
        raise RegistryError(
            f"{name_or_path} is outside the model registry {base}: pass the name of a run in it "
            "(or set TRAINED_MODELS_DIR to the registry that holds the run)"
        )
    if not (path / "metrics.json").is_file():
        what = "no such folder" if not path.exists() else "the folder holds no metrics.json"
        raise RegistryError(
            f"no run at {path} ({what}): pass a run name from {base} or the path of a run "
            "folder (it holds metrics.json, config.json and the model)"
        )
    return path


def read_json(run_dir: str | os.PathLike, name: str, default: Any = None) -> Any:
    """A JSON file of a run, or ``default`` when it is absent.

    Raises:
        RunFileError: the file exists but cannot be read or is not JSON (the message names the
            file and says how to restore it).
    """
    path = Path(run_dir) / name
    if not path.is_file():
        return default
    try:
        with path.open(encoding="utf-8") as fh:
            return json.load(fh)
    except json.JSONDecodeError as exc:
        what = f"is not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})"
        raise RunFileError(_damaged(path, what, Path(run_dir))) from exc
    except UnicodeDecodeError as exc:
        raise RunFileError(_damaged(path, "is not UTF-8 text", Path(run_dir))) from exc
    except OSError as exc:
        raise RunFileError(
            f"cannot read {path} ({exc.strerror or exc}): check that the file is readable "
            "by you and the disk is mounted"
        ) from exc


def read_config(run_dir: str | os.PathLike, validate: bool = True) -> config.TrainConfig:
    """The training configuration of a run, from its ``config.json``.

    Args:
        run_dir: the run directory.
        validate: also check every field's value (unknown dataset, sizes out of range, ...).

    Returns:
        The run's :class:`~core.config.TrainConfig`.

    Raises:
        RegistryError: ``config.json`` is missing.
        RunFileError: it is not JSON, not an object, lacks a field or holds an invalid value;
            the message names the file and the field.
    """
    run_dir = Path(run_dir)
    path = run_dir / "config.json"
    data = read_json(run_dir, "config.json")
    if data is None:
        raise RegistryError(
            f"{run_dir} has no config.json, so its model cannot be rebuilt or evaluated: "
            f"restore config.json from a backup, or delete {run_dir} and train the run again"
        )
    if not isinstance(data, dict):
        raise RunFileError(
            _damaged(path, f"holds a JSON {type(data).__name__}, not an object", run_dir)
        )
    try:
        cfg = config.TrainConfig.from_dict(data)
        return cfg.validate() if validate else cfg
    except (TypeError, ValueError) as exc:
        what = f"is not a valid run configuration ({exc})"
        raise RunFileError(_damaged(path, what, run_dir)) from exc


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
        except RunFileError:
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
    except RunFileError:
        return None


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def quantized_models(run_dir: str | os.PathLike) -> dict[str, Path]:
    """A run's TFLite files written by ``core.quantize``: ``{mode: quantized/<mode>.tflite}``.

    Args:
        run_dir: A run directory (as listed by :func:`list_runs`).

    Returns:
        The files by mode name, sorted by file name; empty when the run was never quantized.
    """
    files = sorted((Path(run_dir) / "quantized").glob("*.tflite"))
    return {path.stem: path for path in files}


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
    weights_file = run_dir / LEAN_FILE
    try:
        with np.load(weights_file, allow_pickle=False) as npz:
            grouped: dict[str, dict[int, Any]] = {}
            for key in npz.files:
                lname, idx = key.rsplit("/", 1)
                grouped.setdefault(lname, {})[int(idx)] = npz[key]
        for lname, weights in grouped.items():
            model.get_layer(lname).set_weights(
                [weights[i].astype(np.float32) for i in sorted(weights)]
            )
    except Exception as exc:  # noqa: BLE001 - zip, npz, key and shape errors all mean "damaged"
        raise RunFileError(
            _damaged(weights_file, f"cannot be loaded ({type(exc).__name__}: {exc})", run_dir)
        ) from exc
    return model


def load_model(
    run_dir: str | os.PathLike, root: str | os.PathLike | None = None, allow_outside: bool = False
) -> Any:
    """The trained Keras model of a run (Keras safe mode: no arbitrary code is deserialised).

    Raises:
        RegistryError: the run is missing or holds no model file.
        RunFileError: the model file (or a lean run's config.json) is damaged or truncated;
            the message names the file.
    """
    import tf_keras as keras

    from core.models import CUSTOM_OBJECTS

    path = resolve_run(run_dir, root, allow_outside)
    cfg = read_json(path, "config.json", {})
    if not isinstance(cfg, dict):
        raise RunFileError(_damaged(path / "config.json", "is not a JSON object", path))
    if cfg.get("lean") or (path / LEAN_FILE).is_file():
        read_config(path)  # a lean run is rebuilt from its config: refuse a damaged one first
        return _rebuild_lean(path, cfg)
    model_file = path / MODEL_FILE
    if not model_file.is_file():
        raise RegistryError(
            f"{path} has no {MODEL_FILE}: restore it from a backup, or delete {path} and train "
            "the run again"
        )
    try:
        return keras.models.load_model(
            model_file, custom_objects=CUSTOM_OBJECTS, compile=False, safe_mode=True
        )
    except MemoryError:
        raise  # not the file's fault
    except Exception as exc:  # noqa: BLE001 - h5py, zipfile and Keras raise many types here
        # Keras reports a truncated or overwritten file as an h5py "file signature not found",
        # a zipfile or a deserialisation error, none of which names the file.
        what = f"cannot be loaded as a Keras model ({type(exc).__name__}: {_first_line(exc)})"
        raise RunFileError(_damaged(model_file, what, path)) from exc


def _first_line(exc: BaseException) -> str:
    """The first line of an exception's message (Keras appends whole config dumps)."""
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__
