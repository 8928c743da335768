"""Why does a RetinaMNIST model's ACC lag its AUC? Class balance, calibration, decision rule.

For every shipped RetinaMNIST reference run this prints, on the val and test splits:

* the true and the predicted (argmax) grade counts: a model can rank well (AUC) and still put
  most cases in one or two grades;
* the mean top-label confidence beside the accuracy and a 15-bin top-label ECE (a quick
  look; ``core.trust`` owns the calibration that ships);
* ACC and quadratic weighted kappa under three decision rules of ``core.ordinal``: argmax
  (official MedMNIST), the rounded expected grade, and cut points on the expected grade
  fitted on **val**; the rule ``core.ordinal.choose_rule`` picks on val accuracy.

Figures go to ``docs/results/decision_rules.json`` for the report.

    python -m benchmarks.decision_rules [--runs vgg16_ft2 resnet ...]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from core import clinical, ordinal, registry

OUT = Path(__file__).resolve().parents[1] / "docs" / "results" / "decision_rules.json"


def top_label_ece(y: np.ndarray, scores: np.ndarray, bins: int = 15) -> float:
    """Top-label expected calibration error with equal-width confidence bins."""
    conf = scores.max(axis=1)
    hit = scores.argmax(axis=1) == y
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(conf, edges[1:-1]), 0, bins - 1)
    ece = 0.0
    for b in range(bins):
        m = which == b
        if m.any():
            ece += m.mean() * abs(hit[m].mean() - conf[m].mean())
    return float(ece)


def study(name: str, scores: dict[str, tuple[np.ndarray, np.ndarray]]) -> dict[str, Any]:
    """Every figure of the module docstring for one run's val/test labels and scores."""
    (y_val, p_val), (y_test, p_test) = scores["val"], scores["test"]
    y_val, y_test = y_val.ravel(), y_test.ravel()
    k = p_test.shape[1]
    chosen = ordinal.choose_rule(y_val, p_val)
    cuts, _ = ordinal.fit_cutpoints(y_val, p_val)
    out: dict[str, Any] = {
        "run": name,
        "chosen_rule": chosen["rule"],
        "cuts": cuts,
        "cutpoints_val_cv_acc": chosen["val_acc"]["cutpoints"],
        "counts": {},
        "calibration": {},
        "rules": {},
    }
    for split, y, p in (("val", y_val, p_val), ("test", y_test, p_test)):
        out["counts"][split] = {
            "true": np.bincount(y, minlength=k).tolist(),
            "argmax": np.bincount(p.argmax(1), minlength=k).tolist(),
            "cutpoints": np.bincount(ordinal.predict_grades(p, "cutpoints", cuts), minlength=k)
            .astype(int)
            .tolist(),
        }
        out["calibration"][split] = {
            "mean_confidence": float(p.max(1).mean()),
            "accuracy": float((p.argmax(1) == y).mean()),
            "ece15": top_label_ece(y, p),
        }
        for rule in ordinal.RULES:
            pred = ordinal.predict_grades(p, rule, cuts)
            out["rules"].setdefault(rule, {})[split] = {
                "acc": float((pred == y).mean()),
                "kappa": clinical.quadratic_kappa(y, pred, k),
            }
    return out


def print_study(s: dict[str, Any]) -> None:
    print(f"\n== {s['run']} (rule chosen on val: {s['chosen_rule']}) ==")
    for split in ("val", "test"):
        c, cal = s["counts"][split], s["calibration"][split]
        print(f"  {split:4s} true {c['true']}  argmax {c['argmax']}  cutpoints {c['cutpoints']}")
        print(
            f"       confidence {cal['mean_confidence']:.3f} vs accuracy {cal['accuracy']:.3f},"
            f" ECE15 {cal['ece15']:.3f}"
        )
    for rule, r in s["rules"].items():
        print(
            f"  {rule:9s} val ACC {r['val']['acc']:.3f} kappa {r['val']['kappa']:.3f} | "
            f"test ACC {r['test']['acc']:.3f} kappa {r['test']['kappa']:.3f}"
        )
    print(
        f"  cut points (val): {[round(c, 3) for c in s['cuts']]}; cross-validated within val: "
        f"ACC {s['cutpoints_val_cv_acc']:.3f}"
    )


def _scores(name: str, cache: Path | None, compute: Any) -> dict[str, Any]:
    file = cache / f"{name}.npz" if cache else None
    if file is not None and file.is_file():
        z = np.load(file)
        return {s: (z[f"{s}_y"], z[f"{s}_p"]) for s in ("val", "test")}
    out = compute(name)
    if file is not None:
        file.parent.mkdir(parents=True, exist_ok=True)
        np.savez(
            file, **{f"{s}_{k}": v for s, (y, p) in out.items() for k, v in (("y", y), ("p", p))}
        )
    return out


def main(argv: Sequence[str] | None = None) -> int:
    from core.evaluate import split_scores

    p = argparse.ArgumentParser(prog="python -m benchmarks.decision_rules", description=__doc__)
    p.add_argument("--runs", nargs="+", default=None, help="run names (default: all retina)")
    p.add_argument("--out", default=str(OUT))
    p.add_argument("--cache", default=None, help="folder for per-run score files (reruns skip TF)")
    args = p.parse_args(argv)
    names = args.runs or [
        r.name
        for r in registry.runs()
        if r.config.get("dataset") == "retinamnist" and r.config.get("arm")
    ]
    studies = []
    for name in names:
        s = study(name, _scores(name, Path(args.cache) if args.cache else None, split_scores))
        print_study(s)
        studies.append(s)
    Path(args.out).write_text(json.dumps({"runs": studies}, indent=2) + "\n")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
