"""Report section: the clinical metrics of every shipped run (``evaluation.json["clinical"]``)
and the ordinal decision-rule study (``docs/results/decision_rules.json``).

Every threshold and rule named here was chosen on the validation split; the test columns only
apply it. A run whose ``evaluation.json`` predates the clinical metrics is listed as not run,
with the command that adds them.
"""

from __future__ import annotations

from typing import Any

from benchmarks.report.collect import Arm
from benchmarks.report.markdown import NOT_RUN, _f, md_table
from core import info

REGENERATE = "`python -m core.evaluate RUN --write-clinical`"


def _clinical(arm: Arm) -> dict[str, Any] | None:
    ev = arm.json("evaluation.json") if arm.ran else None
    block = ev.get("clinical") if isinstance(ev, dict) else None
    return block if isinstance(block, dict) and block.get("per_class") else None


def _rates(op: dict[str, Any] | None, split: str = "test") -> tuple[str, str]:
    r = (op or {}).get(split) or {}
    return _f(r.get("sensitivity"), 3), _f(r.get("specificity"), 3)


def _per_class_cells(block: dict[str, Any], flag: str) -> list[str]:
    return [
        f"{_f(r.get('sensitivity'), 2)} / {_f(r.get('specificity'), 2)}" for r in block["per_class"]
    ]


def _warnings(block: dict[str, Any], flag: str) -> str:
    low = block.get("low_recall") or []
    return (
        ", ".join(f"{info.display_label(flag, w['label'])} ({w['recall']:.2f})" for w in low)
        or "none"
    )


def section_clinical(arms: dict[str, Arm], rules_study: dict[str, Any] | None) -> list[str]:
    """Kappa, referable DR, per-class sensitivity/specificity, operating points, warnings."""
    lines = [
        "From each shipped run's `evaluation.json` (`clinical` key, written by "
        f"{REGENERATE}; `core/clinical.py`). Decision rule: argmax (the official MedMNIST "
        "rule). **Quadratic weighted kappa**: agreement with the true DR grade beyond chance, "
        "where a miss by two grades costs four times a miss by one (1 = perfect, 0 = chance). "
        "**Referable DR**: grade ≥ 2 (moderate non-proliferative DR or worse), scored by "
        "P(grade ≥ 2), the summed probability of grades 2-4. *Sensitivity at 90 % "
        "specificity* is read off the test ROC curve (a curve summary); the *referral "
        "threshold* is chosen on **val** for ≥ 90 % specificity and then applied to test. "
        "Warnings list classes with test recall below 0.2.",
        "",
    ]
    ordinal_rows, binary_rows, class_rows = [], [], []
    missing = []
    for arm in arms.values():
        block = _clinical(arm)
        if block is None:
            if arm.ran:
                missing.append(f"`{arm.name}`")
            continue
        flag = arm.dataset
        if "kappa_quadratic" in block:
            ref = block.get("referable") or {}
            op = ref.get("operating_point")
            sens, spec = _rates(op)
            ordinal_rows.append(
                [
                    f"`{arm.name}`",
                    _f(block["kappa_quadratic"], 3),
                    _f(ref.get("auc"), 3),
                    _f((ref.get("sens_at_spec90") or {}).get("sensitivity"), 3),
                    _f((op or {}).get("threshold"), 3),
                    sens,
                    spec,
                    _warnings(block, flag),
                ]
            )
        op = block.get("operating_point")
        if op:
            sens, spec = _rates(op)
            vsens, vspec = _rates(op, "val")
            binary_rows.append(
                [
                    f"`{arm.name}`",
                    info.dataset_info(flag).get("python_class", flag),
                    _f(op.get("threshold"), 3),
                    f"{vsens} / {vspec}",
                    f"{sens} / {spec}",
                    _warnings(block, flag),
                ]
            )
        class_rows.append((flag, [f"`{arm.name}`", *_per_class_cells(block, flag)]))
    if ordinal_rows:
        lines += ["RetinaMNIST (ordinal DR grades 0-4), test split:", ""]
        lines += md_table(
            [
                "Run",
                "Quadratic kappa",
                "Referable DR AUC",
                "Sens. at 90 % spec. (test ROC)",
                "Referral threshold (val)",
                "Test sens.",
                "Test spec.",
                "Recall < 0.2",
            ],
            ordinal_rows,
        )
    if binary_rows:
        lines += [
            "Binary tasks: operating point = the probability threshold maximising Youden's J "
            "(sensitivity + specificity - 1) on **val**, applied to test:",
            "",
        ]
        lines += md_table(
            [
                "Run",
                "Dataset",
                "Threshold",
                "Val sens. / spec.",
                "Test sens. / spec.",
                "Recall < 0.2 (at 0.5)",
            ],
            binary_rows,
        )
    for flag in sorted({f for f, _ in class_rows}):
        names = [info.display_label(flag, n) for n in info.label_names(flag)]
        lines += [
            f"Per-class sensitivity / specificity (one-vs-rest, argmax), {flag} test split:",
            "",
        ]
        lines += md_table(["Run", *names], [row for f, row in class_rows if f == flag])
    if missing:
        lines += [
            f"Clinical metrics {NOT_RUN} for {', '.join(missing)}: run {REGENERATE}.",
            "",
        ]
    lines += section_decision_rules(rules_study)
    return lines


