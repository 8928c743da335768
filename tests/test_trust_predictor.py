"""Predictor and ensemble folders on tiny untrained models over synthetic MedMNIST files."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import patch_md5, write_synthetic
from scipy.special import log_softmax, logsumexp, softmax

from core import data, info, registry

FLAG = "retinamnist"


def _save_tiny(name: str, seed: int, augment: bool = True):
    import tf_keras as keras

    from core.models import build_model

    keras.utils.set_random_seed(seed)
    model = build_model(
        "cnn2d", (28, 28, 3), 5, info.task(FLAG), filters=(4,), dense_units=8, convs_per_block=1
    )
    cfg = {
        "dataset": FLAG,
        "model": "cnn2d",
        "size": 28,
        "seed": seed,
        "augment": augment,
        "task": info.task(FLAG),
        "labels": info.label_names(FLAG),
    }
    metrics = {"val": {"auc": 0.5, "acc": 0.2}, "test": {"auc": 0.5, "acc": 0.2}}
    return registry.save_run(model, cfg, {}, metrics, name=name), model


@pytest.fixture
def trust_root(synthetic_root, monkeypatch):
    """Synthetic files plus the BreastMNIST file the retina OOD evaluation also reads."""
    path = write_synthetic(synthetic_root, "breastmnist", seed=9)
    patch_md5(monkeypatch, "breastmnist", 28, path)
    return synthetic_root


def test_fit_then_predictor_gives_calibrated_probabilities_and_guards(trust_root):
    from core.trust import fit
    from core.trust.predictor import TrustNotFittedError

    run, model = _save_tiny("tiny_a", 0, augment=False)
    x, _ = data.load_split(FLAG, "test")
    before = registry.load_predictor("tiny_a")
    with pytest.raises(TrustNotFittedError, match="python -m core.trust"):
        before.is_ood(x)
    np.testing.assert_allclose(before.predict_proba(x), model.predict(x, verbose=0), atol=1e-5)

    res = fit.fit("tiny_a")
    assert (run / "calibration.json").is_file() and (run / "ood.npz").is_file()
    assert res["ood"]["detector"] in res["ood"]["val"]
    assert set(res["calibration"]["test"]) == {"raw", "scaled"}
    p = registry.load_predictor("tiny_a")
    t = res["temperature"]
    logits = np.log(model.predict(x, verbose=0))  # softmax output: log gives logits + const
    b = np.asarray(res["bias"])  # zeros unless val's cross-validation chose the offsets
    assert res["calibrator"] in ("temperature", "temperature_bias")
    assert (b == 0).all() == (res["calibrator"] == "temperature")
    np.testing.assert_allclose(p.predict_proba(x), softmax(logits / t + b, axis=1), atol=1e-4)
    out = p.assess(x)
    np.testing.assert_allclose(out["uncertainty"], 1 - out["proba"].max(axis=1))
    assert (out["is_ood"] == (out["ood_score"] > res["ood"]["threshold"])).all()
    assert (out["refer"] >= out["is_ood"]).all()  # every foreign image is also referred
    np.testing.assert_array_equal(p.refer(x), out["refer"])
    # uniform noise is nothing like the smooth synthetic images the guard was fitted on
    noise = np.random.default_rng(0).random((20, 28, 28, 3), dtype=np.float32)
    assert p.is_ood(noise).mean() > 0.9
    # a grey image of another size is converted, not refused
    assert p.predict_proba(np.zeros((1, 32, 32, 1), np.float32)).shape == (1, 5)


def test_ensemble_folder_round_trip(trust_root):
    from core.trust import ensemble, fit
    from core.trust.predictor import tta_views

    _, m1 = _save_tiny("tiny_a", 0)
    _, m2 = _save_tiny("tiny_b", 1)
    built = fit.build_ensemble(FLAG, "ens")
    spec = ensemble.read_spec(built)
    assert set(spec["members"]) <= {"tiny_a", "tiny_b"} and spec["members"]
    # the round trip with both members and TTA on, whatever the greedy choice was
    ens = ensemble.write_spec(
        built, FLAG, ["tiny_a", "tiny_b"], True, spec["selection"], spec["labels"], spec["task"]
    )
    res = fit.fit("ens")
    assert res["kind"] == "ensemble" and res["members"] == ["tiny_a", "tiny_b"]
    assert registry.read_json(ens, "metrics.json")["test"]["auc"] == res["metrics"]["test"]["auc"]
    assert registry.ensemble_dirs() == [ens]
    assert "ens" not in [r.name for r in registry.runs()]  # never loaded as one Keras model
    assert not list(ens.glob("*.keras"))  # no weight copies

    p = registry.load_predictor("ens")
    assert len(p.members) == 2 and p.tta
    x, _ = data.load_split(FLAG, "val")
    views = [m.predict(v, verbose=0) for m in (m1, m2) for v in tta_views(x, True)]
    z = logsumexp(np.stack([np.log(v) for v in views]), axis=0) - np.log(len(views))
    expected = softmax(log_softmax(z, axis=1) / res["temperature"] + res["bias"], axis=1)
    np.testing.assert_allclose(p.predict_proba(x), expected, atol=1e-4)
    assert p.disagreement(x).shape == (len(x),) and (p.disagreement(x) >= 0).all()


def test_ensemble_with_fixed_members_skips_selection_and_checks_the_names(trust_root):
    """``--members``: a deep ensemble of every seed is kept whole, whatever val log-loss
    would have chosen; a name that is not a run of the dataset is refused with the list."""
    from core.trust import __main__ as trust_cli
    from core.trust import ensemble, fit

    _save_tiny("tiny_a", 0)
    _save_tiny("tiny_b", 1)
    _save_tiny("tiny_c", 2)
    greedy = ensemble.read_spec(fit.build_ensemble(FLAG, "greedy", max_members=1))
    assert len(greedy["members"]) == 1  # the greedy rule alone stops at one member
    built = fit.build_ensemble(FLAG, "seeds", members=["tiny_c", "tiny_a", "tiny_b"])
    spec = ensemble.read_spec(built)
    assert spec["members"] == ["tiny_c", "tiny_a", "tiny_b"]
    assert spec["selection"]["criterion"].startswith("members fixed beforehand")
    assert spec["selection"]["trace"] == []
    with pytest.raises(ValueError, match=r"(?s)tiny_z: not a run of .*Name members among: tiny_a"):
        fit.build_ensemble(FLAG, "bad", members=["tiny_a", "tiny_z"])
    assert not (registry.root_dir() / "bad").exists()  # nothing half-written
    # the command line reaches the same code and fits the folder
    assert (
        trust_cli.main(
            ["ensemble", "--dataset", FLAG, "--name", "cli", "--members", "tiny_a", "tiny_b"]
        )
        == 0
    )
    assert ensemble.read_spec(registry.root_dir() / "cli")["members"] == ["tiny_a", "tiny_b"]
    assert registry.read_json(registry.root_dir() / "cli", "calibration.json")["members"] == [
        "tiny_a",
        "tiny_b",
    ]


def test_missing_member_names_the_run_and_the_fix(trust_root):
    from core.trust import ensemble

    root = registry.root_dir()
    ensemble.write_spec(root / "ens", FLAG, ["gone"], False, {}, [], info.task(FLAG))
    with pytest.raises(registry.RegistryError, match="needs member run 'gone'"):
        registry.load_predictor("ens")


def test_tta_views_use_only_training_flips():
    from core.trust.predictor import tta_views

    x2 = np.arange(2 * 4 * 4 * 1, dtype=np.float32).reshape(2, 4, 4, 1)
    views = tta_views(x2, True)
    assert len(views) == 2 and np.array_equal(views[1], x2[:, :, ::-1])
    assert len(tta_views(x2, False)) == 1
    x3 = np.arange(4 * 4 * 4, dtype=np.float32).reshape(1, 4, 4, 4, 1)
    v3 = tta_views(x3, True)
    assert len(v3) == 8 and len({v.tobytes() for v in v3}) == 8


def test_report_trust_section_reads_every_calibration_json(trust_root):
    from benchmarks.report.sections_trust import section_trust
    from core.trust import ensemble, fit

    assert "No run has trust values yet" in "\n".join(section_trust())
    _save_tiny("tiny_a", 0)
    res = fit.fit("tiny_a")
    ensemble.write_spec(
        registry.root_dir() / "ens", FLAG, ["tiny_a"], True, {}, [], info.task(FLAG)
    )
    res_ens = fit.fit("ens")
    text = "\n".join(section_trust())
    for r in (res, res_ens):
        row = next(line for line in text.splitlines() if line.startswith(f"| `{r['run']}` | "))
        assert f"{r['temperature']:.3f}" in row
    det = res["ood"]["detector"]
    flagged = res["ood"]["test"][det]["in_distribution_flagged"]
    assert f"| `tiny_a` | {det} | {flagged:.3f} |" in text
    # an ensemble whose members were fixed beforehand says so; a greedy one does not
    assert "| `ens` | ensemble | tiny_a | yes |" in text
    fit.fit(fit.build_ensemble(FLAG, "seeds", members=["tiny_a"]))
    assert "| `seeds` | ensemble | tiny_a (*fixed*) |" in "\n".join(section_trust())
