"""``python -m core.trust RUN_DIR [RUN_DIR ...]`` fits and writes each run's calibration.json;
``python -m core.trust ensemble --dataset FLAG --name NAME`` builds an ensemble folder from the
registry's runs (members chosen on val, or fixed with ``--members A B C``) and fits it.
"""

from __future__ import annotations

import sys

from core import cli


def _summary(res: dict) -> str:
    cal = res["calibration"]
    ood = res["ood"]
    ref = res["refer"]["test"]
    return (
        f"{res['run']}: {res.get('calibrator', 'temperature')} T={res['temperature']:.3f}"
        f" test ECE {cal['test']['raw']['ece']:.3f}"
        f" -> {cal['test']['scaled']['ece']:.3f} (bound {cal['test_ece_bound_95']:.3f}); "
        f"test AUC {res['metrics']['test']['auc']:.4f} ACC {res['metrics']['test']['acc']:.4f}; "
        f"refer: acc {ref['accuracy']:.3f} at coverage {ref['coverage']:.2f}; OOD {ood['detector']}"
        f" in-dist flagged {ood['test'][ood['detector']]['in_distribution_flagged']:.3f}, "
        + ", ".join(
            f"{k} {v['flagged']:.2f}" for k, v in ood["test"][ood["detector"]]["foreign"].items()
        )
    )


def main(argv: list[str] | None = None) -> int:
    """Parse arguments and fit; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    from core.trust import fit

    if argv[:1] == ["ensemble"]:
        ap = cli.ArgumentParser(prog="python -m core.trust ensemble")
        ap.add_argument("--dataset", required=True)
        ap.add_argument("--name", required=True)
        ap.add_argument("--root", default=None)
        ap.add_argument("--max-members", type=int, default=8)
        ap.add_argument(
            "--members",
            nargs="+",
            default=None,
            help="fixed members, e.g. every seed of one arm (default: chosen greedily on val)",
        )
        args = ap.parse_args(argv[1:])
        path = fit.build_ensemble(
            args.dataset,
            args.name,
            args.root,
            max_members=args.max_members,
            members=args.members,
        )
        print(_summary(fit.fit(path, args.root)))
        print(path)
        return 0
    ap = cli.ArgumentParser(prog="python -m core.trust", description=__doc__)
    ap.add_argument("runs", nargs="+", help="run or ensemble names or paths")
    ap.add_argument("--root", default=None)
    ap.add_argument("--target-accuracy", type=float, default=None)
    args = ap.parse_args(argv)
    for run in args.runs:
        print(_summary(fit.fit(run, args.root, target_accuracy=args.target_accuracy)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(cli.run(main))