def section_decision_rules(study: dict[str, Any] | None) -> list[str]:
    """Why ACC lags AUC: predicted grade counts, confidence vs accuracy, three decision rules."""
    lines = ["### ACC vs AUC: class balance, calibration and the decision rule", ""]
    runs = (study or {}).get("runs") or []
    if not runs:
        return lines + [
            f"Decision-rule study {NOT_RUN}: `python -m benchmarks.decision_rules`.",
            "",
        ]
    lines += [
        "`python -m benchmarks.decision_rules` (`docs/results/decision_rules.json`): on each "
        "shipped RetinaMNIST model, the grade counts its argmax predicts on test against the "
        "true counts, its mean top-label confidence against its accuracy (raw softmax, "
        "15-bin ECE), and ACC / quadratic kappa under three rules: argmax, the rounded "
        "expected grade Σ k·p_k, and cut points on the expected grade fitted on **val**. "
        "The fitted cut points are also scored by 5-fold cross-validation *within* val "
        "(10 repeats), because scoring them on the 120 images they were fitted on flatters "
        "them; the rule column is the one `core.ordinal.choose_rule` picks on those val "
        "accuracies (argmax on ties).",
        "",
    ]
    rows = []
    for s in runs:
        t = s["counts"]["test"]
        cal = s["calibration"]["test"]
        r = s["rules"]
        rows.append(
            [
                f"`{s['run']}`",
                " ".join(str(c) for c in t["argmax"]),
                f"{cal['mean_confidence']:.3f} / {cal['accuracy']:.3f} ({cal['ece15']:.3f})",
                *(
                    f"{r[k]['val']['acc']:.3f} → {r[k]['test']['acc']:.3f} "
                    f"(κ {r[k]['test']['kappa']:.3f})"
                    for k in ("argmax", "expected", "cutpoints")
                ),
                _f(s.get("cutpoints_val_cv_acc"), 3),
                s["chosen_rule"],
            ]
        )
    changed = [s for s in runs if s["chosen_rule"] != "argmax"]
    if changed:
        moves = ", ".join(
            f"`{s['run']}` {s['rules']['argmax']['test']['acc']:.3f} → "
            f"{s['rules'][s['chosen_rule']]['test']['acc']:.3f} ({s['chosen_rule']})"
            for s in changed
        )
        kept = [f"`{s['run']}`" for s in runs if s["chosen_rule"] == "argmax"]
        lines += [
            "Where val picks a rule other than argmax, test ACC moves: "
            + moves
            + (f"; argmax stays for {', '.join(kept)}." if kept else ".")
            + " The official ACC columns elsewhere in this report stay argmax (the MedMNIST "
            "rule); the val-chosen rule is stored per run in `evaluation.json` "
            "(`clinical.ordinal_rule`).",
            "",
        ]
    true_counts = " ".join(str(c) for c in runs[0]["counts"]["test"]["true"])
    lines += md_table(
        [
            "Run",
            f"Test argmax counts (true: {true_counts})",
            "Test confidence / ACC (ECE)",
            "argmax val → test ACC",
            "expected grade",
            "cut points (val)",
            "Cut points, val CV ACC",
            "Rule on val",
        ],
        rows,
    )
    return lines
