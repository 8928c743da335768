"""CLI: ``python -m core.quantize RUN_DIR [--modes dynamic int8 ...]``.

Errors follow :mod:`core.cli`'s policy: one ``error:`` line and exit status 2.
"""

from __future__ import annotations

from collections.abc import Sequence

from core import cli
from core.quantize.compare import DEFAULT_MAX_FILE_BYTES, format_table, quantize_run
from core.quantize.convert import MODES


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: ``python -m core.quantize RUN_DIR [--modes dynamic int8 ...]``."""
    parser = cli.ArgumentParser(
        prog="python -m core.quantize", description="Quantize a trained run and compare the modes."
    )
    parser.add_argument("run_dir", help="run name in the registry, or path of a run directory")
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    parser.add_argument("--qat-epochs", type=cli.non_negative_int, default=1)
    parser.add_argument("--qat-train-samples", type=cli.positive_int, default=None)
    parser.add_argument("--max-file-bytes", type=cli.positive_int, default=DEFAULT_MAX_FILE_BYTES)
    args = parser.parse_args(argv)
    run = cli.check_run(args.run_dir)  # before minutes of converting
    result = quantize_run(
        run,
        args.modes,
        qat_epochs=args.qat_epochs,
        qat_train_samples=args.qat_train_samples,
        max_file_bytes=args.max_file_bytes,
        progress=lambda msg: print(msg, flush=True),
    )
    print(format_table(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(cli.run(main))
