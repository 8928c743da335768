"""core.explain: Grad-CAM / Grad-CAM++ maths, layer choice, errors, drawing, alignment scores."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf  # conftest imported core first, so this is Keras 2 (TF_USE_LEGACY_KERAS)
import tf_keras as keras

from core import explain, imaging
from core.explain import gradcam
from core.models import build_model, compile_model

TASK = "multi-class"

# family, input shape, builder kwargs, expected default Grad-CAM layer
TINY = {
    "cnn2d": ((16, 16, 1), {"filters": (4, 8)}, "block2_relu2"),
    "resnet2d": (
        (16, 16, 3),
        {"filters": (4, 8), "blocks": (1, 1), "stem_filters": 4},
        "stage2_block1_out",
    ),
    "cnn3d": ((8, 8, 8, 1), {"filters": (4, 8), "dense_units": 8}, "relu2"),
    "resnet3d": (
        (8, 8, 8, 1),
        {"filters": (4, 8), "blocks": (1, 1), "stem_filters": 4},
        "stage2_block1_out",
    ),
}


def _family(name: str) -> str:
    return name.removesuffix("2d").removesuffix("3d") if name.startswith("resnet") else name


@pytest.fixture(scope="module")
def tiny_models() -> dict[str, keras.Model]:
    """One tiny model per family (and rank), trained one step so BatchNorm stats move."""
    rng = np.random.default_rng(0)
    models = {}
    for name, (shape, kwargs, _) in TINY.items():
        keras.utils.set_random_seed(1)
        model = build_model(_family(name), shape, 3, TASK, **kwargs)
        compile_model(model, TASK)
        x = rng.random((8, *shape), dtype=np.float32)
        model.fit(x, rng.integers(0, 3, (8, 1)), epochs=1, batch_size=8, verbose=0)
        models[name] = model
    return models


def _inputs(model: keras.Model, n: int = 3, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.random((n, *model.input_shape[1:]), dtype=np.float32)


# ---------------------------------------------------------------------------------------------
# Hand-computed Grad-CAM
# ---------------------------------------------------------------------------------------------
def _known_model() -> tuple[keras.Model, np.ndarray, np.ndarray]:
    """1x1 conv (2 channels) -> ReLU -> GAP -> logits (3 classes) -> softmax, known weights."""
    inputs = keras.Input((4, 4, 1))
    conv = keras.layers.Conv2D(2, 1, name="conv")
    feats = keras.layers.ReLU(name="relu")(conv(inputs))
    pooled = keras.layers.GlobalAveragePooling2D()(feats)
    dense = keras.layers.Dense(3, name="logits")
    out = keras.layers.Activation("softmax", name="predictions")(dense(pooled))
    model = keras.Model(inputs, out)
    conv_k = np.array([[[[1.0, -1.0]]]], np.float32)  # channel 0 = x, channel 1 = -x
    conv.set_weights([conv_k, np.array([0.0, 0.5], np.float32)])
    w = np.array([[2.0, -1.0, 0.5], [1.0, 3.0, -2.0]], np.float32)
    dense.set_weights([w, np.zeros(3, np.float32)])
    return model, conv_k, w


def test_grad_cam_equals_hand_computation():
    model, conv_k, w = _known_model()
    x = np.linspace(-1, 1, 16, dtype=np.float32).reshape(1, 4, 4, 1)
    x[0, 0, 0, 0] = 0.3  # break the symmetry of the ramp
    # By hand: A_k = relu(conv) on the 4x4 grid; logit_c = sum_k w[k, c] * mean(A_k), so
    # d logit_c / d A_k(i, j) = w[k, c] / 16 everywhere and alpha_k = w[k, c] / 16.
    a = np.maximum(0.0, x[0, ..., 0:1] * conv_k[0, 0, 0] + np.array([0.0, 0.5]))
    for c in range(3):
        alpha = w[:, c] / 16.0
        cam = np.maximum(0.0, (a * alpha).sum(-1))
        expected = cam / cam.max() if cam.max() > 0 else cam
        got = explain.grad_cam(model, x, layer_name="relu", class_index=c)
        np.testing.assert_allclose(got[0], expected, atol=1e-5)
    # class_index=None explains the predicted class
    pred = int(np.argmax(model.predict(x, verbose=0)))
    heat, classes = explain.grad_cam(model, x, layer_name="relu", return_classes=True)
    assert classes.tolist() == [pred]
    np.testing.assert_allclose(heat, explain.grad_cam(model, x, "relu", pred), atol=1e-6)


@pytest.mark.parametrize("method", gradcam.METHODS)
def test_matches_tf_keras_vis_on_layer_grid(tiny_models, method):
    """Our maps equal the established library's on the feature grid (both methods, 2D + 3D)."""
    from tf_keras_vis.gradcam import Gradcam, GradcamPlusPlus
    from tf_keras_vis.utils.model_modifiers import ReplaceToLinear
    from tf_keras_vis.utils.scores import CategoricalScore

    cls = {"gradcam": Gradcam, "gradcam++": GradcamPlusPlus}[method]
    for name in ("cnn2d", "cnn3d"):
        model = tiny_models[name]
        layer = explain.default_layer(model)
        x = _inputs(model, 2)
        ours = explain.grad_cam(model, x, layer, 1, method=method, upsample=False)
        vis = cls(model, model_modifier=ReplaceToLinear(), clone=True)
        theirs = vis(
            CategoricalScore([1, 1]),
            x,
            penultimate_layer=layer,
            seek_penultimate_conv_layer=False,
            expand_cam=False,
            normalize_cam=False,
        )
        theirs = np.asarray(theirs)
        theirs = theirs / np.maximum(theirs.reshape(2, -1).max(1), 1e-12).reshape(
            (2,) + (1,) * (theirs.ndim - 1)
        )
        np.testing.assert_allclose(ours, theirs, atol=1e-4, err_msg=f"{name} {method}")


