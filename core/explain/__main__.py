"""CLI: ``python -m core.explain RUN [--n 64] [--steps 10]`` rates explanations (explain.json)."""

from __future__ import annotations

from collections.abc import Sequence

from core import cli
from core.explain.evaluation import evaluate_run, refresh_run


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: ``python -m core.explain RUN_DIR`` rates every explanation method of a run on val and
    test (deletion/insertion vs smooth-random, ROAD, randomization sanity check, anatomy),
    chooses the default on val and writes ``<run>/explain.json``."""
    parser = cli.ArgumentParser(prog="python -m core.explain", description=main.__doc__)
    parser.add_argument("run_dir", help="run name in the registry, or path of a run directory")
    parser.add_argument(
        "--n", type=cli.positive_int, default=64, help="test samples (goals need >= 64)"
    )
    parser.add_argument(
        "--n-val", type=cli.positive_int, default=32, help="validation samples (rank candidates)"
    )
    parser.add_argument("--steps", type=cli.positive_int, default=10, help="curve steps")
    parser.add_argument("--seed", type=int, default=0, help="seed of subsets and baselines")
    parser.add_argument(
        "--methods", nargs="*", default=None, help="only these methods (default: all)"
    )
    parser.add_argument("--no-road", action="store_true", help="skip ROAD (slow on volumes)")
    parser.add_argument(
        "--refresh",
        action="store_true",
        help="re-choose the default and rewrite the verdict from the stored explain.json "
        "(after a change to the selection rule; no map is recomputed)",
    )
    args = parser.parse_args(argv)
    run = cli.check_run(args.run_dir)  # before minutes of saliency maps
    if args.refresh:
        result = refresh_run(run)
    else:
        result = evaluate_run(
            run,
            n=args.n,
            n_val=args.n_val,
            steps=args.steps,
            seed=args.seed,
            methods=args.methods,
            road=not args.no_road,
        )
    print(f"default: {result['default_method']} {result['default_layer'] or ''}")
    print(f"faithful: {result['faithful']}")
    print(f"verdict: {result['verdict']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(cli.run(main))
