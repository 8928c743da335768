"""Experiments page: the Trust & clinical tab (kappa, warnings, reliability, risk–coverage) and
single models beside ensembles and the published table, read from the runs' JSON files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from app_helpers import make_run, synthetic_environment
from streamlit.testing.v1 import AppTest
from test_trust_ui import svg_charts

from core import catalog, registry

HOME = str(Path(__file__).resolve().parents[1] / "app" / "Home.py")


def _calibration(dataset: str, members: list[str]) -> dict:
    """A calibration.json shaped like core.trust's (values made up, structure real)."""
    bins_raw = [
        {"lo": 0.4, "hi": 0.47, "count": 30, "confidence": 0.44, "accuracy": 0.3},
        {"lo": 0.8, "hi": 0.87, "count": 20, "confidence": 0.84, "accuracy": 0.5},
    ]
    bins_scaled = [
        {"lo": 0.33, "hi": 0.4, "count": 35, "confidence": 0.36, "accuracy": 0.34},
        {"lo": 0.6, "hi": 0.67, "count": 15, "confidence": 0.63, "accuracy": 0.6},
    ]
    rel = {"raw": {"ece": 0.21, "n": 50, "bins": bins_raw}}
    rel["scaled"] = {"ece": 0.03, "n": 50, "bins": bins_scaled}
    curve = {"coverage": [0.1, 0.5, 1.0], "accuracy": [0.9, 0.7, 0.5], "threshold": [0.1, 0.4, 0.9]}
    return {
        "dataset": dataset,
        "members": members,
        "temperature": 1.7,
        "calibration": {"val": rel, "test": rel},
        "refer": {
            "threshold": 0.4,
            "target_accuracy": 0.7,
            "test": {"coverage": 0.52, "accuracy": 0.71},
            "curves": {"val": curve, "test": curve},
        },
    }


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("trust_app")
    with synthetic_environment(tmp) as values:
        root = Path(values["TRAINED_MODELS_DIR"])
        run = make_run(root, "retinamnist", "cnn2d", seed=0, name="retina-ref")
        make_run(root, "adrenalmnist3d", "cnn3d", seed=1, name="adrenal-run")
        make_run(root, "retinamnist", "cnn2d", seed=2, name="retina-plain")  # no trust files
        catalog.promote(run, root, by="test")
        registry.write_json_atomic(run / "calibration.json", _calibration("retinamnist", []))
        ens = root / "retina-ens"
        ens.mkdir()
        spec = {"members": ["retina-ref"], "dataset": "retinamnist", "kind": "ensemble"}
        registry.write_json_atomic(ens / "ensemble.json", spec)
        metrics = {"val": {"auc": 0.99, "acc": 0.9}, "test": {"auc": 0.77, "acc": 0.58}}
        registry.write_json_atomic(ens / "metrics.json", metrics)
        registry.write_json_atomic(
            ens / "calibration.json", _calibration("retinamnist", ["retina-ref"])
        )
        yield {**values, "run": run}


def _frame(at: AppTest, column: str):
    """The first table with ``column`` (AppTest does not expose a dataframe's key)."""
    return next(d.value for d in at.dataframe if column in d.value.columns)


def test_experiments_trust_tab_and_ensemble_table(env):
    import streamlit as st

    st.cache_data.clear()
    at = AppTest.from_file(HOME, default_timeout=180).run()
    at.query_params["run"] = "retina-ref"
    at.switch_page("../pages/experiments.py").run()
    assert not at.exception, [e.value for e in at.exception]

    table = _frame(at, "kind")
    # the ensemble (best val AUC) comes first, the published rows after every model
    assert list(table["model"])[:2] == ["retina-ens", "retina-ref"]
    assert table["kind"].iloc[0].startswith("ensemble of retina-ref")
    assert "published" in set(table["kind"])
    assert table["test ECE raw → calibrated"].iloc[0] == "0.210 → 0.030"
    assert table["kept / accuracy on kept"].iloc[0] == "52% / 0.710"

    labels = {m.label for m in at.metric}
    assert {"Quadratic kappa", "Referable DR AUC", "Sensitivity at 90 % specificity"} <= labels
    assert all(m.help for m in at.metric if m.label in labels)
    stored = registry.read_json(env["run"], "evaluation.json")["clinical"]
    kappa = next(m for m in at.metric if m.label == "Quadratic kappa")
    assert kappa.value == f"{stored['kappa_quadratic']:.3f}"
    # every class below recall 0.2 gets its own warning, by name
    warned = [w.value for w in at.warning if "Do not rely on it" in w.value]
    assert len(warned) == len(stored["low_recall"])
    per_class = _frame(at, "sensitivity")
    assert list(per_class["cases"]) == [r["support"] for r in stored["per_class"]]

    titles = [
        json.loads(c.proto.spec)["layout"].get("title", {}).get("text", "")
        for c in at.get("plotly_chart")
    ]
    assert any(t.startswith("Test reliability (T = 1.70)") for t in titles)
    assert any(t.startswith("Accuracy on the cases the model keeps") for t in titles)