# ---------------------------------------------------------------------------------------------
# Every family, both methods: shape, range, class dependence, default layer
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(TINY))
@pytest.mark.parametrize("method", gradcam.METHODS)
def test_shape_range_and_class_dependence(tiny_models, name, method):
    model = tiny_models[name]
    x = _inputs(model, 3)
    maps = [explain.grad_cam(model, x, class_index=c, method=method) for c in range(3)]
    for heat in maps:
        assert heat.shape == x.shape[:-1]
        assert heat.dtype == np.float32
        assert np.all(np.isfinite(heat)) and heat.min() >= 0.0 and heat.max() <= 1.0 + 1e-6
        peaks = heat.reshape(3, -1).max(1)
        assert np.all((np.abs(peaks - 1.0) < 1e-5) | (peaks == 0.0))  # normalised per sample
    assert any(not np.allclose(maps[0], m, atol=1e-3) for m in maps[1:]), "class-independent"


@pytest.mark.parametrize("name", list(TINY))
def test_default_layer_is_last_conv_activation(tiny_models, name):
    assert explain.default_layer(tiny_models[name]) == TINY[name][2]


def test_vgg16_default_layer_and_map():
    model = build_model("vgg16", (28, 28, 3), 2, "binary-class", weights=None, dense_units=8)
    # at 32 px block5_conv3 is a 2x2 grid (four blobs whatever the model does): the default is
    # the deepest layer with at least 3 cells per axis
    assert explain.default_layer(model) == "block4_conv3"
    heat = explain.grad_cam(model, _inputs(model, 2))
    assert heat.shape == (2, 28, 28)  # upsampled back through the in-graph 32 px resize


def test_per_sample_class_index_and_batching(tiny_models):
    model = tiny_models["cnn2d"]
    x = _inputs(model, 5)
    classes = np.array([0, 1, 2, 1, 0])
    together = explain.grad_cam(model, x, class_index=classes, batch_size=2)
    alone = np.concatenate(
        [explain.grad_cam(model, x[i : i + 1], None, int(c)) for i, c in enumerate(classes)]
    )
    np.testing.assert_allclose(together, alone, atol=1e-5)


def test_eager_equals_compiled(tiny_models):
    model = tiny_models["cnn3d"]
    x = _inputs(model, 2)
    np.testing.assert_allclose(
        explain.grad_cam(model, x, compiled=False), explain.grad_cam(model, x), atol=1e-5
    )


