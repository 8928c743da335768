"""VGG16 transfer recipe sweep on RetinaMNIST, selected on the validation split only.

Each variant changes the ``vgg16_ft2`` arm's config in one or two knobs and trains the usual
three seeds into ``trained_models/.staging/sweep/`` (git-ignored, resumable). The table prints
mean ± std of val and test AUC/ACC; the choice of recipe must be made on the val columns.
Results also go to ``docs/results/vgg_sweep.json`` so the report can cite the sweep.

    python -m benchmarks.vgg_sweep [--variants ft5_lr3e-5 ...] [--seeds 0 1 2]

A variant that wins on validation becomes an experiment arm with the same config; its seed runs
are copied into the experiments' staging instead of being trained again (the configs are
checked equal first), then promoted as usual:

    python -m benchmarks.vgg_sweep --adopt ft2_ema_cosine vgg16_ft2_ema
    python -m core.experiments promote --arms vgg16_ft2_ema
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from core import registry
from core.config import TrainConfig, trained_models_dir
from core.experiments import ARMS
from core.results import mean_std

BASE = ARMS["vgg16_ft2"]["config"]
VARIANTS: dict[str, dict] = {
    "ft5_lr3e-5": {"fine_tune_blocks": 5, "learning_rate": 3e-5},
    "ft3": {"fine_tune_blocks": 3},
    "ft2_lr3e-5_cosine": {
        "learning_rate": 3e-5,
        "lr_schedule": "cosine",
        "epochs": 60,
        "patience": 12,
    },
    # Averaged weights (EMA, momentum 0.99 ≈ the last 3 epochs) smooth the epoch-to-epoch swings
    # of the 120-image val metrics; label smoothing keeps the softmax from overconfident argmaxes.
    "ft2_ema": {"weight_ema": 0.99, "epochs": 60, "patience": 12},
    "ft2_ema_ls": {"weight_ema": 0.99, "label_smoothing": 0.1, "epochs": 60, "patience": 12},
    # The same average over a full cosine schedule: no early plateau halving, the average of a
    # well-converged trajectory (patience counts only after epoch 20).
    "ft2_ema_cosine": {
        "weight_ema": 0.99,
        "lr_schedule": "cosine",
        "epochs": 60,
        "patience": 20,
        "min_epochs": 20,
    },
    "ft2_ema_ls_cosine": {
        "weight_ema": 0.99,
        "label_smoothing": 0.1,
        "lr_schedule": "cosine",
        "epochs": 60,
        "patience": 20,
        "min_epochs": 20,
    },
}
OUT = Path("docs/results/vgg_sweep.json")


def _config(variant: str, seed: int) -> TrainConfig:
    return TrainConfig(
        **{**BASE, **VARIANTS[variant], "seed": seed, "name": f"{variant}-s{seed}"}
    ).validate()


def _sweep_root() -> Path:
    return trained_models_dir() / ".staging" / "sweep"


def adopt(variant: str, arm: str, seeds: Sequence[int] = (0, 1, 2)) -> list[Path]:
    """Copy a variant's seed runs into the experiments' staging as ``<arm>-s<seed>``.

    Raises:
        ValueError: the arm's config differs from the variant's in anything but the name.
        FileNotFoundError: a seed of the variant has not finished.
        FileExistsError: the arm already has that seed in staging.
    """
    from core.experiments import arm_config, staging_dir

    stage = staging_dir()
    pairs = []
    for seed in seeds:
        want, got = arm_config(arm, seed).to_dict(), _config(variant, seed).to_dict()
        diff = {k: (got[k], want[k]) for k in want if k != "name" and want[k] != got[k]}
        if diff:
            raise ValueError(f"arm {arm!r} is not variant {variant!r}: (variant, arm) {diff}")
        src, dst = _sweep_root() / f"{variant}-s{seed}", stage / f"{arm}-s{seed}"
        if not (src / "metrics.json").is_file():
            raise FileNotFoundError(f"{src} has no finished run; train the variant first")
        if dst.exists():
            raise FileExistsError(f"{dst} exists; remove it to adopt {src.name} again")
        pairs.append((src, dst))
    for src, dst in pairs:
        shutil.copytree(src, dst)
        cfg = registry.read_json(dst, "config.json")
        registry.write_json_atomic(
            dst / "config.json", {**cfg, "name": dst.name, "adopted_from": f"sweep/{src.name}"}
        )
    return [dst for _, dst in pairs]


def _ms(values: list[float]) -> str:
    mean, std = mean_std(values)
    return f"{mean:.4f} ± {std:.4f}"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument(
        "--adopt",
        nargs=2,
        metavar=("VARIANT", "ARM"),
        help="copy VARIANT's finished seeds into the experiments' staging as ARM",
    )
    args = p.parse_args(argv)
    if args.adopt:
        try:
            for path in adopt(*args.adopt, seeds=args.seeds):
                print(f"adopted {path}")
        except (ValueError, OSError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        return 0
    from core import training

    root = _sweep_root()
    root.mkdir(parents=True, exist_ok=True)
    results = json.loads(OUT.read_text()) if OUT.is_file() else {}
    for variant in args.variants:
        for seed in args.seeds:
            cfg = _config(variant, seed)
            if not (root / cfg.name / "metrics.json").is_file():
                start = time.time()
                training.run(cfg, output_root=root)
                print(f"{cfg.name}: {time.time() - start:.0f}s", flush=True)
        seeds = [registry.read_json(root / f"{variant}-s{s}", "metrics.json") for s in args.seeds]
        results[variant] = {
            "changes": VARIANTS[variant],
            "seeds": [
                {k: m[k] for k in ("seed", "val", "test", "epochs_run", "wall_time_s")}
                for m in seeds
            ],
        }
        OUT.write_text(json.dumps(results, indent=2) + "\n")
    print("| variant | val AUC | val ACC | test AUC | test ACC |")
    print("|---|---|---|---|---|")
    for variant, r in results.items():
        cells = [
            _ms([m[split][key] for m in r["seeds"]])
            for split in ("val", "test")
            for key in ("auc", "acc")
        ]
        print(f"| {variant} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
