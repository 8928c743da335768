"""``python -m core.train``: train, evaluate and save one run; the last line is the run dir."""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
from collections.abc import Sequence

from core import cli
from core.config import LR_SCHEDULES, MODEL_FAMILIES, TrainConfig

# TrainConfig fields whose command-line flag is not ``--<field with dashes>``
_FLAG_OF_FIELD = {"learning_rate": "--lr"}


def build_parser() -> argparse.ArgumentParser:
    p = cli.ArgumentParser(prog="python -m core.train", description=__doc__)
    p.add_argument("--dataset", required=True, help="MedMNIST flag, e.g. retinamnist")
    p.add_argument("--model", required=True, choices=MODEL_FAMILIES)
    p.add_argument("--size", type=int, default=28, help="image size of the data file")
    p.add_argument("--augment", action=argparse.BooleanOptionalAction, default=False)
    p.add_argument("--fine-tune-blocks", type=int, default=0, help="VGG16: trainable last blocks")
    p.add_argument("--input-size", type=int, default=None, help="VGG16: in-graph input side")
    p.add_argument("--epochs", type=int, default=50)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", "--learning-rate", dest="learning_rate", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--patience", type=int, default=10)
    p.add_argument("--min-epochs", type=int, default=0)
    p.add_argument("--lr-schedule", choices=LR_SCHEDULES, default="plateau")
    p.add_argument("--class-weights", action=argparse.BooleanOptionalAction, default=False)
    p.add_argument(
        "--label-smoothing", type=float, default=0.0, help="single-label tasks: e.g. 0.1"
    )
    p.add_argument(
        "--weight-ema",
        type=float,
        default=0.0,
        help="momentum of a moving average of the weights, scored and saved (e.g. 0.99; 0 = off)",
    )
    p.add_argument("--strategy", choices=("default", "mirrored", "multiworker"), default="default")
    p.add_argument("--name", default=None, help="run directory name (default: generated)")
    p.add_argument(
        "--output",
        default=None,
        help="registry folder (default: TRAINED_MODELS_DIR or trained_models/)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def _flag_error(exc: ValueError) -> cli.CLIError:
    """A ``TrainConfig.validate`` error, worded for the command line: which flag to change.

    ``validate`` names config fields (``epochs=-1 is invalid: …``) because the app and the job
    queue share it; a command-line user needs the flag (``--epochs``).
    """
    text = str(exc)
    field = re.match(r"(\w+)=", text)
    if field and field.group(1) in TrainConfig.__dataclass_fields__:
        name = field.group(1)
        flag = _FLAG_OF_FIELD.get(name, "--" + name.replace("_", "-"))
        return cli.CLIError(f"{text.rstrip('.')} (flag {flag}): change it and run again")
    return cli.CLIError(f"{text.rstrip('.')}: change the flags and run again")


def main(argv: Sequence[str] | None = None) -> int:
    """Train one run from command-line flags and print its val/test metrics and directory.

    Args:
        argv: the command-line arguments (default ``sys.argv[1:]``).

    Returns:
        0 after a saved run.

    Raises:
        core.cli.CLIError: an invalid flag value, or a run name that is taken.
        core.data.DataError: the dataset file is missing and cannot be downloaded.
        core.training.TrainingDiverged: the loss became NaN (nothing is saved).
    """
    args = build_parser().parse_args(argv)
    cfg = TrainConfig(
        dataset=args.dataset,
        model=args.model,
        size=args.size,
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        augment=args.augment,
        fine_tune_blocks=args.fine_tune_blocks,
        seed=args.seed,
        patience=args.patience,
        min_epochs=args.min_epochs,
        lr_schedule=args.lr_schedule,
        class_weights=args.class_weights,
        label_smoothing=args.label_smoothing,
        weight_ema=args.weight_ema,
        input_size=args.input_size,
        name=args.name,
    )
    try:
        cfg.validate()
    except ValueError as exc:
        raise _flag_error(exc) from exc

    from tqdm import tqdm

    from core import data, registry, training

    # a save killed mid-way (kill -9) leaves a scratch folder; those of live saves are kept
    for leftover in registry.clean_scratch(args.output):
        print(f"note: removed {leftover}, left by an interrupted save", file=sys.stderr)
    if cfg.name and (registry.root_dir(args.output) / cfg.name).exists():
        raise cli.CLIError(
            f"run {cfg.name!r} already exists in {registry.root_dir(args.output)}; "
            "choose another --name"
        )
    # a user with internet gets a missing file downloaded (MD5-checked), as jobs do
    data.ensure_file(cfg.dataset, cfg.size, download=True)

    callbacks = []
    bar = None
    if not args.no_progress:
        bar = tqdm(
            total=cfg.epochs, desc=f"{cfg.model} on {cfg.dataset}", unit="epoch", file=sys.stderr
        )

        def on_epoch(p: dict) -> None:
            bar.update(1)
            bar.set_postfix(
                loss=f"{p.get('loss', float('nan')):.4f}",
                val_auc=f"{p.get('val_auc', float('nan')):.4f}",
            )

        callbacks.append(training.ProgressCallback(on_epoch, cfg.epochs))
    try:
        strategy = training.get_strategy(args.strategy)
        if not training.is_chief(strategy):
            # a non-chief multi-worker process trains and saves like the chief (its collective
            # ops must take part), but into a scratch folder that is deleted: one run per job
            with tempfile.TemporaryDirectory(prefix="non-chief-") as scratch:
                training.run(cfg, output_root=scratch, callbacks=callbacks, strategy=strategy)
            print("non-chief worker finished; the chief saved the run")
            return 0
        run_dir = training.run(cfg, output_root=args.output, callbacks=callbacks, strategy=strategy)
    finally:
        if bar is not None:
            bar.close()

    metrics = registry.read_json(run_dir, "metrics.json")
    print(f"val  AUC {metrics['val']['auc']:.4f}  ACC {metrics['val']['acc']:.4f}")
    print(f"test AUC {metrics['test']['auc']:.4f}  ACC {metrics['test']['acc']:.4f}")
    print(run_dir)
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