def test_multilabel_label_index():
    model = build_model("cnn2d", (16, 16, 1), 4, "multi-label, binary-class", filters=(4, 8))
    x = _inputs(model, 2)
    maps = [explain.grad_cam(model, x, class_index=label) for label in range(4)]
    assert all(m.shape == (2, 16, 16) for m in maps)
    with pytest.raises(ValueError, match="out of range"):
        explain.grad_cam(model, x, class_index=4)


def test_all_zero_map_stays_zero():
    inputs = keras.Input((4, 4, 1))
    feats = keras.layers.Conv2D(2, 1, name="conv", kernel_initializer="zeros")(inputs)
    logits = keras.layers.Dense(2, name="logits")(keras.layers.GlobalAveragePooling2D()(feats))
    model = keras.Model(inputs, keras.layers.Activation("softmax")(logits))
    heat = explain.grad_cam(model, np.ones((1, 4, 4, 1), np.float32))
    assert np.all(heat == 0.0)


def test_trilinear_upsample_is_exact_for_linear_fields():
    d, h, w = np.meshgrid(np.arange(3.0), np.arange(4.0), np.arange(5.0), indexing="ij")
    grid = (1.0 * d + 2.0 * h - 0.5 * w)[None].astype(np.float32)
    up = gradcam._upsample(tf.constant(grid), tf.constant([6, 8, 10])).numpy()[0]
    # half-pixel centres: output index o maps to input coordinate (o + 0.5) / 2 - 0.5
    coords = [(np.arange(n) + 0.5) / 2 - 0.5 for n in (6, 8, 10)]
    cd, ch, cw = np.meshgrid(*coords, indexing="ij")
    expected = 1.0 * cd + 2.0 * ch - 0.5 * cw
    inner = (slice(1, -1),) * 3  # borders clamp to the edge, interior is exact
    np.testing.assert_allclose(up[inner], expected[inner], atol=1e-5)


@pytest.mark.parametrize(
    ("grid", "size"), [((2, 2), (28, 28)), ((7, 5), (28, 9)), ((3, 4, 2), (28, 28, 28))]
)
def test_align_corners_upsample_equals_scipy_zoom(grid, size):
    from scipy.ndimage import zoom

    cam = np.random.default_rng(0).random((2, *grid)).astype(np.float32)
    got = gradcam._upsample_align_corners(tf.constant(cam), tf.constant(size)).numpy()
    want = zoom(cam, (1, *(o / i for o, i in zip(size, grid, strict=True))), order=1)
    assert got.shape == want.shape == (2, *size)
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_matches_tf_keras_vis_at_input_resolution(tiny_models):
    """With tf-keras-vis' resize convention the upsampled maps agree too, 2D and 3D."""
    from tf_keras_vis.gradcam import Gradcam
    from tf_keras_vis.utils.model_modifiers import ReplaceToLinear
    from tf_keras_vis.utils.scores import CategoricalScore

    for name in ("cnn2d", "cnn3d"):
        model = tiny_models[name]
        layer = explain.default_layer(model)
        x = _inputs(model, 2)
        ours = explain.grad_cam(model, x, layer, 1, upsample="align_corners")
        default = explain.grad_cam(model, x, layer, 1)
        vis = Gradcam(model, model_modifier=ReplaceToLinear(), clone=True)
        theirs = np.asarray(
            vis(
                CategoricalScore([1, 1]),
                x,
                penultimate_layer=layer,
                seek_penultimate_conv_layer=False,
                expand_cam=True,
            )
        )
        assert ours.shape == theirs.shape == default.shape == x.shape[:-1]
        for i in range(2):
            r = np.corrcoef(ours[i].ravel(), theirs[i].ravel())[0, 1]
            assert r > 0.999, f"{name}: r = {r}"
        # the default half-pixel resize is a different (documented) convention
        assert not np.allclose(default, ours, atol=1e-3)


def test_unknown_upsample_mode_is_refused(tiny_models):
    model = tiny_models["cnn2d"]
    with pytest.raises(ValueError, match="align_corners"):
        explain.grad_cam(model, _inputs(model, 1), upsample="nearest")