def test_trust_rows_sorted_on_val_only():
    from app import clinical_ui

    entries = [
        {"name": "a", "metrics": {"val": {"auc": 0.7}, "test": {"auc": 0.9, "acc": 0.6}}},
        {"name": "b", "metrics": {"val": {"auc": 0.8}, "test": {"auc": 0.6, "acc": 0.4}}},
    ]
    rows = clinical_ui.trust_rows(entries, "retinamnist")
    assert [r["model"] for r in rows[:2]] == ["b", "a"]  # the better test AUC does not lead
    assert all(r["kind"] == "published" for r in rows[2:]) and len(rows) > 2


@pytest.mark.parametrize(
    ("page", "query"),
    [
        ("samples", {"run": "retina-plain", "dataset": "retinamnist"}),
        ("gradcam", {"run": "retina-plain"}),
        ("volume", {"run": "adrenal-run", "dataset": "adrenalmnist3d"}),
    ],
)
def test_pages_show_the_prediction_through_the_trust_panel(env, page, query):
    """Without calibration.json the panel says so and shows the raw probabilities."""
    import streamlit as st

    st.cache_data.clear()
    at = AppTest.from_file(HOME, default_timeout=180).run()
    for key, value in query.items():
        at.query_params[key] = value
    at.switch_page(f"../pages/{page}.py").run()
    assert not at.exception, [e.value for e in at.exception]
    if page == "samples":
        # the ensemble is best on val, so it predicts by default; switch to the picked run
        toggle = at.toggle(key="samples_ensemble")
        assert toggle.value is True and "retina-ens" in toggle.label
        toggle.set_value(False).run()
        assert not at.exception
    assert not at.error, [e.value for e in at.error]
    text = " ".join(m.value for m in at.markdown) + " ".join(c.value for c in at.caption)
    assert "predicted: **" in text and "not calibrated" in text, text[:2000]
    titles = [
        json.loads(c.proto.spec)["layout"].get("title", {}).get("text", "")
        for c in at.get("plotly_chart")
    ] + [svg[1].text or "" for svg in svg_charts(at)]  # [0] is <title>, [1] the heading
    assert any(t.startswith("Raw probabilities") for t in titles), titles


def test_best_on_val_picks_runs_or_ensembles_on_validation_auc_only():
    from core import catalog

    def run(name, dataset, val, test, reference=True):
        cfg = {"dataset": dataset, "arm": name if reference else None}
        metrics = {"val": {"auc": val}, "test": {"auc": test}}
        if reference:
            metrics["summary"] = {}
        return {"name": name, "path": f"/r/{name}", "config": cfg, "metrics": metrics}

    runs = [
        run("a", "retinamnist", 0.80, 0.76),
        run("b", "retinamnist", 0.82, 0.70),
        run("c", "retinamnist", 0.95, 0.90, reference=False),  # experimental: never default
        run("d", "adrenalmnist3d", 0.88, 0.87),
    ]
    ens = [
        {
            "name": "e",
            "dataset": "retinamnist",
            "kind": "ensemble",
            "metrics": {"val": {"auc": 0.81}},
        }
    ]
    assert catalog.best_on_val(runs, ens, "retinamnist")["name"] == "b"
    ens[0]["metrics"]["val"]["auc"] = 0.83
    best = catalog.best_on_val(runs, ens, "retinamnist")
    assert best["name"] == "e" and best["kind"] == "ensemble"
    assert catalog.best_on_val(runs, ens, "adrenalmnist3d")["kind"] == "run"
    assert catalog.best_on_val(runs, ens, "pathmnist") is None


def test_home_recommends_the_best_on_val(env):
    import streamlit as st

    st.cache_data.clear()
    at = AppTest.from_file(HOME, default_timeout=180).run()
    assert not at.exception
    table = _frame(at, "recommended")
    by_dataset = dict(zip(table["dataset"], table["recommended"], strict=True))
    retina = next(k for k in by_dataset if "Retina" in k)
    assert by_dataset[retina] == "retina-ens"
