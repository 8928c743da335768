"""``python -m core.evaluate RUN_DIR``: recompute a run's test AUC/ACC with the official metrics."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

from core import cli


def evaluate_run(run_dir: str, split: str = "test", data_root: str | None = None) -> dict:
    """Load a run's model and data and return ``{"auc", "acc"}`` on ``split``.

    The cheap checks come first: the run's files (``metrics.json``, ``config.json``) and the
    dataset file are read before TensorFlow loads the model, so a damaged run or a missing
    dataset is reported in a second, not after the model has loaded.

    Args:
        run_dir: a run name in the registry or the path of a run directory.
        split: ``"train"``, ``"val"`` or ``"test"``.
        data_root: MedMNIST folder (default: the ``MEDMNIST_ROOT`` setting).

    Returns:
        ``{"auc": float, "acc": float}``.

    Raises:
        core.registry.RegistryError: no run there, or one of its files is damaged (the message
            names the file).
        core.data.DataError: the dataset file is missing or not the published one.
    """
    from core import data, info, registry

    path = registry.resolve_run(run_dir, allow_outside=True)
    registry.read_json(path, "metrics.json")  # damaged → RunFileError now, not after the work
    cfg = registry.read_config(path)
    x, y = data.load_split(cfg.dataset, split, cfg.size, root=data_root)

    from core import evaluation  # TensorFlow: imported once the cheap checks have passed
    from core.models import prepare_input

    model = registry.load_model(path, allow_outside=True)
    scores = evaluation.predict(model, prepare_input(cfg.model, x))
    return evaluation.evaluate(y, scores, info.task(cfg.dataset))


def split_scores(
    run_dir: str, splits: Sequence[str] = ("val", "test"), data_root: str | None = None
) -> dict[str, tuple[Any, Any]]:
    """A run's labels and probabilities on each split (the model loads once).

    Args:
        run_dir: a run name in the registry or the path of a run directory.
        splits: the splits to score.
        data_root: MedMNIST folder (default: the ``MEDMNIST_ROOT`` setting).

    Returns:
        ``{split: (y, scores)}`` with ``y`` ``(N, 1)`` and ``scores`` ``(N, classes)``.

    Raises:
        core.registry.RegistryError, core.data.DataError: as :func:`evaluate_run`.
    """
    from core import data, registry

    path = registry.resolve_run(run_dir, allow_outside=True)
    cfg = registry.read_config(path)
    arrays = {s: data.load_split(cfg.dataset, s, cfg.size, root=data_root) for s in splits}

    from core import evaluation
    from core.models import prepare_input

    model = registry.load_model(path, allow_outside=True)
    return {
        s: (y, evaluation.predict(model, prepare_input(cfg.model, x)))
        for s, (x, y) in arrays.items()
    }


def write_clinical(run_dir: str, data_root: str | None = None) -> dict[str, Any]:
    """Recompute a run's clinical metrics (``core.clinical``) into its ``evaluation.json``.

    Only the ``clinical`` key is replaced; the official figures and every other key stay, so
    existing readers see the same file plus one key. Thresholds are chosen on val.

    Returns:
        The ``clinical`` block written.

    Raises:
        core.registry.RegistryError: no run there, or no ``evaluation.json`` to extend.
    """
    from core import clinical, info, registry

    path = registry.resolve_run(run_dir, allow_outside=True)
    report = registry.read_json(path, "evaluation.json")
    if not isinstance(report, dict):
        raise registry.RegistryError(
            f"{path} has no evaluation.json to extend; retrain the run or restore the file"
        )
    cfg = registry.read_config(path)
    scores = split_scores(str(path), data_root=data_root)
    (y_val, s_val), (y_test, s_test) = scores["val"], scores["test"]
    block = clinical.clinical_report(
        y_test,
        s_test,
        info.task(cfg.dataset),
        info.label_names(cfg.dataset),
        cfg.dataset,
        val_true=y_val,
        val_score=s_val,
    )
    registry.write_json_atomic(path / "evaluation.json", {**report, "clinical": block})
    return block


def main(argv: Sequence[str] | None = None) -> int:
    """Print a run's recomputed AUC/ACC next to the ones stored in its ``metrics.json``.

    Args:
        argv: the command-line arguments (default ``sys.argv[1:]``).

    Returns:
        0. User errors raise (see :func:`evaluate_run`); :func:`core.cli.run` reports them.
    """
    p = cli.ArgumentParser(prog="python -m core.evaluate", description=__doc__)
    p.add_argument("run_dir", help="run name in the registry, or path of a run directory")
    p.add_argument("--split", default="test", choices=("train", "val", "test"))
    p.add_argument(
        "--write-clinical",
        action="store_true",
        help="also recompute the clinical metrics (kappa, referable disease, operating point; "
        "thresholds chosen on val) into the run's evaluation.json",
    )
    args = p.parse_args(argv)
    from core import registry

    result = evaluate_run(args.run_dir, args.split)
    run_dir = registry.resolve_run(args.run_dir, allow_outside=True)
    stored = registry.read_json(run_dir, "metrics.json") or {}
    stored = stored.get(args.split) if isinstance(stored, dict) else None
    print(f"{args.split} AUC {result['auc']:.4f}")
    print(f"{args.split} ACC {result['acc']:.4f}")
    if isinstance(stored, dict) and all(
        isinstance(stored.get(k), float | int) for k in ("auc", "acc")
    ):
        print(f"(metrics.json: AUC {stored['auc']:.4f}, ACC {stored['acc']:.4f})")
    if args.write_clinical:
        from core import clinical

        block = write_clinical(args.run_dir)
        for line in clinical.summary_lines(block):
            print(line)
        print(f"wrote the clinical metrics into {run_dir / 'evaluation.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
