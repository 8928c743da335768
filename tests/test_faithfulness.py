"""core.explain faithfulness, sanity, anatomy, properties, selection: tiny known-answer cases."""

from __future__ import annotations

import json

import numpy as np
import pytest

from core.explain import anatomy, faithfulness, properties, sanity, select

SIZE = 16


def _importance() -> np.ndarray:
    """True importance of the toy model: only the top-left quarter counts, strongest at (0, 0)."""
    w = np.zeros((SIZE, SIZE), np.float32)
    yy, xx = np.mgrid[: SIZE // 2, : SIZE // 2]
    w[: SIZE // 2, : SIZE // 2] = 1.0 / (1.0 + yy + xx)
    return w


def _toy_predict(batch: np.ndarray) -> np.ndarray:
    # class-1 logit = 4 * <importance, image>: a model whose true attribution is known exactly
    evidence = np.einsum("nhwc,hw->n", np.asarray(batch, np.float64), _importance())
    # logit -4 for an empty image, +4 for a typical input: unsaturated, so the curves can differ
    logit = 8.0 * (evidence / (0.75 * _importance().sum()) - 0.5)
    p1 = 1.0 / (1.0 + np.exp(-logit))
    return np.stack([1 - p1, p1], axis=1)


def _toy_inputs(n: int = 12) -> np.ndarray:
    rng = np.random.default_rng(0)
    return (0.5 + 0.5 * rng.random((n, SIZE, SIZE, 1))).astype(np.float32)


def test_true_importance_beats_smooth_random_and_inverse_loses():
    x = _toy_inputs()
    classes = np.ones(len(x), int)
    ref = np.zeros(x.shape[1:], np.float32)
    truth = np.repeat(_importance()[None], len(x), axis=0)
    base = faithfulness.deletion_insertion(
        _toy_predict, x, faithfulness.smooth_random_maps(len(x), (SIZE, SIZE)), classes, ref
    )
    good = faithfulness.faithfulness_summary(
        faithfulness.deletion_insertion(_toy_predict, x, truth, classes, ref), base
    )
    bad = faithfulness.faithfulness_summary(
        faithfulness.deletion_insertion(_toy_predict, x, -truth, classes, ref), base
    )
    assert good["deletion_ratio"] <= select.MAX_DELETION_RATIO
    assert good["insertion_ratio"] >= select.MIN_INSERTION_RATIO
    assert bad["deletion_ratio"] > 1.0 > bad["insertion_ratio"]
    assert good["removal_shift"] > 0.5  # the reference really moves the toy model
    # both curves start/end at the sample's and the reference's score
    assert good["deletion_curve"][0] == pytest.approx(good["insertion_curve"][-1], abs=1e-4)


def test_road_ranks_true_importance_above_its_inverse():
    x = _toy_inputs(6)
    classes = np.ones(len(x), int)
    truth = np.repeat(_importance()[None], len(x), axis=0)
    # the toy inputs are noise: removing the important pixels (imputed to their neighbours'
    # mean, ~0.75) changes the logit less than zeroing, but MoRF still drops below LeRF
    good = faithfulness.road_curves(_toy_predict, 0.2 + 0.0 * x, truth, classes, noise=0.0)
    x_bumps = x.copy()
    x_bumps[:, : SIZE // 2, : SIZE // 2] = 1.0
    x_bumps[:, SIZE // 2 :, :] = 0.0
    good = faithfulness.road_curves(_toy_predict, x_bumps, truth, classes, noise=0.0)
    assert good["morf_auc"] < good["lerf_auc"]


@pytest.mark.parametrize("spatial", [(28, 28), (64, 64), (28, 28, 28)])
def test_smooth_random_maps_shape_range_smoothness_and_reuse(spatial):
    maps = faithfulness.smooth_random_maps(5, spatial, seed=3)
    assert maps.shape == (5, *spatial) and maps.dtype == np.float32
    assert maps.min() >= 0.0 and np.allclose(maps.reshape(5, -1).max(axis=1), 1.0)
    np.testing.assert_array_equal(maps, faithfulness.smooth_random_maps(5, spatial, seed=3))
    assert not np.array_equal(maps, faithfulness.smooth_random_maps(5, spatial, seed=4))
    # smooth: neighbours differ by at most one lattice step's share, far below iid noise
    step = np.abs(np.diff(maps, axis=1)).max()
    assert step <= 1.0 / (spatial[0] / faithfulness.BASELINE_GRID) + 1e-6
    noise = np.random.default_rng(0).random((5, *spatial))
    assert np.abs(np.diff(maps, axis=1)).mean() < 0.2 * np.abs(np.diff(noise, axis=1)).mean()
    # a 4-point lattice upsampled: the maps span no more than 4 values per axis line
    first_row = maps[0].reshape(spatial[0], -1)[:, 0]
    assert len(np.flatnonzero(np.abs(np.diff(np.diff(first_row))) > 1e-5)) <= 2 * 4


def test_removal_reference_mean_image_and_empty_volume():
    x2 = np.stack([np.zeros((4, 4, 3)), np.ones((4, 4, 3))]).astype(np.float32)
    np.testing.assert_allclose(faithfulness.removal_reference(x2, "retinamnist"), 0.5)
    x3 = np.ones((2, 4, 4, 4, 1), np.float32)
    assert not faithfulness.removal_reference(x3, "adrenalmnist3d").any()
    with pytest.raises(ValueError, match="non-empty"):
        faithfulness.removal_reference(np.zeros((0, 4, 4, 1)), "retinamnist")


@pytest.mark.parametrize("shape", [(12, 12, 2), (10, 10, 10, 1)])
def test_noisy_linear_imputation_reproduces_linear_fields(shape):
    grids = np.meshgrid(*[np.arange(s, dtype=np.float32) for s in shape[:-1]], indexing="ij")
    field = (0.3 + 0.02 * grids[0] + 0.01 * grids[-1])[..., None].repeat(shape[-1], -1)
    removed = np.zeros(shape[:-1], bool)
    removed[tuple(slice(3, 7) for _ in shape[:-1])] = True  # interior block
    out = faithfulness.noisy_linear_impute(field, removed, noise=0.0)
    np.testing.assert_allclose(out, field, atol=1e-4)
    noisy = faithfulness.noisy_linear_impute(field, removed, noise=0.05, seed=1)
    assert np.array_equal(noisy[~removed], field[~removed])
    assert 0.02 < np.std((noisy - field)[removed]) < 0.08


def test_bad_inputs_raise_clear_errors():
    x = _toy_inputs(2)
    ref = np.zeros(x.shape[1:], np.float32)
    maps = np.zeros((2, SIZE, SIZE), np.float32)
    with pytest.raises(ValueError, match="spatial shape"):
        faithfulness.deletion_insertion(_toy_predict, x, maps[:, :4], [1, 1], ref)
    with pytest.raises(ValueError, match="NaN"):
        faithfulness.deletion_insertion(_toy_predict, x, maps + np.nan, [1, 1], ref)
    with pytest.raises(ValueError, match="steps"):
        faithfulness.deletion_insertion(_toy_predict, x, maps, [1, 1], ref, steps=0)
    with pytest.raises(ValueError, match="reference"):
        faithfulness.deletion_insertion(_toy_predict, x, maps, [1, 1], ref[:3])
    with pytest.raises(ValueError, match="classes"):
        faithfulness.deletion_insertion(_toy_predict, x, maps, [1], ref)
    with pytest.raises(ValueError, match="batch"):
        faithfulness.deletion_insertion(_toy_predict, x[0], maps[0], [1], ref)
    with pytest.raises(ValueError, match="grid"):
        faithfulness.smooth_random_maps(1, (8, 8), grid=1)
    with pytest.raises(ValueError, match="spatial"):
        faithfulness.smooth_random_maps(1, (8,))
    with pytest.raises(ValueError, match="strictly between"):
        faithfulness.road_curves(_toy_predict, x, maps, [1, 1], fractions=(0.0, 0.5))
    with pytest.raises(ValueError, match="no candidate"):
        select.choose([])


# --- sanity: model-parameter randomization -----------------------------------------------------
def _tiny_model():
    import tf_keras as keras

    keras.utils.set_random_seed(0)
    inp = keras.Input((SIZE, SIZE, 1))
    h = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv")(inp)
    h = keras.layers.Flatten()(h)
    out = keras.layers.Dense(2, activation="softmax", name="logits")(h)
    return keras.Model(inp, out)


def _edge_detector(model, x):  # ignores the model entirely
    from scipy import ndimage

    img = np.asarray(x)[..., 0]
    mag = np.hypot(ndimage.sobel(img, axis=1), ndimage.sobel(img, axis=2))
    return mag / mag.reshape(len(mag), -1).max(axis=1)[:, None, None]


def _weight_map(model, x):  # |class-1 weight| summed over conv channels: pure model weights
    w = model.get_layer("logits").get_weights()[0][:, 1].reshape(SIZE, SIZE, 4)
    m = np.abs(w).sum(-1)
    return np.repeat((m / m.max())[None], len(x), axis=0)


def test_randomization_catches_edge_detector_and_passes_weight_dependent_map():
    model = _tiny_model()
    x = _toy_inputs(6)
    before = [w.copy() for w in model.get_weights()]
    edges = sanity.randomization_test(model, _edge_detector, x)
    weights = sanity.randomization_test(model, _weight_map, x)
    assert edges["rank_correlation"] == pytest.approx(1.0)
    assert not select.passes_sanity({"sanity": edges})
    assert abs(weights["rank_correlation"]) < 0.2 and weights["last_layer"] < 0.2
    assert select.passes_sanity({"sanity": weights})
    assert [s["n_layers"] for s in weights["stages"]] == [1, 2]  # logits, then logits + conv
    for a, b in zip(before, model.get_weights(), strict=True):  # the trained model untouched
        np.testing.assert_array_equal(a, b)


def test_spearman_rows_known_values():
    a = np.array([[1.0, 2.0, 3.0, 4.0], [1.0, 1.0, 1.0, 1.0]])
    b = np.array([[10.0, 20.0, 30.0, 45.0], [4.0, 3.0, 2.0, 1.0]])
    rho = sanity.spearman_rows(a, b)
    assert rho[0] == pytest.approx(1.0) and np.isnan(rho[1])
    assert sanity.spearman_rows(a[:1], -b[:1])[0] == pytest.approx(-1.0)


# --- anatomy and properties --------------------------------------------------------------------
def _box_volume() -> np.ndarray:
    v = np.zeros((12, 12, 12, 1), np.float32)
    v[4:8, 4:8, 2:10] = 1.0  # a 4 x 4 x 8 rod
    return v


def test_gland_regions_partition_and_energy_of_known_maps():
    vol = _box_volume()
    regions = anatomy.gland_regions(vol)
    total = sum(m.astype(int) for m in regions.values())
    assert np.all(total == 1) and regions["inside"].sum() == 4 * 4 * 8
    summary = anatomy.anatomy_summary(vol[None, ..., 0], vol[None], "adrenalmnist3d")
    assert summary["inside"] == pytest.approx(1.0) and summary["pointing_hit"] == 1.0
    outside_map = (~regions["inside"] & ~regions["band"]).astype(np.float32)[None]
    summary = anatomy.anatomy_summary(outside_map, vol[None], "adrenalmnist3d")
    assert summary["outside"] == pytest.approx(1.0) and summary["pointing_energy"] == 0.0
    assert anatomy.anatomy_summary(outside_map, vol[None], "pathmnist") is None


def _fundus(spot: bool) -> np.ndarray:
    yy, xx = np.mgrid[:28, :28]
    img = np.where((yy - 14) ** 2 + (xx - 14) ** 2 < 12**2, 0.4, 0.0)
    img = img + 0.02 * np.random.default_rng(0).random((28, 28))
    if spot:
        img = img + 0.5 * np.exp(-((yy - 12) ** 2 + (xx - 19) ** 2) / 3.0)
    return np.repeat(img[..., None], 3, -1).astype(np.float32)


def test_optic_disc_found_where_the_bright_spot_is_and_not_on_a_flat_disk():
    centre, found = anatomy.locate_optic_disc(_fundus(True))
    assert found and abs(centre[0] - 12) <= 1 and abs(centre[1] - 19) <= 1
    assert not anatomy.locate_optic_disc(_fundus(False))[1]
    x = np.stack([_fundus(True), _fundus(False)])
    yy, xx = np.mgrid[:28, :28]
    on_disc = np.exp(-((yy - 12) ** 2 + (xx - 19) ** 2) / 2.0)[None].repeat(2, 0)
    s = anatomy.anatomy_summary(on_disc, x, "retinamnist")
    assert s["disc_found"] == 0.5 and s["disc_pointing_hit"] == 1.0 and s["disc_energy"] > 0.5


def test_mask_properties_of_a_rod_and_score_correlation():
    p = properties.mask_properties(_box_volume())
    assert p["volume"] == 128 and p["surface_area"] == 2 * (16 + 32 + 32)
    cube = np.zeros((12, 12, 12), np.float32)
    cube[3:8, 3:8, 3:8] = 1
    assert p["elongation"] > 1.5 > properties.mask_properties(cube)["elongation"]
    vols = np.zeros((6, 12, 12, 12, 1), np.float32)
    for i in range(6):
        vols[i, 2 : 4 + i, 2:6, 2:6] = 1.0  # growing glands
    probs = np.stack([1 - np.linspace(0.1, 0.9, 6), np.linspace(0.1, 0.9, 6)], 1)
    corr = properties.property_correlations(probs, vols, "adrenalmnist3d")
    assert corr["correlations"]["volume"] == pytest.approx(1.0)
    assert "volume" in properties.describe(corr)


# --- selection ---------------------------------------------------------------------------------
def _cand(method, d, i, rho, n=64):
    split = {
        "faithfulness": {
            "deletion_ratio": d,
            "insertion_ratio": i,
            "margin": (1 - d) + (i - 1),
            "n": n,
        },
        "sanity": {"rank_correlation": rho, "n": n},
    }
    return {"method": method, "layer": "conv", "val": split, "test": json.loads(json.dumps(split))}


def test_choose_prefers_sane_candidate_on_val_and_says_when_nothing_is_faithful():
    edge = _cand("edges", 0.5, 1.6, 0.95)  # best margin but fails sanity
    good = _cand("gradcam", 0.8, 1.2, 0.1)
    out = select.choose([edge, good])
    assert out["default_method"] == "gradcam" and out["faithful"]
    assert out["verdict"].startswith("Reasonably trustworthy")
    weak = _cand("gradcam", 0.95, 1.05, 0.1)
    weak["test"]["faithfulness"]["n"] = 32
    out = select.choose([weak])
    assert not out["faithful"] and not out["goals"]["samples"] and not out["goals"]["deletion"]
    assert out["verdict"].startswith("No explanation method was faithful")
    # test numbers never change the choice
    a, b = _cand("a", 0.7, 1.3, 0.1), _cand("b", 0.8, 1.2, 0.1)
    b["test"]["faithfulness"].update(deletion_ratio=0.1, insertion_ratio=3.0, margin=3.9)
    assert select.choose([a, b])["default_method"] == "a"


def test_sanity_gate_ignores_the_sign_of_the_rank_correlation():
    """A map that flips under scrambled weights still follows the image: |rho| is gated, and
    samples with +rho and -rho must not cancel into a pass."""
    flipped = {"sanity": {"rank_correlation": -0.8, "n": 64}}  # an older file: signed only
    assert select.scrambling_correlation(flipped) == pytest.approx(0.8)
    assert not select.passes_sanity(flipped)
    cancelling = {"sanity": {"rank_correlation": 0.0, "abs_rank_correlation": 0.7, "n": 64}}
    assert not select.passes_sanity(cancelling)
    weak = {"sanity": {"rank_correlation": 0.05, "abs_rank_correlation": 0.2, "n": 64}}
    assert select.passes_sanity(weak)
    # so a candidate with the best margin but a cancelling mean is not the default
    tracer, honest = _cand("tracer", 0.5, 1.6, 0.0), _cand("honest", 0.8, 1.2, 0.1)
    for split in ("val", "test"):
        tracer[split]["sanity"]["abs_rank_correlation"] = 0.7
        honest[split]["sanity"]["abs_rank_correlation"] = 0.2
    assert select.choose([tracer, honest])["default_method"] == "honest"


def test_refresh_rechooses_a_stored_explain_json_without_recomputing(
    tmp_path, monkeypatch, real_data_env
):
    from app_helpers import make_run

    from core.explain.__main__ import main
    from core.explain.evaluation import refresh_run

    monkeypatch.setenv("TRAINED_MODELS_DIR", str(tmp_path))
    run = make_run(tmp_path, "retinamnist", "cnn2d", name="run")  # real data, random weights
    tracer = _cand("tracer", 0.5, 1.6, 0.0)
    for split in ("val", "test"):
        tracer[split]["sanity"]["abs_rank_correlation"] = 0.7
    stored = {
        "run": "run",
        "candidates": [tracer, _cand("honest", 0.8, 1.2, 0.1)],
        "default_method": "tracer",  # chosen by the old, signed gate
        "faithful": True,
        "verdict": "old",
    }
    (run / "explain.json").write_text(json.dumps(stored))
    assert main([str(run), "--refresh"]) == 0
    written = json.loads((run / "explain.json").read_text())
    assert written["default_method"] == "honest" and written["faithful"]
    assert written["verdict"].startswith("Reasonably trustworthy")
    assert written["thresholds"]["rank_correlation"] == "mean |rho| over samples"
    assert written["candidates"] == stored["candidates"]  # numbers untouched
    (run / "explain.json").unlink()  # a run never measured: the command that measures it
    with pytest.raises(FileNotFoundError, match="python -m core.explain run"):
        refresh_run(run)


def test_evaluate_run_writes_explain_json(tiny_cnn3d_run):
    from core.explain.evaluation import evaluate_run

    result = evaluate_run(tiny_cnn3d_run, n=4, n_val=3, steps=2, road=False, log=None)
    written = json.loads((tiny_cnn3d_run / "explain.json").read_text())
    for key in ("default_method", "default_layer", "faithful", "verdict", "candidates"):
        assert key in written and written[key] == result[key] or key == "candidates"
    assert written["candidates"] and {"val", "test"} <= set(written["candidates"][0])
    first = written["candidates"][0]["test"]
    assert first["faithfulness"]["n"] == 4 and first["sanity"]["n"] == 4
    assert written["candidates"][0]["val"]["faithfulness"]["n"] == 3
    methods = {c["method"] for c in written["candidates"]}
    assert {"gradcam", "layercam_fused", "integrated_gradients", "occlusion"} <= methods
    assert set(first["anatomy"]) >= {"inside", "band", "outside"}
    assert written["gradcam"]["n"] == 4  # the keys the app's alignment table reads
    assert written["splits"]["test"]["properties"]["correlations"].keys() >= {"volume"}
