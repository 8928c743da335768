"""``python -m core.evaluate RUN_DIR``: recompute a run's test AUC/ACC with the official metrics."""

from __future__ import annotations

import sys
from collections.abc import Sequence

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
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
