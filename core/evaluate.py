"""``python -m core.evaluate RUN_DIR``: recompute a run's test AUC/ACC with the official metrics."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def evaluate_run(run_dir: str, split: str = "test", data_root: str | None = None) -> dict:
    """Load a run's model and data and return ``{"auc", "acc"}`` on ``split``."""
    from core import data, evaluation, info, registry
    from core.config import TrainConfig
    from core.models import prepare_input

    path = registry.resolve_run(run_dir, allow_outside=True)
    cfg = TrainConfig.from_dict(registry.read_json(path, "config.json"))
    model = registry.load_model(path, allow_outside=True)
    x, y = data.load_split(cfg.dataset, split, cfg.size, root=data_root)
    scores = evaluation.predict(model, prepare_input(cfg.model, x))
    return evaluation.evaluate(y, scores, info.task(cfg.dataset))


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m core.evaluate", description=__doc__)
    p.add_argument("run_dir")
    p.add_argument("--split", default="test", choices=("train", "val", "test"))
    args = p.parse_args(argv)
    from core.data import DataError
    from core.registry import RegistryError, read_json, resolve_run

    try:
        result = evaluate_run(args.run_dir, args.split)
    except (RegistryError, DataError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    run_dir = resolve_run(args.run_dir, allow_outside=True)
    stored = (read_json(run_dir, "metrics.json") or {}).get(args.split)
    print(f"{args.split} AUC {result['auc']:.4f}")
    print(f"{args.split} ACC {result['acc']:.4f}")
    if stored:
        print(f"(metrics.json: AUC {stored['auc']:.4f}, ACC {stored['acc']:.4f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
