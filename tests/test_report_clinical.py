"""benchmarks.report.sections_clinical on runs whose evaluation.json holds known clinical blocks."""

from __future__ import annotations

import numpy as np

from benchmarks.report.collect import Arm
from benchmarks.report.sections_clinical import section_clinical
from core import clinical, registry

GRADES = ["No DR", "Mild", "Moderate NPDR", "Severe NPDR", "Proliferative DR"]


def _arm(tmp_path, name, dataset, block):
    path = tmp_path / name
    path.mkdir()
    registry.write_json_atomic(path / "evaluation.json", {"auc": 0.7, "clinical": block})
    run = registry.Run(name=name, path=path, config={"dataset": dataset}, metrics={})
    return Arm(name, name, "x", dataset, "cnn2d", False, run=run)


def test_section_lists_kappa_referable_operating_point_and_warnings(tmp_path):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 5, (200, 1))
    p = rng.dirichlet(np.ones(5), 200)
    p[np.arange(200), y.ravel()] += 1.0
    p[:, 4] = 0.0  # never predicts grade 4: a warning
    p /= p.sum(1, keepdims=True)
    retina = clinical.clinical_report(y, p, "ordinal-regression", GRADES, "retinamnist", y, p)
    yb = rng.integers(0, 2, (100, 1))
    pb = np.c_[1 - yb.ravel() * 0.6 - 0.2, yb.ravel() * 0.6 + 0.2]
    adrenal = clinical.clinical_report(
        yb, pb, "binary-class", ["normal", "hyperplasia"], "adrenalmnist3d", yb, pb
    )
    arms = {
        "r": _arm(tmp_path, "r", "retinamnist", retina),
        "a": _arm(tmp_path, "a", "adrenalmnist3d", adrenal),
        "old": _arm(tmp_path, "old", "retinamnist", {}),  # evaluation.json before this issue
    }
    text = "\n".join(section_clinical(arms, None))
    row = next(line for line in text.splitlines() if line.startswith("| `r` |"))
    assert f"{retina['kappa_quadratic']:.3f}" in row
    assert f"{retina['referable']['auc']:.3f}" in row
    assert "Proliferative DR (0.00)" in row
    a_row = next(line for line in text.splitlines() if line.startswith("| `a` |"))
    assert "1.000 / 1.000" in a_row  # perfectly separated scores: Youden finds them on val
    assert "not run yet for `old`" in text
    assert "Decision-rule study not run yet" in text
