"""Reproduce every reference experiment from nothing, then regenerate docs/RESULTS.md.

Steps, in order (each can run alone with ``--only``):

1. ``train``     every arm × seed of ``core.experiments.ARMS`` into ``trained_models/.staging``
                 (resumes: finished seeds are skipped unless ``--fresh``).
2. ``promote``   each arm's median seed by validation AUC → ``trained_models/<arm>``, with all
                 seeds' metrics in its ``metrics.json``.
3. ``quantize``  the best reference run of each model family (highest mean validation AUC) in
                 the modes dynamic, int8 and qat (``--float16`` adds float16) →
                 ``<run>/quantized/``.
4. ``align``     Grad-CAM alignment scores for every reference run → ``<run>/explain.json``.
5. ``report``    ``docs/RESULTS.md`` and ``docs/results/*.png``.

    python -m benchmarks.reproduce                          # everything
    python -m benchmarks.reproduce --only train promote --experiment cnn3d
    python -m benchmarks.reproduce --only quantize align report

Needs the real data (``MEDMNIST_ROOT``) and, for VGG16, the ImageNet weights (``VGG16_WEIGHTS``
or Keras' download). On a 2-core CPU the whole pipeline takes hours; ``--epochs 1`` gives a
smoke run of the same code path.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from core import registry
from core.config import trained_models_dir
from core.experiments import ARMS, DEFAULT_SEEDS, staging_dir

STEPS = ("train", "promote", "quantize", "align", "report")
DEFAULT_QUANT_MODES = ("dynamic", "int8", "qat")


def _say(msg: str) -> None:
    print(msg, flush=True)


def _timed(name: str, fn: Callable[[], Any]) -> Any:
    _say(f"== {name} ==")
    start = time.perf_counter()
    result = fn()
    _say(f"== {name} done in {time.perf_counter() - start:.0f} s ==")
    return result


def step_train(
    arms: Sequence[str],
    seeds: Sequence[int],
    root: Path,
    epochs: int | None = None,
    fresh: bool = False,
) -> list[Path]:
    """Train every (seed, arm) into staging.

    Args:
        arms: Arm names from ``core.experiments.ARMS``.
        seeds: Seeds per arm.
        root: The registry (staging lives in ``<root>/.staging``).
        epochs: Override the maximum epochs (and drop ``min_epochs``) for a smoke run.
        fresh: Delete these arms' staged seeds first, so they retrain instead of resuming.
    """
    from core.experiments import run_arms

    if fresh:
        stage = staging_dir(root)
        for arm in arms:
            for seed in seeds:
                old = stage / f"{arm}-s{seed}"
                if old.is_dir():
                    _say(f"--fresh: removing staged {old.name}")
                    shutil.rmtree(old)
    overrides = {"epochs": epochs, "min_epochs": 0} if epochs else None
    return run_arms(arms, seeds, root=root, overrides=overrides)


def step_promote(arms: Sequence[str], root: Path) -> list[Path]:
    """Copy each arm's median-validation-AUC seed into the registry."""
    from core.experiments import promote

    return promote(arms, root=root)


def quantize_targets(root: Path, arms: Sequence[str] | None = None) -> list[Path]:
    """Run directories to quantize: the best reference run of each family by mean val AUC.

    Args:
        root: The registry.
        arms: Restrict to the families of these arms (the best of each such family is chosen
            among all its arms, so a partial rerun never quantizes a worse sibling).
    """
    from benchmarks.report import best_per_family, collect

    all_arms, _ = collect(root)
    best = best_per_family(all_arms.values())
    families = {all_arms[a].model for a in arms} if arms else set(best)
    return [best[f].path for f in sorted(best) if f in families and best[f].path is not None]


def _has_results(run: Path, modes: Sequence[str]) -> bool:
    results = registry.read_json(run / "quantized", "results.json") or {}
    done = results.get("modes") or {}
    return all((done.get(m) or {}).get("ok") for m in modes)