# ---------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------
def test_nested_model_is_refused():
    inner_in = keras.Input((8, 8, 1))
    inner = keras.Model(inner_in, keras.layers.Conv2D(2, 3, name="c")(inner_in), name="backbone")
    outer_in = keras.Input((8, 8, 1))
    feats = keras.layers.GlobalAveragePooling2D()(inner(outer_in))
    model = keras.Model(outer_in, keras.layers.Dense(2, name="logits")(feats))
    with pytest.raises(ValueError, match="nested model.*backbone.*flat"):
        explain.grad_cam(model, np.zeros((1, 8, 8, 1), np.float32))


def test_unknown_layer_lists_candidates(tiny_models):
    model = tiny_models["cnn2d"]
    with pytest.raises(ValueError, match="not a spatial layer.*block1_conv1"):
        explain.grad_cam(model, _inputs(model), layer_name="no_such_layer")
    with pytest.raises(ValueError, match="not a spatial layer"):
        explain.grad_cam(model, _inputs(model), layer_name="logits")  # exists but not spatial
    # a refused name is not cached: asking again refuses again
    with pytest.raises(ValueError, match="not a spatial layer"):
        explain.grad_cam(model, _inputs(model), layer_name="no_such_layer")
    with pytest.raises(ValueError, match="layer name"):
        explain.grad_cam(model, _inputs(model), layer_name=["block1_conv1"])


@pytest.mark.parametrize(
    ("make_x", "match"),
    [
        (lambda: np.zeros((2, 16, 16, 3), np.float32), "channel"),
        (lambda: np.zeros((2, 20, 16, 1), np.float32), "axis 1"),
        (lambda: np.zeros((16, 16, 1, 1, 1), np.float32), "expects a batch"),
        (lambda: np.full((1, 16, 16, 1), np.nan, np.float32), "NaN"),
        (lambda: np.full((1, 16, 16, 1), np.inf, np.float32), "infinite"),
        (lambda: np.array([["a"]]), "numeric"),
    ],
)
def test_bad_inputs(tiny_models, make_x, match):
    with pytest.raises(ValueError, match=match):
        explain.grad_cam(tiny_models["cnn2d"], make_x())


@pytest.mark.parametrize("bad", [3, -1, [0, 1], 1.5, np.array([0, 9, 1])])
def test_bad_class_index(tiny_models, bad):
    with pytest.raises(ValueError, match="class_index"):
        explain.grad_cam(tiny_models["cnn2d"], _inputs(tiny_models["cnn2d"], 3), class_index=bad)


def test_bad_method(tiny_models):
    with pytest.raises(ValueError, match="not supported.*gradcam"):
        explain.grad_cam(tiny_models["cnn2d"], _inputs(tiny_models["cnn2d"]), method="lime")


def test_a_new_cam_method_is_one_weight_function(tiny_models, monkeypatch):
    """A method plugs in through CAM_WEIGHTS alone: all-ones weights give ReLU(sum_c A_c)."""
    model = tiny_models["cnn3d"]
    x = _inputs(model, 2)

    def ones(grads, acts, axes):
        return tf.ones_like(tf.reduce_mean(grads, axis=axes, keepdims=True))

    monkeypatch.setitem(gradcam.CAM_WEIGHTS, "ones", ones)
    heat = explain.grad_cam(model, x, "relu2", method="ones", upsample=False)
    acts = keras.Model(model.inputs, model.get_layer("relu2").output)(x).numpy()
    expected = np.maximum(acts.sum(-1), 0.0)
    expected /= expected.reshape(2, -1).max(1).reshape(2, 1, 1, 1)
    np.testing.assert_allclose(heat, expected, atol=1e-5)
    assert gradcam.METHODS == ("gradcam", "gradcam++")


