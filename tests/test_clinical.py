"""core.clinical and core.ordinal on synthetic data with answers worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from core import clinical, ordinal

GRADES = ["No DR", "Mild", "Moderate", "Severe", "Proliferative"]


def test_quadratic_kappa_known_values():
    # binary: agreement 3/4, chance agreement 0.5*0.25 + 0.5*0.75 = 0.5 → kappa 0.5
    assert clinical.quadratic_kappa([0, 0, 1, 1], [0, 1, 1, 1], 2) == pytest.approx(0.5)
    truth = np.array([0, 1, 2, 3, 4])
    assert clinical.quadratic_kappa(truth, truth, 5) == pytest.approx(1.0)
    assert clinical.quadratic_kappa(truth, truth[::-1], 5) == pytest.approx(-1.0)
    # quadratic weights: being off by two grades costs four times being off by one
    near = clinical.quadratic_kappa(truth, [1, 1, 2, 3, 4], 5)
    far = clinical.quadratic_kappa(truth, [2, 1, 2, 3, 4], 5)
    assert far < near < 1.0


def test_quadratic_kappa_matches_the_formula():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 5, 200)
    p = np.clip(y + rng.integers(-1, 2, 200), 0, 4)
    observed = np.zeros((5, 5))
    np.add.at(observed, (y, p), 1)
    expected = np.outer(observed.sum(1), observed.sum(0)) / observed.sum()
    w = (np.subtract.outer(np.arange(5), np.arange(5)) ** 2) / 16
    by_hand = 1 - (w * observed).sum() / (w * expected).sum()
    assert clinical.quadratic_kappa(y.reshape(-1, 1), p, 5) == pytest.approx(by_hand)


def test_per_class_rates_and_low_recall_warning():
    y = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2, 2])
    pred = np.array([0, 0, 1, 1, 1, 0, 2, 0, 0, 0])  # grade 2: 1 of 5 found
    rows = clinical.per_class_rates(y, pred, ["a", "b", "c"])
    assert rows[0] == {
        "label": "a",
        "support": 3,
        "predicted": 6,
        "sensitivity": pytest.approx(2 / 3),
        "specificity": pytest.approx(3 / 7),  # 4 of the 7 non-"a" samples were called "a"
    }
    assert rows[1]["sensitivity"] == 1.0 and rows[1]["specificity"] == pytest.approx(7 / 8)
    assert rows[2]["sensitivity"] == pytest.approx(0.2) and rows[2]["specificity"] == 1.0
    assert clinical.low_recall_warnings(rows) == []  # 0.2 is not below 0.2
    pred[6] = 1
    warned = clinical.low_recall_warnings(clinical.per_class_rates(y, pred, ["a", "b", "c"]))
    assert [w["label"] for w in warned] == ["c"]
    assert "found 0 of 5" in warned[0]["message"]


def test_sensitivity_at_90_specificity_known_curve():
    neg = np.arange(10) / 10  # 0.0 .. 0.9: one false alarm allowed at 90 % specificity
    pos = np.array([0.95, 0.85, 0.5, 0.05])
    y = np.r_[np.zeros(10), np.ones(4)]
    got = clinical.sensitivity_at_specificity(y, np.r_[neg, pos], 0.9)
    assert got["sensitivity"] == pytest.approx(0.5)  # 0.95 and 0.85 above the 0.9 negative
    assert got["specificity"] == pytest.approx(0.9)


def test_youden_threshold_chosen_on_val_applied_to_test():
    y_val = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    s_val = np.array([0.1, 0.2, 0.3, 0.6, 0.4, 0.7, 0.8, 0.9])
    # J is best (0.75) calling >= 0.4 or >= 0.7 positive; roc_curve's order takes 0.7 first,
    # and the threshold sits midway to the next lower validation score (0.6)
    thr = clinical.choose_threshold(y_val, s_val, "youden")
    assert thr == pytest.approx(0.65)
    op = clinical.operating_point(y_val, s_val, [0, 1, 1], [0.6, 0.64, 0.66])
    assert op["chosen_on"] == "val" and op["threshold"] == pytest.approx(thr)
    assert op["val"]["sensitivity"] == pytest.approx(0.75)
    assert op["val"]["specificity"] == pytest.approx(1.0)
    assert op["test"]["sensitivity"] == pytest.approx(0.5)
    assert op["test"]["specificity"] == pytest.approx(1.0)


def test_specificity_rule_keeps_the_target_on_val():
    rng = np.random.default_rng(1)
    y = (rng.random(500) < 0.3).astype(int)
    s = rng.normal(y * 1.5, 1.0)
    thr = clinical.choose_threshold(y, s, "specificity", 0.9)
    rates = clinical.rates_at(y, s, thr)
    assert rates["specificity"] >= 0.9
    # and no threshold keeping the target is more sensitive (brute force over every score)
    brute = max(
        r["sensitivity"]
        for r in (clinical.rates_at(y, s, t) for t in np.unique(s))
        if r["specificity"] >= 0.9
    )
    assert rates["sensitivity"] == pytest.approx(brute)
    with pytest.raises(ValueError, match="both classes"):
        clinical.choose_threshold(np.zeros(4), np.arange(4.0))
    with pytest.raises(ValueError, match="unknown operating rule"):
        clinical.choose_threshold(y, s, "f1")


def _grades_case(n: int = 300, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 5, n)
    z = -0.8 * (np.arange(5)[None, :] - y[:, None]) ** 2 + rng.normal(0, 0.8, (n, 5))
    p = np.exp(z)
    return y.reshape(-1, 1), p / p.sum(1, keepdims=True)


def test_referable_dr_uses_summed_probability_of_grades_two_and_up():
    from sklearn.metrics import roc_auc_score

    y, p = _grades_case()
    y_val, p_val = _grades_case(seed=1)
    ref = clinical.referable_metrics("retinamnist", y, p, y_val, p_val)
    truth = y.ravel() >= 2
    assert ref["first_grade"] == 2
    assert ref["prevalence"] == pytest.approx(truth.mean())
    assert ref["auc"] == pytest.approx(roc_auc_score(truth, p[:, 2:].sum(1)))
    op = ref["operating_point"]
    assert op["chosen_on"] == "val" and op["val"]["specificity"] >= 0.9
    assert clinical.referable_metrics("breastmnist", y, p) is None


def test_clinical_report_shapes_per_task():
    y, p = _grades_case()
    y_val, p_val = _grades_case(seed=2)
    block = clinical.clinical_report(
        y, p, "ordinal-regression", GRADES, "retinamnist", y_val, p_val
    )
    assert block["decision_rule"] == "argmax"
    assert block["kappa_quadratic"] == pytest.approx(clinical.quadratic_kappa(y, p.argmax(1), 5))
    assert [r["label"] for r in block["per_class"]] == GRADES
    assert "referable" in block and "operating_point" not in block
    rule = block["ordinal_rule"]
    assert rule["chosen_on"] == "val" and rule["rule"] in ("argmax", "expected", "cutpoints")
    if rule["rule"] == "argmax":  # the same decisions as the official rule
        assert rule["test"]["kappa_quadratic"] == pytest.approx(block["kappa_quadratic"])
    # a model that never predicts grade 4 gets a warning naming it
    p_no4 = p.copy()
    p_no4[:, 4] = 0.0
    warned = clinical.clinical_report(y, p_no4, "ordinal-regression", GRADES, "retinamnist")
    assert "Proliferative" in [w["label"] for w in warned["low_recall"]]

    rng = np.random.default_rng(3)
    yb = rng.integers(0, 2, (120, 1))
    sb = 1 / (1 + np.exp(-(2 * yb.ravel() - 1 + rng.normal(0, 1, 120))))
    pb = np.c_[1 - sb, sb]
    binary = clinical.clinical_report(yb, pb, "binary-class", ["n", "p"], "breastmnist", yb, pb)
    assert "kappa_quadratic" not in binary and "referable" not in binary
    op = binary["operating_point"]
    assert op["rule"] == "youden"
    # chosen and applied on the same data here, so val and test rates must agree
    assert op["val"] == op["test"]
    assert clinical.clinical_report(yb, pb, "multi-label, binary-class", ["a", "b"], "x") == {}
    assert any("kappa" in line for line in clinical.summary_lines(block))


def test_ordinal_rules_known_answers():
    p = np.array([[0.6, 0.0, 0.0, 0.0, 0.4], [0.1, 0.2, 0.4, 0.2, 0.1]])
    assert ordinal.expected_grade(p) == pytest.approx([1.6, 2.0])
    assert ordinal.predict_grades(p, "argmax").tolist() == [0, 2]
    assert ordinal.predict_grades(p, "expected").tolist() == [2, 2]
    assert ordinal.predict_grades(p, "cutpoints", [0.5, 1.7, 2.5, 3.5]).tolist() == [1, 2]
    with pytest.raises(ValueError, match="cut points"):
        ordinal.predict_grades(p, "cutpoints")
    with pytest.raises(ValueError, match="unknown decision rule"):
        ordinal.predict_grades(p, "median")


def test_fit_cutpoints_recovers_a_shifted_scale():
    # a model whose expected grade runs 0.6 grades high: the rounding rule is off by one for
    # many samples, fitted cut points move up by about 0.6 and recover the true grades
    rng = np.random.default_rng(0)
    y = rng.integers(0, 5, 400)
    e = np.clip(y + 0.6 + rng.uniform(-0.3, 0.3, 400), 0, 4)
    lo = np.floor(e).astype(int).clip(0, 3)
    p = np.zeros((400, 5))
    p[np.arange(400), lo] = 1 - (e - lo)
    p[np.arange(400), lo + 1] += e - lo
    assert ordinal.expected_grade(p) == pytest.approx(e)
    base = np.mean(ordinal.predict_grades(p, "expected") == y)
    cuts, acc = ordinal.fit_cutpoints(y, p)
    assert base < 0.6 and acc > 0.95
    assert np.all(np.diff(cuts) > 0)
    chosen = ordinal.choose_rule(y, p)
    assert chosen["rule"] == "cutpoints" and chosen["cutpoints_in_sample_acc"] == pytest.approx(acc)
    assert chosen["val_acc"]["cutpoints"] > 0.9  # a real shift survives cross-validation
    # argmax wins ties: one-hot probabilities give every rule the same accuracy
    onehot = np.eye(5)[y]
    assert ordinal.choose_rule(y, onehot)["rule"] == "argmax"


def test_cutpoints_fitted_to_noise_lose_to_argmax_under_cross_validation():
    # probabilities unrelated to the grade except through argmax: in-sample cut points gain
    # accuracy by chance on 120 cases, cross-validation shows they do not generalise
    rng = np.random.default_rng(5)
    y = rng.integers(0, 5, 120)
    p = rng.dirichlet(np.ones(5), 120)
    p[np.arange(120), y] += 0.6 * (rng.random(120) < 0.5)
    p /= p.sum(1, keepdims=True)
    chosen = ordinal.choose_rule(y, p)
    assert chosen["cutpoints_in_sample_acc"] > chosen["val_acc"]["cutpoints"]
    assert chosen["rule"] == "argmax"


def test_decision_by_rule_binary_operating_point_and_ordinal_cut_points():
    labels = ["normal", "hyperplasia"]
    block = {"operating_point": {"threshold": 0.09, "rule": "youden", "chosen_on": "val"}}
    call, text = clinical.decision_by_rule(block, np.array([0.85, 0.15]), labels)
    assert call == 1 and "hyperplasia when its uncalibrated probability is 9.0% or more" in text
    assert "sensitivity + specificity" in text
    assert clinical.decision_by_rule(block, np.array([0.95, 0.05]), labels)[0] == 0
    assert clinical.decision_by_rule(block, np.array([0.91, 0.09]), labels)[0] == 1  # >= cut
    # no stored rule, or argmax: nothing to add beside the prediction
    assert clinical.decision_by_rule({}, np.array([0.3, 0.7]), labels) is None
    assert clinical.decision_by_rule(None, np.array([0.3, 0.7]), labels) is None
    argmax = {"ordinal_rule": {"rule": "argmax"}}
    assert clinical.decision_by_rule(argmax, np.full(5, 0.2), list("abcde")) is None
    # an ordinal rule gives the same grade as core.ordinal on the raw output
    raw = np.array([0.1, 0.1, 0.2, 0.3, 0.3])
    rule = {"ordinal_rule": {"rule": "expected"}}
    grade, name = clinical.decision_by_rule(rule, raw, list("abcde"))
    assert grade == int(ordinal.predict_grades(raw[None], "expected", None)[0])
    assert name == "expected grade"


def test_shipped_cnn3d_operating_point_calls_the_cases_argmax_misses():
    """The shipped AdrenalMNIST3D model calls 296 of 298 test volumes normal at argmax
    (hyperplasia recall 0.03); its val-chosen threshold is what the app shows beside it."""
    import json
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "trained_models" / "cnn3d" / "evaluation.json"
    block = json.loads(path.read_text())["clinical"]
    op = block["operating_point"]
    assert op["chosen_on"] == "val" and 0 < op["threshold"] < 0.5
    labels = ["normal", "hyperplasia"]
    just_above = np.array([1 - op["threshold"], op["threshold"]])
    assert np.argmax(just_above) == 0
    assert clinical.decision_by_rule(block, just_above, labels)[0] == 1
