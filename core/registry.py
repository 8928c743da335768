"""The model registry: one directory per run under ``trained_models/``, saved atomically.

JSON and files only: listing and reading runs never imports TensorFlow (the app's Home page
uses them, and a test imports this module in a fresh interpreter to check). Loading and saving a
model hand the Keras part to :mod:`core.models.io`, imported inside those two functions. Run
names are validated and resolved inside the registry root only.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core import config, scratch_dirs
from core.config import validate_run_name  # re-exported: callers check names here

__all__ = [
    "ENSEMBLE_FILE",
    "LEAN_FILE",
    "MODEL_FILE",
    "RegistryError",
    "Run",
    "RunFileError",
    "clean_scratch",
    "default_run_name",
    "ensemble_dirs",
    "ensemble_members",
    "list_runs",
    "load_model",
    "load_predictor",
    "read_config",
    "read_json",
    "read_run",
    "resolve_run",
    "root_dir",
    "runs",
    "save_run",
    "validate_run_name",
    "write_json_atomic",
]

MODEL_FILE = "model.keras"
ENSEMBLE_FILE = "ensemble.json"  # an ensemble folder: member run names, no weights
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
    "calibration.json": "python -m core.trust",
    "ood.npz": "python -m core.trust",
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


@dataclass(frozen=True)
class Run:
    """One finished run as the registry lists it: its files' JSON, read once.

    Attributes:
        name: the run directory's name.
        path: the run directory.
        config: ``config.json`` (``TrainConfig`` fields + dataset file, task, labels, ...).
        metrics: ``metrics.json`` (val/test AUC and ACC, seeds, summary, timings, ...).
        quantized: ``quantized/results.json`` (written by core.quantize), or None.
        explain: ``explain.json`` (alignment scores, written by core.explain), or None.
    """

    name: str
    path: Path
    config: dict[str, Any]
    metrics: dict[str, Any]
    quantized: dict[str, Any] | None = None
    explain: dict[str, Any] | None = None

    @property
    def dataset(self) -> str:
        return self.config["dataset"]

    @property
    def model(self) -> str:
        return self.config["model"]

    @property
    def size(self) -> int:
        return int(self.config.get("size", 28))

    def to_dict(self) -> dict[str, Any]:
        """The dict :func:`list_runs` returns (``path`` as a string)."""
        return {
            "name": self.name,
            "path": str(self.path),
            "config": self.config,
            "metrics": self.metrics,
            "quantized": self.quantized,
            "explain": self.explain,
        }


def read_run(path: str | os.PathLike) -> Run | None:
    """The run in a directory, or None when it is not a finished, readable run.

    A run needs a non-empty ``metrics.json`` and ``config.json``; a damaged optional file
    (quantization, explanation results) reads as None instead of hiding the run.
    """
    path = Path(path)
    try:
        metrics = read_json(path, "metrics.json")
        cfg = read_json(path, "config.json")
    except RunFileError:
        return None
    if not metrics or not cfg:
        return None
    return Run(
        name=path.name,
        path=path,
        config=cfg,
        metrics=metrics,
        quantized=_read_optional(path / "quantized", "results.json"),
        explain=_read_optional(path, "explain.json"),
    )


def runs(root: str | os.PathLike | None = None) -> list[Run]:
    """Every finished run under the registry root, sorted by name.

    Hidden directories (atomic-save scratch, staging) and malformed runs are skipped.
    """
    base = root_dir(root)
    if not base.is_dir():
        return []
    found = (
        read_run(path)
        for path in sorted(base.iterdir())
        if not path.name.startswith(".") and path.is_dir()
    )
    return [run for run in found if run is not None]


def list_runs(root: str | os.PathLike | None = None) -> list[dict[str, Any]]:
    """Every finished run as a dict: name, path (str), config, metrics, quantized, explain.

    The dict form of :func:`runs`, which callers written before :class:`Run` read.
    """
    return [run.to_dict() for run in runs(root)]


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
    from core.models import io as model_io  # TensorFlow; model_io never imports the registry

    scratch = Path(tempfile.mkdtemp(prefix=scratch_dirs.scratch_prefix(name), dir=base))
    os.chmod(scratch, 0o755)
    try:
        if lean:
            model_io.save_lean_weights(model, scratch / LEAN_FILE)
        else:
            model_io.save_model(model, scratch / MODEL_FILE)
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


def clean_scratch(
    root: str | os.PathLike | None = None, max_age_s: float = scratch_dirs.MAX_AGE_S
) -> list[str]:
    """Remove scratch directories left by interrupted saves; return their names.

    A folder whose save may still be running is kept: its process (recorded in the name) is
    alive on this machine, or it was written to within ``max_age_s`` (see core.scratch_dirs).
    The worker and ``python -m core.train`` call this when they start.
    """
    return scratch_dirs.clean_stale(root_dir(root), max_age_s)


def load_model(
    run_dir: str | os.PathLike, root: str | os.PathLike | None = None, allow_outside: bool = False
) -> Any:
    """The trained Keras model of a run (Keras safe mode: no arbitrary code is deserialised).

    Raises:
        RegistryError: the run is missing or holds no model file.
        RunFileError: the model file (or a lean run's config.json) is damaged or truncated;
            the message names the file.
    """
    from core.models import io as model_io  # TensorFlow; model_io never imports the registry

    path = resolve_run(run_dir, root, allow_outside)
    cfg = read_json(path, "config.json", {})
    if not isinstance(cfg, dict):
        raise RunFileError(_damaged(path / "config.json", "is not a JSON object", path))
    if cfg.get("lean") or (path / LEAN_FILE).is_file():
        read_config(path)  # a lean run is rebuilt from its config: refuse a damaged one first
        model = model_io.build_lean(cfg)
        weights_file = path / LEAN_FILE
        try:
            return model_io.load_lean_weights(model, weights_file)
        except Exception as exc:  # noqa: BLE001 - zip, npz, key and shape errors all mean "damaged"
            what = f"cannot be loaded ({type(exc).__name__}: {exc})"
            raise RunFileError(_damaged(weights_file, what, path)) from exc
    model_file = path / MODEL_FILE
    if not model_file.is_file():
        raise RegistryError(
            f"{path} has no {MODEL_FILE}: restore it from a backup, or delete {path} and train "
            "the run again"
        )
    try:
        return model_io.load_model_file(model_file)
    except MemoryError:
        raise  # not the file's fault
    except Exception as exc:  # noqa: BLE001 - h5py, zipfile and Keras raise many types here
        # Keras reports a truncated or overwritten file as an h5py "file signature not found",
        # a zipfile or a deserialisation error, none of which names the file.
        what = f"cannot be loaded as a Keras model ({type(exc).__name__}: {_first_line(exc)})"
        raise RunFileError(_damaged(model_file, what, path)) from exc


def ensemble_dirs(root: str | os.PathLike | None = None) -> list[Path]:
    """Ensemble folders of the registry (they hold ``ensemble.json`` and no ``config.json``,
    so :func:`runs` does not list them and no page tries to load them as one Keras model)."""
    base = root_dir(root)
    if not base.is_dir():
        return []
    return [
        p
        for p in sorted(base.iterdir())
        if not p.name.startswith(".") and (p / ENSEMBLE_FILE).is_file()
    ]


def ensemble_members(ens_dir: str | os.PathLike) -> tuple[list[Path], bool]:
    """The member run folders (siblings of the ensemble folder) and the TTA flag of an ensemble.

    Raises:
        RegistryError: no ``ensemble.json``, or a member run is missing (numbered fixes).
        RunFileError: ``ensemble.json`` is damaged or lists no members.
    """
    ens_dir = Path(ens_dir)
    spec = read_json(ens_dir, ENSEMBLE_FILE)
    if spec is None:
        raise RegistryError(f"{ens_dir} holds no {ENSEMBLE_FILE}: it is not an ensemble")
    if not isinstance(spec, dict) or not spec.get("members"):
        raise RunFileError(_damaged(ens_dir / ENSEMBLE_FILE, "lists no members", ens_dir))
    members = []
    for name in spec["members"]:
        path = ens_dir.parent / validate_run_name(str(name))
        if not (path / "metrics.json").is_file():
            raise RegistryError(
                f"ensemble {ens_dir.name} needs member run {name!r}, which is not in "
                f"{ens_dir.parent}.\n"
                f"  1. Restore the run folder {path} (shipped runs: `git checkout -- {path}`).\n"
                "  2. Or rebuild the ensemble from the runs present: "
                "`python -m core.trust ensemble --dataset FLAG --name NAME`."
            )
        members.append(path)
    return members, bool(spec.get("tta"))


def load_predictor(run_dir: str | os.PathLike, root: str | os.PathLike | None = None) -> Any:
    """The :class:`core.trust.predictor.Predictor` of a run or an ensemble folder:
    ``predict_proba`` (calibrated), ``uncertainty``, ``ood_score``, ``is_ood``, ``refer``,
    ``assess`` (all at once), with the values ``python -m core.trust`` fitted.

    Args:
        run_dir: a run or ensemble name in the registry, or its path.
        root: the registry (default ``TRAINED_MODELS_DIR``).

    Raises:
        RegistryError: no run there, or an ensemble member is missing.
        RunFileError: a damaged model or JSON file (named in the message).
    """
    # TensorFlow; core.trust.predictor never imports the registry (no cycle)
    from core.trust import predictor

    path = Path(run_dir).expanduser()
    if len(path.parts) == 1 and not path.is_absolute():
        path = root_dir(root) / validate_run_name(str(run_dir))
    if (path / ENSEMBLE_FILE).is_file():
        member_dirs, tta = ensemble_members(path)
    else:
        path = resolve_run(run_dir, root, allow_outside=True)
        member_dirs, tta = [path], False
    members = [
        predictor.Member(m, load_model(m, allow_outside=True), read_json(m, "config.json", {}))
        for m in member_dirs
    ]
    trust = read_json(path, predictor.CALIBRATION_FILE)
    try:
        stats = predictor.read_stats(path / predictor.OOD_FILE)
    except (OSError, ValueError) as exc:
        what = f"cannot be read ({type(exc).__name__}: {_first_line(exc)})"
        raise RunFileError(_damaged(path / predictor.OOD_FILE, what, path)) from exc
    return predictor.Predictor(path, members, tta=tta, trust=trust, ood_stats=stats)


def _first_line(exc: BaseException) -> str:
    """The first line of an exception's message (Keras appends whole config dumps)."""
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__