# ---------------------------------------------------------------------------------------------
# Drawing
# ---------------------------------------------------------------------------------------------
def test_overlay_and_contour():
    image = np.zeros((16, 16), np.float32)
    heat = np.zeros((8, 8), np.float32)
    heat[2:4, 2:4] = 1.0  # resized to the image
    plain = explain.overlay(image, heat, alpha=0.0)
    assert plain.dtype == np.uint8 and plain.shape == (16, 16, 3) and plain.max() == 0
    blended = explain.overlay(image, heat, alpha=0.5)
    assert blended.max() > 0
    outlined = explain.overlay(
        image, heat, alpha=0.5, contour_quantile=0.9, contour_color=(0, 255, 0)
    )
    green = np.all(outlined == (0, 255, 0), axis=-1)
    assert 0 < green.sum() < 16 * 16 * 0.2  # an outline, not a filled area
    assert explain.colorize(np.array([[0.0, 1.0]]), "gray").tolist() == [
        [[0, 0, 0], [255, 255, 255]]
    ]
    with pytest.raises(ValueError, match="alpha"):
        explain.overlay(image, heat, alpha=2.0)


@pytest.mark.parametrize(
    ("grid", "size"),
    [((8, 8), (16, 16)), ((28, 28), (512, 512)), ((28, 28), (20, 20)), ((7, 13), (50, 9))],
)
def test_overlay_resize_is_tf_image_resize(grid, size):
    """The numpy resize behind overlay() reproduces tf.image.resize (bilinear, half-pixel)."""
    heat = np.random.default_rng(0).random(grid, dtype=np.float32)
    want = tf.image.resize(heat[None, ..., None], size).numpy()[0, ..., 0]
    np.testing.assert_array_equal(imaging._resize_2d(heat, size), want)


def test_imaging_needs_no_tensorflow():
    """core.imaging draws without TensorFlow (the app can show pictures before a model loads)."""
    code = "import sys, core.imaging; assert 'tensorflow' not in sys.modules, 'tensorflow'"
    root = Path(__file__).resolve().parents[1]
    subprocess.run([sys.executable, "-c", code], check=True, cwd=root)


def test_package_reexports_the_documented_names():
    """The names docs/architecture.md lists for core.explain import from the package."""
    from core.explain import (  # noqa: F401 - the import is the test
        METHODS,
        alignment_summary,
        anatomy_mask,
        colorize,
        compute_alignment_run,
        deletion_curve,
        energy_in_mask,
        grad_cam,
        grad_cam_plus_plus,
        occlusion_agreement,
        occlusion_map,
        overlay,
        overlay_slice,
        take_slice,
    )

    assert overlay is imaging.overlay and set(explain.__all__) <= set(dir(explain))


def test_slices():
    vol = np.arange(2 * 3 * 4).reshape(2, 3, 4).astype(np.float32)
    assert explain.take_slice(vol, 1, 2).shape == (2, 4)
    assert explain.take_slice(vol[..., None], 0, 1).shape == (3, 4, 1)
    rgb = explain.overlay_slice(vol / vol.max(), vol / vol.max(), axis=2, index=3)
    assert rgb.shape == (2, 3, 3)
    with pytest.raises(ValueError, match="out of range"):
        explain.take_slice(vol, 0, 2)
    with pytest.raises(ValueError, match="axis"):
        explain.take_slice(vol, 3, 0)


# ---------------------------------------------------------------------------------------------
# Occlusion, alignment, deletion
# ---------------------------------------------------------------------------------------------
def _quadrant_predict(batch: np.ndarray) -> np.ndarray:
    """Class 0 score = mean brightness of the top-left quadrant: a known-truth 'model'."""
    score = batch[:, :4, :4, 0].mean(axis=(1, 2))
    return np.stack([score, 1.0 - score], axis=1)


def test_occlusion_map_finds_the_evidence():
    x = np.ones((8, 8, 1), np.float32)
    occ = explain.occlusion_map(_quadrant_predict, x, class_index=0, patch=2)
    assert occ.shape == (8, 8)
    assert occ[:4, :4].min() > 0 and np.allclose(occ[4:, :], 0) and np.allclose(occ[:, 4:], 0)
    vol = np.ones((6, 6, 6, 1), np.float32)
    occ3 = explain.occlusion_map(lambda b: b.reshape(len(b), -1)[:, :1], vol, 0, patch=3)
    assert occ3.shape == (6, 6, 6) and occ3[0, 0, 0] > 0 and occ3[5, 5, 5] == 0


