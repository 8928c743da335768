"""CLI: ``python -m core.explain RUN [--n 100] [--steps 10]`` writes the run's explain.json."""

from __future__ import annotations

import json
from collections.abc import Sequence

from core import cli
from core.explain.alignment import compute_alignment_run


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: ``python -m core.explain RUN_DIR [--n 100]`` writes the run's explain.json."""
    parser = cli.ArgumentParser(prog="python -m core.explain", description=main.__doc__)
    parser.add_argument("run_dir", help="run name in the registry, or path of a run directory")
    parser.add_argument("--n", type=cli.positive_int, default=100, help="test samples to explain")
    parser.add_argument("--steps", type=cli.positive_int, default=10, help="deletion-curve steps")
    args = parser.parse_args(argv)
    run = cli.check_run(args.run_dir)  # before minutes of saliency maps
    result = compute_alignment_run(run, n=args.n, steps=args.steps)
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(cli.run(main))
