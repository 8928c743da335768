"""core.results: the one mean ± std over seeds (ddof=1), Welch differences, the app's run tables."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from core import results

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    "values", [[0.70, 0.72, 0.74], [0.5, 0.9], [0.61, 0.64, 0.58, 0.7, 0.66], [1.0, 1.0, 1.0]]
)
def test_mean_std_is_numpys_sample_std(values):
    mean, std = results.mean_std(values)
    assert mean == pytest.approx(np.mean(values))
    assert std == pytest.approx(np.std(values, ddof=1))  # the sample std, as RESULTS.md says
    assert std != pytest.approx(np.std(values)) or np.std(values) == 0


def test_mean_std_edge_cases():
    assert results.mean_std([0.8]) == (0.8, 0.0)  # one seed: no spread to measure
    mean, std = results.mean_std([])
    assert math.isnan(mean) and std == 0.0
    mean, std = results.mean_std(iter([1.0, 3.0]))  # any iterable, e.g. a generator
    assert (mean, std) == (2.0, pytest.approx(math.sqrt(2)))


def test_stat_ignores_missing_values_and_formats():
    s = results.stat([0.70, None, 0.72, float("nan"), 0.74])
    assert s.n == 3
    assert (s.mean, s.std) == (pytest.approx(0.72), pytest.approx(0.02))
    assert s.fmt() == "0.7200 ± 0.0200"
    assert results.stat([0.5]).fmt(3) == "0.500 (1 seed)"
    assert results.stat([None, float("inf")]) is None


def test_welch_difference():
    a, b = results.stat([0.80, 0.81, 0.82]), results.stat([0.70, 0.72, 0.74])
    d = results.difference(a, b)
    assert d.diff == pytest.approx(0.09)
    assert d.se == pytest.approx(math.sqrt(0.01**2 / 3 + 0.02**2 / 3))
    assert d.t == pytest.approx(d.diff / d.se)
    assert d.within_noise is False and "beyond noise" in d.describe()
    close = results.difference(b, results.stat([0.69, 0.71, 0.73]))
    assert close.within_noise is True and "within noise" in close.describe()
    one_seed = results.difference(results.stat([0.8]), b)
    assert one_seed.se is None and one_seed.within_noise is None and one_seed.t is None
    assert "spread unknown" in one_seed.describe()


def test_standard_errors():
    assert results.binomial_se(0.5, 400) == pytest.approx(0.025)
    assert results.binomial_se(0.5, 0) == pytest.approx(0.5)  # no division by zero
    # RetinaMNIST has 400 test images: worst case p = 0.5
    assert results.acc_standard_error("retinamnist") == pytest.approx(0.025)


def test_mean_std_text():
    group = {"n": 3, "auc_mean": 0.7123, "auc_std": 0.0104}
    assert results.mean_std_text(group, "auc") == "0.712 ± 0.010"
    assert results.mean_std_text({**group, "n": 1}, "auc") == "0.712 (1 seed)"


def test_outcome_table_single_and_multi_label():
    probs = np.array([[0.1, 0.9], [0.7, 0.3], [0.4, 0.6]])
    out = results.outcome_table(np.array([[1], [1], [1]]), probs, "multi-class")
    assert out["pred"].tolist() == [1, 0, 1]
    assert out["correct"].tolist() == [True, False, True]
    assert out["p_true"] == pytest.approx([0.9, 0.3, 0.6])
    assert out["confidence"] == pytest.approx([0.9, 0.7, 0.6])
    multi = results.outcome_table(np.array([[1, 0]]), np.array([[0.8, 0.4]]), "multi-label, binary")
    assert multi["pred"].tolist() == [1] and multi["correct"].tolist() == [True]
    assert multi["p_true"] == pytest.approx([0.7])


def test_group_runs_uses_the_shared_mean_std():
    def run(name, seed, auc):
        cfg = {"dataset": "breastmnist", "model": "cnn2d", "augment": False, "size": 28}
        return {"name": name, "config": cfg, "metrics": {"seed": seed, "test": {"auc": auc}}}

    runs = [run("a", 0, 0.8), run("b", 1, 0.9), run("c", 2, 0.85)]
    (group,) = results.group_runs(runs, "breastmnist")
    assert group["label"] == "cnn2d · aug off" and group["n"] == 3
    assert (group["auc_mean"], group["auc_std"]) == results.mean_std([0.8, 0.9, 0.85])
    assert math.isnan(group["acc_mean"]) and group["acc_std"] == 0.0  # no ACC recorded
    # a seed listed in another run's metrics is counted once
    shared = {**runs[0], "metrics": {"seeds": [{"seed": 0, "run": "a", "test": {"auc": 0.8}}]}}
    (group,) = results.group_runs([runs[0], shared], "breastmnist")
    assert group["n"] == 1


def test_experiment_summary_uses_the_shared_mean_std():
    from core.experiments import summarize

    seeds = [
        {"val": {"auc": v, "acc": v / 2}, "test": {"auc": t, "acc": t / 2}}
        for v, t in ((0.7, 0.71), (0.8, 0.75), (0.75, 0.8))
    ]
    s = summarize(seeds)
    assert s["n_seeds"] == 3
    assert (s["test_auc_mean"], s["test_auc_std"]) == results.mean_std([0.71, 0.75, 0.8])
    assert s["val_acc_std"] == pytest.approx(np.std([0.35, 0.4, 0.375], ddof=1))


def test_quantized_rows_float_then_modes():
    data = {
        "float": {"size_bytes": 100, "test": {"auc": 0.9, "acc": 0.8}, "latency_ms": 2.0},
        "modes": {
            "int8": {"size_bytes": 30, "test": {"auc": 0.88, "acc": 0.79}, "notes": ["a", "b"]},
            "qat": {"error": "boom", "notes": ["c"]},
            "junk": "not a dict",
        },
    }
    rows = results.quantized_rows(data)
    assert [r["mode"] for r in rows] == ["float", "int8", "qat"]
    assert rows[0]["agreement"] == 1.0 and rows[0]["notes"] == ""
    assert rows[1]["auc"] == 0.88 and rows[1]["float_latency_ms"] == 2.0
    assert rows[1]["notes"] == "a; b"
    assert rows[2]["notes"] == "failed: boom; c"
    assert results.quantized_rows(None) == [] and results.quantized_rows([1]) == []


def test_alignment_rows():
    stored = {"gradcam": {"n": 10, "energy_over_area": 1.3}, "gradcam++": None}
    (row,) = results.alignment_rows(stored)
    assert row["method"] == "Grad-CAM" and row["samples"] == 10 and row["ratio"] == 1.3


def test_app_uses_core_results_tables():
    """The app shows the same numbers as the report: pages import core.results' own tables."""
    pages = Path(ROOT, "pages")
    for page, name in (
        ("experiments.py", "group_runs"),
        ("samples.py", "outcome_table"),
        ("gradcam.py", "alignment_rows"),
    ):
        text = (pages / page).read_text()
        assert "from core.results import" in text and name in text, page
    from app import cache

    assert cache.quantized_rows is results.quantized_rows


def test_results_imports_neither_tensorflow_nor_streamlit():
    code = (
        "import sys, core.results; print('tensorflow' in sys.modules, 'streamlit' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert out.stdout.split() == ["False", "False"]