def test_occlusion_agreement():
    a = np.random.default_rng(0).random((5, 5))
    assert explain.occlusion_agreement(a, 2 * a + 1) == pytest.approx(1.0)
    assert explain.occlusion_agreement(a, -a) == pytest.approx(-1.0)
    assert np.isnan(explain.occlusion_agreement(a, np.zeros_like(a)))


def test_anatomy_masks():
    vol = np.zeros((8, 8, 8, 1), np.float32)
    vol[3:5, 3:5, 3:5] = 1.0
    mask = explain.anatomy_mask(vol, "adrenalmnist3d")
    assert mask.shape == (8, 8, 8) and mask[3:5, 3:5, 3:5].all()
    assert mask.sum() == 8 + 6 * 4  # cube plus a one-voxel (face-connected) dilation
    assert explain.anatomy_mask(vol[None], "vesselmnist3d").shape == (1, 8, 8, 8)

    yy, xx = np.mgrid[:28, :28]
    fundus = np.zeros((28, 28, 3), np.float32)
    disk = (yy - 14) ** 2 + (xx - 14) ** 2 < 10**2
    fundus[disk] = 0.6
    fundus[12:15, 12:15] = 0.0  # a dark lesion inside the disk: filled, not a hole
    fundus[0, 0] = 0.9  # a stray bright corner pixel: not the largest component
    retina = explain.anatomy_mask(fundus, "retinamnist")
    assert np.array_equal(retina, disk)
    with pytest.raises(ValueError, match="no anatomy mask"):
        explain.anatomy_mask(fundus, "pathmnist")


def test_energy_in_mask():
    mask = np.zeros((4, 4), bool)
    mask[:2] = True
    assert explain.energy_in_mask(np.ones((4, 4)), mask) == pytest.approx(0.5)  # uniform = area
    heat = np.zeros((4, 4))
    heat[0, 0] = 3.0
    heat[3, 3] = 1.0
    assert explain.energy_in_mask(heat, mask) == pytest.approx(0.75)
    assert np.isnan(explain.energy_in_mask(np.zeros((4, 4)), mask))


def test_deletion_curve_salient_beats_random():
    x = np.ones((8, 8, 1), np.float32)
    truth = np.zeros((8, 8), np.float32)
    truth[:4, :4] = 1.0
    curve = explain.deletion_curve(_quadrant_predict, x, truth, class_index=0, steps=8)
    assert len(curve["salient"]) == len(curve["random"]) == 9
    assert curve["salient"][0] == pytest.approx(1.0) and curve["salient"][2] == pytest.approx(0.0)
    assert curve["auc_salient"] < curve["auc_random"]


def test_alignment_summary_3d_is_json_ready(tiny_models):
    model = tiny_models["cnn3d"]
    rng = np.random.default_rng(0)
    x = (rng.random((6, 8, 8, 8, 1)) > 0.7).astype(np.float32)
    y = rng.integers(0, 3, (6, 1))
    summary = explain.alignment_summary(model, x, y, "adrenalmnist3d", n=4, steps=4)
    json.dumps(summary)  # must serialise as is
    assert summary["n"] == 4 and summary["layer"] == "relu2"
    assert 0.0 <= summary["energy_in_mask_mean"] <= 1.0
    assert 0.0 < summary["mask_area_mean"] < 1.0
    assert len(summary["deletion_salient_mean"]) == 5
    assert summary["correct_predictions"] is not None
    no_mask = explain.alignment_summary(model, x, None, "nodulemnist3d", n=2, steps=2)
    assert no_mask["energy_in_mask_mean"] is None


@pytest.mark.slow
def test_compute_alignment_run_writes_explain_json(tiny_cnn3d_run, tmp_path):
    flag = "adrenalmnist3d"
    run = tiny_cnn3d_run  # in TRAINED_MODELS_DIR (tmp)
    result = explain.compute_alignment_run(run, n=3, steps=2)
    written = json.loads((run / "explain.json").read_text())
    assert written["dataset"] == flag and set(gradcam.METHODS) <= set(written)
    assert written["gradcam"]["n"] == 3 == result["gradcam++"]["n"]
