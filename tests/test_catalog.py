"""Reference vs experimental runs: defaults, labels, promotion, and the Home cards (issue 17,
items 15 and 18).

The registries here are JSON only (``config.json`` + ``metrics.json``): listing runs, choosing
defaults and drawing Home never load a model, so no TensorFlow is needed.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core import catalog, cli, registry

ROOT = Path(__file__).resolve().parents[1]
HOME = str(ROOT / "app" / "Home.py")


def write_run(
    root: Path,
    name: str,
    *,
    val_auc: float,
    test_auc: float,
    created: str,
    reference: bool = False,
    seeds: list[tuple[float, float]] | None = None,
    dataset: str = "retinamnist",
    **cfg_extra,
) -> Path:
    """A JSON-only run; ``reference`` writes what ``core.experiments promote`` writes."""
    path = root / name
    path.mkdir(parents=True)
    cfg = {"dataset": dataset, "model": "cnn2d", "size": 28, "seed": 0, "name": name}
    cfg.update(cfg_extra)
    metrics = {
        "val": {"auc": val_auc, "acc": 0.5},
        "test": {"auc": test_auc, "acc": 0.5},
        "seed": cfg["seed"],
        "created": created,
    }
    if reference:
        cfg["arm"] = name
        seed_rows = [
            {"seed": i, "val": {"auc": v, "acc": 0.5}, "test": {"auc": t, "acc": 0.5}}
            for i, (v, t) in enumerate(seeds or [(val_auc, test_auc)] * 3)
        ]
        tests = [s["test"]["auc"] for s in seed_rows]
        mean = sum(tests) / len(tests)
        std = (sum((t - mean) ** 2 for t in tests) / (len(tests) - 1)) ** 0.5
        metrics["seeds"] = seed_rows
        metrics["summary"] = {
            "test_auc_mean": mean,
            "test_auc_std": std,
            "test_acc_mean": 0.5,
            "test_acc_std": 0.0,
            "reference_rule": "median seed by validation AUC",
        }
    registry.write_json_atomic(path / "config.json", cfg)
    registry.write_json_atomic(path / "metrics.json", metrics)
    return path


@pytest.fixture
def reg(tmp_path, monkeypatch):
    """A reference run and a newer, much worse 2-epoch user run (the issue's reproduction)."""
    root = tmp_path / "registry"
    write_run(
        root,
        "cnn2d_ref",
        val_auc=0.83,
        test_auc=0.74,
        created="2026-11-28T23:00:00+00:00",
        reference=True,
    )
    write_run(
        root,
        "retinamnist-cnn2d-s0-2epochs",
        val_auc=0.55,
        test_auc=0.60,
        created="2026-11-30T03:00:00+00:00",
        epochs=2,
    )
    monkeypatch.setenv("TRAINED_MODELS_DIR", str(root))
    monkeypatch.setenv("MEDMNIST_ROOT", str(tmp_path / "no-data"))
    monkeypatch.setenv("JOBS_WORKER_AUTOSTART", "0")
    monkeypatch.setenv("JOBS_DB", str(tmp_path / "jobs.sqlite"))
    return root


# ------------------------------------------------------------------------------------------
# core.catalog
# ------------------------------------------------------------------------------------------


def test_default_is_the_reference_run_not_the_newest(reg):
    runs = registry.list_runs(reg)
    assert catalog.default_run(runs)["name"] == "cnn2d_ref"
    assert catalog.default_run(runs, "retinamnist")["name"] == "cnn2d_ref"
    by_name = {r["name"]: r for r in runs}
    assert catalog.status(by_name["cnn2d_ref"]) == "reference"
    assert catalog.status(by_name["retinamnist-cnn2d-s0-2epochs"]) == "experimental"


def test_reference_runs_are_ranked_by_validation_not_test_auc(tmp_path):
    root = tmp_path / "r"
    write_run(root, "a", val_auc=0.80, test_auc=0.79, created="2026-01-03", reference=True)
    write_run(root, "b", val_auc=0.84, test_auc=0.70, created="2026-01-01", reference=True)
    write_run(
        root,
        "c",
        val_auc=0.90,
        test_auc=0.80,
        created="2026-01-02",
        dataset="breastmnist",
        reference=True,
    )
    write_run(root, "new", val_auc=0.99, test_auc=0.99, created="2026-01-09")
    order = [r["name"] for r in catalog.order_runs(registry.list_runs(root))]
    # retinamnist has the most reference runs; inside it the best *validation* AUC leads;
    # the unpromoted run comes last however good it looks
    assert order == ["b", "a", "c", "new"]
    assert catalog.default_run(registry.list_runs(root), "breastmnist")["name"] == "c"
    assert catalog.default_run(registry.list_runs(root), "chestmnist") is None


def test_a_dataset_without_reference_run_defaults_to_its_newest_run(tmp_path):
    root = tmp_path / "r"
    write_run(root, "old", val_auc=0.9, test_auc=0.9, created="2026-01-01")
    write_run(root, "new", val_auc=0.5, test_auc=0.5, created="2026-01-02")
    assert catalog.default_run(registry.list_runs(root))["name"] == "new"


def test_promote_writes_the_marker_atomically_and_changes_the_default(reg):
    user = "retinamnist-cnn2d-s0-2epochs"
    # a better user run: once promoted it competes on validation AUC
    write_run(reg, "good-user-run", val_auc=0.90, test_auc=0.75, created="2026-11-30T04:00:00")
    assert catalog.default_run(registry.list_runs(reg))["name"] == "cnn2d_ref"
    marker = catalog.promote("good-user-run", reg, by="ada", note="beats cnn2d_ref on val")
    assert marker == reg / "good-user-run" / catalog.MARKER_FILE
    record = json.loads(marker.read_text())
    assert record["promoted_by"] == "ada" and record["val_auc"] == 0.90
    assert oct(marker.stat().st_mode & 0o777) == "0o644"
    assert sorted(os.listdir(marker.parent)) == ["config.json", "metrics.json", "promoted.json"]
    runs = registry.list_runs(reg)
    assert catalog.default_run(runs)["name"] == "good-user-run"
    assert catalog.status(next(r for r in runs if r["name"] == user)) == "experimental"


def test_promote_refuses_bad_runs_with_clear_messages(reg, tmp_path):
    with pytest.raises(registry.RegistryError, match="no run at"):
        catalog.promote("no-such-run", reg)
    with pytest.raises(registry.RegistryError, match="outside the model registry"):
        catalog.promote(tmp_path / "elsewhere", reg)
    bare = reg / "no-val"
    bare.mkdir()
    registry.write_json_atomic(bare / "config.json", {"dataset": "retinamnist"})
    registry.write_json_atomic(bare / "metrics.json", {"test": {"auc": 0.7}})
    with pytest.raises(ValueError, match="has no val.auc"):
        catalog.promote("no-val", reg)
    assert not (bare / catalog.MARKER_FILE).exists()


def test_promote_cli(reg, capsys):
    assert cli.run(catalog.main, ["promote", "retinamnist-cnn2d-s0-2epochs"]) == 0
    assert "is now a reference run" in capsys.readouterr().out
    assert cli.run(catalog.main, ["promote", "../etc"]) == cli.USER_ERROR_EXIT
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err
    assert cli.run(catalog.main, ["list"]) == 0
    listing = capsys.readouterr().out.splitlines()
    assert listing[0].split()[0] == "reference"


# ------------------------------------------------------------------------------------------
# The shared pickers (every page opens on run_picker_ui's first choice)
# ------------------------------------------------------------------------------------------


def _picker_script():
    import streamlit as st

    from app import cache
    from app import widgets as w

    run = w.run_picker_ui(cache.runs(), key="pick", dataset="retinamnist")
    st.write(f"chosen={run['name']}")


def test_pickers_open_on_the_reference_run_and_label_user_runs_experimental(reg):
    import streamlit as st

    st.cache_data.clear()
    at = AppTest.from_function(_picker_script, default_timeout=60).run()
    assert not at.exception
    assert at.selectbox(key="pick").value == "cnn2d_ref"
    assert "chosen=cnn2d_ref" in at.markdown[0].value
    options = at.selectbox(key="pick").options
    assert options[0].startswith("cnn2d_ref") and "experimental" not in options[0]
    (user,) = [o for o in options if "retinamnist-cnn2d-s0-2epochs" in o]
    # the mark leads: a narrow sidebar picker cuts off the end of a long label
    assert user.startswith("experimental · ")
    assert not any("experimental" in c.value for c in at.caption)
    at.selectbox(key="pick").set_value("retinamnist-cnn2d-s0-2epochs").run()
    assert any("Not promoted by a researcher" in c.value for c in at.caption)


# ------------------------------------------------------------------------------------------
# Home cards
# ------------------------------------------------------------------------------------------


def _home() -> AppTest:
    import streamlit as st

    st.cache_data.clear()
    at = AppTest.from_file(HOME, default_timeout=120).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_home_first_card_is_the_reference_run_and_user_runs_are_marked(reg):
    at = _home()
    captions = [c.value for c in at.caption]
    ref_at = next(i for i, c in enumerate(captions) if "`cnn2d_ref`" in c)
    user_at = next(i for i, c in enumerate(captions) if "`retinamnist-cnn2d-s0-2epochs`" in c)
    assert ref_at < user_at
    headers = [m.value for m in at.markdown if "RetinaMNIST" in m.value]
    assert "reference" in headers[0] and "experimental" in headers[1]


def test_home_leads_with_the_mean_over_seeds_and_says_what_differs(tmp_path, monkeypatch):
    root = tmp_path / "registry"
    common = dict(model="vgg16", augment=True, fine_tune_blocks=2, reference=True)
    # the numbers: the opened seed scores 0.765, the three seeds 0.751 ± 0.029
    write_run(
        root,
        "vgg16_ft2_64",
        val_auc=0.816,
        test_auc=0.7646,
        created="2026-11-29T00:32",
        seeds=[(0.816, 0.7646), (0.835, 0.7695), (0.762, 0.7175)],
        input_size=64,
        **common,
    )
    write_run(
        root,
        "vgg16_ft2",
        val_auc=0.817,
        test_auc=0.746,
        created="2026-11-29T00:03",
        input_size=32,
        lr_schedule="plateau",
        **common,
    )
    write_run(
        root,
        "vgg16_ft2_ema",
        val_auc=0.810,
        test_auc=0.754,
        created="2026-11-29T04:57",
        input_size=32,
        lr_schedule="cosine",
        weight_ema=0.99,
        **common,
    )
    monkeypatch.setenv("TRAINED_MODELS_DIR", str(root))
    monkeypatch.setenv("MEDMNIST_ROOT", str(tmp_path / "no-data"))
    monkeypatch.setenv("JOBS_WORKER_AUTOSTART", "0")
    monkeypatch.setenv("JOBS_DB", str(tmp_path / "jobs.sqlite"))
    at = _home()
    auc = [m for m in at.metric if m.label.startswith("Test AUC")]
    values = {m.value for m in auc}
    assert "0.751 ± 0.029" in values, values
    assert all(m.label == "Test AUC, 3 seeds" for m in auc)
    from core import info

    best = info.best_published("retinamnist")["auc"][0]
    (big,) = [m for m in auc if m.value == "0.751 ± 0.029"]
    assert big.delta == f"{0.75053 - best:+.3f} vs {best:.3f}"
    captions = [c.value for c in at.caption]
    card = {
        name: next(c for c in captions if f"`{name}`" in c)
        for name in ("vgg16_ft2_64", "vgg16_ft2", "vgg16_ft2_ema")
    }
    assert "input resized to 64×64 px" in card["vgg16_ft2_64"]
    assert "28×28 px images" in card["vgg16_ft2_64"]
    descriptions = {c.split(" · ")[0] for c in card.values()}
    assert len(descriptions) == 3, card  # no two cards read the same
    assert "weight EMA 0.99" in card["vgg16_ft2_ema"] and "cosine" in card["vgg16_ft2_ema"]
    assert any("seed 0" in c and "0.765" in c for c in captions)  # the opened seed, second


def test_seed_summary_falls_back_to_the_run_itself():
    assert catalog.seed_summary({"test": {"auc": 0.7}}, "auc") == {"mean": 0.7, "std": 0.0, "n": 1}
    assert catalog.seed_summary({}, "auc") is None
    seeds = [{"test": {"auc": a}} for a in (0.7, 0.8, 0.9)]
    got = catalog.seed_summary({"seeds": seeds, "test": {"auc": 0.8}}, "auc")
    assert got["n"] == 3 and got["mean"] == pytest.approx(0.8) and got["std"] == pytest.approx(0.1)


def _ensemble(root: Path, name: str, members: list[str]) -> None:
    """A fitted ensemble folder as ``core.trust`` writes it (spec + metrics; no weights)."""
    path = root / name
    path.mkdir()
    spec = {"kind": "ensemble", "dataset": "retinamnist", "members": members, "tta": False}
    (path / "ensemble.json").write_text(json.dumps(spec))
    metrics = {"val": {"auc": 0.80, "acc": 0.5}, "test": {"auc": 0.75, "acc": 0.5}}
    (path / "metrics.json").write_text(json.dumps(metrics))


def test_a_run_shipped_as_an_ensemble_member_is_labelled_so_not_as_an_experiment(reg):
    """Seeds 1 and 2 of a reference arm ship only inside an ensemble: Home's card and the
    picker say "ensemble member" and name the ensemble; a user's job stays "experimental"."""
    write_run(reg, "cnn2d_ref_s1", val_auc=0.82, test_auc=0.73, created="2026-11-29T00:00:00+00:00")
    _ensemble(reg, "ens_seeds", ["cnn2d_ref", "cnn2d_ref_s1"])
    at = _home()
    headers = {m.value for m in at.markdown if "RetinaMNIST" in m.value}
    member = [h for h in headers if "ensemble member: ens_seeds" in h]
    assert len(member) == 1 and "experimental" not in member[0]
    assert sum("experimental: not promoted" in h for h in headers) == 1  # the user's job
    assert sum(":green-badge[reference]" in h for h in headers) == 1  # cnn2d_ref stays one

    import streamlit as st

    st.cache_data.clear()
    picker = AppTest.from_function(_picker_script, default_timeout=60).run()
    picker.selectbox(key="pick").set_value("cnn2d_ref_s1").run()
    captions = [c.value for c in picker.caption]
    assert any("ensemble member" in c and "ens_seeds" in c for c in captions), captions
    assert not any("Not promoted by a researcher" in c for c in captions)
    picker.selectbox(key="pick").set_value("retinamnist-cnn2d-s0-2epochs").run()
    assert any("Not promoted by a researcher" in c.value for c in picker.caption)