def step_quantize(
    root: Path,
    arms: Sequence[str] | None,
    modes: Sequence[str],
    qat_epochs: int = 1,
    force: bool = False,
) -> list[Path]:
    """Quantize each family's best run; skip runs whose results already hold every mode."""
    from core.quantize import quantize_run

    done = []
    for run in quantize_targets(root, arms):
        if not force and _has_results(run, modes):
            _say(f"skip quantize {run.name}: results.json already has {', '.join(modes)}")
            continue
        _say(f"quantize {run.name}: {', '.join(modes)}")
        lean = bool(registry.read_json(run, "config.json", {}).get("lean"))
        quantize_run(
            run,
            modes,
            qat_epochs=qat_epochs,
            # a lean (VGG16) run ships only its int8 file; the other modes are measured only
            ship_modes=("int8",) if lean else None,
            progress=lambda m: _say(f"  {m}"),
        )
        done.append(run)
    return done


def reference_runs(root: Path, arms: Sequence[str] | None = None) -> list[Path]:
    """Promoted reference runs of the given arms (default: all arms), in ARMS order."""
    runs = {r["config"].get("arm") or r["name"]: Path(r["path"]) for r in registry.list_runs(root)}
    return [runs[a] for a in (arms or ARMS) if a in runs]


def step_align(
    root: Path, arms: Sequence[str] | None, n: int = 100, force: bool = False
) -> list[Path]:
    """Grad-CAM alignment scores for every reference run (skips runs that have them)."""
    from core.explain import compute_alignment_run

    done = []
    for run in reference_runs(root, arms):
        if not force and (run / "explain.json").is_file():
            _say(f"skip align {run.name}: explain.json exists")
            continue
        _say(f"align {run.name} (n={n})")
        compute_alignment_run(run, n=n)
        done.append(run)
    return done


def step_report(root: Path, out: str | None, overlays: bool = True) -> Path:
    from benchmarks.report import DEFAULT_OUT, build_report

    target = Path(out) if out else DEFAULT_OUT
    build_report(root, target, overlays=overlays)
    _say(f"wrote {target}")
    return target


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.reproduce",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--only",
        nargs="+",
        choices=STEPS,
        default=list(STEPS),
        help="run only these steps (always in pipeline order)",
    )
    parser.add_argument(
        "--experiment",
        nargs="+",
        choices=list(ARMS),
        default=None,
        metavar="ARM",
        help=f"restrict to these arms: {', '.join(ARMS)}",
    )
    parser.add_argument("--seeds", nargs="+", type=int, default=list(DEFAULT_SEEDS))
    parser.add_argument(
        "--registry",
        default=None,
        help="model registry (default: TRAINED_MODELS_DIR or trained_models/)",
    )
    parser.add_argument(
        "--epochs",
        type=int,
        default=None,
        help="override max epochs (smoke runs; results are not comparable)",
    )
    parser.add_argument(
        "--fresh",
        action="store_true",
        help="retrain the selected arms/seeds instead of resuming from staging",
    )
    parser.add_argument("--float16", action="store_true", help="also quantize to float16")
    parser.add_argument("--qat-epochs", type=int, default=1)
    parser.add_argument("--align-n", type=int, default=100, help="test samples per alignment")
    parser.add_argument(
        "--force", action="store_true", help="redo quantization/alignment even where results exist"
    )
    parser.add_argument("--out", default=None, help="report file (default docs/RESULTS.md)")
    parser.add_argument(
        "--no-overlays", action="store_true", help="report without the Grad-CAM example figure"
    )
    args = parser.parse_args(argv)

    root = Path(args.registry) if args.registry else trained_models_dir()
    arms = args.experiment or list(ARMS)
    modes = list(DEFAULT_QUANT_MODES) + (["float16"] if args.float16 else [])
    only = set(args.only)
    _say(
        f"registry {root}; arms {', '.join(arms)}; seeds {args.seeds}; steps "
        f"{', '.join(s for s in STEPS if s in only)}"
    )
    if "train" in only:
        _timed("train", lambda: step_train(arms, args.seeds, root, args.epochs, args.fresh))
    if "promote" in only:
        _timed("promote", lambda: step_promote(arms, root))
    if "quantize" in only:
        _timed(
            "quantize",
            lambda: step_quantize(root, args.experiment, modes, args.qat_epochs, args.force),
        )
    if "align" in only:
        _timed("align", lambda: step_align(root, args.experiment, args.align_n, args.force))
    if "report" in only:
        _timed("report", lambda: step_report(root, args.out, overlays=not args.no_overlays))
    return 0


if __name__ == "__main__":
    sys.exit(main())
