"""core.explain.attribution: every method on tiny 2D and 3D models (shape, range, class
dependence), hand-computed cases, equality with tf-keras-vis, layer choice, bad inputs."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf  # conftest imported core first, so this is Keras 2 (TF_USE_LEGACY_KERAS)
import tf_keras as keras

from core import explain
from core.explain.layers import MIN_GRID
from core.models import build_model, compile_model

TASK = "multi-class"
TINY = {
    "cnn2d": ((16, 16, 1), {"filters": (4, 8)}),
    "cnn3d": ((8, 8, 8, 1), {"filters": (4, 8), "dense_units": 8}),
}
# fast options for the slow methods, so the whole matrix stays a few seconds
FAST = {"integrated_gradients": {"steps": 8}, "smoothgrad": {"samples": 4}}


@pytest.fixture(scope="module")
def tiny_models() -> dict[str, keras.Model]:
    """One tiny model per rank, trained one step so BatchNorm statistics move."""
    rng = np.random.default_rng(0)
    models = {}
    for name, (shape, kwargs) in TINY.items():
        keras.utils.set_random_seed(1)
        model = build_model(name, shape, 3, TASK, **kwargs)
        compile_model(model, TASK)
        x = rng.random((8, *shape), dtype=np.float32)
        model.fit(x, rng.integers(0, 3, (8, 1)), epochs=1, batch_size=8, verbose=0)
        models[name] = model
    return models


def _inputs(model: keras.Model, n: int = 3, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, *model.input_shape[1:]), dtype=np.float32)


def _max_norm(maps: np.ndarray) -> np.ndarray:
    maps = np.asarray(maps, np.float64)
    peak = maps.reshape(len(maps), -1).max(1).reshape((-1,) + (1,) * (maps.ndim - 1))
    return np.divide(maps, peak, out=np.zeros_like(maps), where=peak > 0)


def _min_max(maps: np.ndarray) -> np.ndarray:
    maps = np.asarray(maps, np.float64)
    flat = maps.reshape(len(maps), -1)
    lo = flat.min(1).reshape((-1,) + (1,) * (maps.ndim - 1))
    hi = flat.max(1).reshape((-1,) + (1,) * (maps.ndim - 1))
    return (maps - lo) / np.maximum(hi - lo, 1e-12)


def test_methods_are_listed_in_order():
    assert explain.METHODS == (
        "gradcam",
        "gradcam++",
        "hirescam",
        "layercam",
        "layercam_fused",
        "scorecam",
        "integrated_gradients",
        "smoothgrad",
        "occlusion",
    )
    for name in explain.METHODS:
        info = explain.method_info(name)
        assert (
            info["title"] and len(info["help"]) > 40 and info["layers"] in ("one", "many", "none")
        )


# ---------------------------------------------------------------------------------------------
# Every method, 2D and 3D: shape, range, class dependence
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(TINY))
@pytest.mark.parametrize("method", explain.METHODS)
def test_shape_range_and_class_dependence(tiny_models, name, method):
    model = tiny_models[name]
    x = _inputs(model, 2)
    opts = FAST.get(method, {})
    maps = []
    for c in range(3):
        heat, classes = explain.attribution(
            model, x, method, class_index=c, return_classes=True, **opts
        )
        assert classes.tolist() == [c, c]
        assert heat.shape == x.shape[:-1] and heat.dtype == np.float32
        assert np.all(np.isfinite(heat)) and heat.min() >= 0.0 and heat.max() <= 1.0
        peaks = heat.reshape(2, -1).max(1)
        assert np.all((np.abs(peaks - 1.0) < 1e-6) | (peaks == 0.0))  # divided by the maximum
        maps.append(heat)
    differs = [not np.allclose(maps[a], maps[b], atol=1e-4) for a, b in ((0, 1), (0, 2), (1, 2))]
    assert any(differs), f"{method} on {name} gives the same map for every class"
    predicted = np.argmax(model.predict(x, verbose=0), axis=-1)
    _, classes = explain.attribution(model, x, method, return_classes=True, **opts)
    assert classes.tolist() == predicted.tolist()


@pytest.mark.parametrize("method", ["gradcam", "scorecam", "integrated_gradients", "smoothgrad"])
def test_batching_does_not_change_maps(tiny_models, method):
    model = tiny_models["cnn2d"]
    x = _inputs(model, 3)
    opts = FAST.get(method, {})
    together = explain.attribution(model, x, method, class_index=1, batch_size=3, **opts)
    alone = explain.attribution(model, x, method, class_index=1, batch_size=1, **opts)
    np.testing.assert_allclose(together, alone, atol=1e-5)


def test_compiled_function_is_cached_per_model_and_options(tiny_models):
    model = tiny_models["cnn2d"]
    m = explain.get_method("gradcam")
    layers = explain.resolve_layers(model, "gradcam")
    first = m.function(model, layers, m.options({}))
    assert m.function(model, layers, m.options({})) is first
    assert m.function(model, layers, m.options({"upsample": False})) is not first


# ---------------------------------------------------------------------------------------------
# Hand-computed cases
# ---------------------------------------------------------------------------------------------
CONV_K = np.array([[[[1.0, -1.0]]]], np.float32)  # channel 0 = x, channel 1 = -x
CONV_B = np.array([0.0, 0.5], np.float32)
DENSE_W = np.array([[2.0, -1.0, 0.5], [1.0, 3.0, -2.0]], np.float32)


def _gap_model(bias: np.ndarray = CONV_B) -> keras.Model:
    """1x1 conv (2 channels) -> ReLU -> global average pooling -> logits (3) -> softmax."""
    inputs = keras.Input((4, 4, 1))
    conv = keras.layers.Conv2D(2, 1, name="conv")
    feats = keras.layers.ReLU(name="relu")(conv(inputs))
    pooled = keras.layers.GlobalAveragePooling2D()(feats)
    dense = keras.layers.Dense(3, name="logits")
    out = keras.layers.Activation("softmax", name="predictions")(dense(pooled))
    conv.build((None, 4, 4, 1))
    conv.set_weights([CONV_K, bias])
    dense.set_weights([DENSE_W, np.zeros(3, np.float32)])
    return keras.Model(inputs, out)


def _ramp() -> np.ndarray:
    x = np.linspace(-1, 1, 16, dtype=np.float32).reshape(1, 4, 4, 1)
    x[0, 0, 0, 0] = 0.3  # break the symmetry of the ramp
    return x


def _acts(x: np.ndarray, bias: np.ndarray = CONV_B) -> np.ndarray:
    return np.maximum(0.0, x[0, ..., 0:1] * CONV_K[0, 0, 0] + bias)  # (4, 4, 2)


@pytest.mark.parametrize("method", ["gradcam", "hirescam", "layercam"])
def test_gradient_cams_equal_hand_computation_on_a_gap_model(method):
    # logit_c = sum_k w[k, c] * mean(A_k): d logit_c / d A_k(i, j) = w[k, c] / 16 everywhere,
    # so Grad-CAM and HiResCAM both weight A_k by w[k, c] / 16; LayerCAM by max(w[k, c], 0) / 16.
    model, x = _gap_model(), _ramp()
    a = _acts(x)
    for c in range(3):
        grads = DENSE_W[:, c] / 16.0
        if method == "layercam":
            grads = np.maximum(grads, 0.0)
        expected = _max_norm(np.maximum(0.0, (a * grads).sum(-1))[None])
        got = explain.attribution(model, x, method, class_index=c, layer_name="relu")
        np.testing.assert_allclose(got, expected, atol=1e-5, err_msg=f"class {c}")


def test_hirescam_equals_hand_computation_on_a_flatten_model():
    # logit_c = sum_{i,j,k} W[(i,j,k), c] * A_k(i,j): the gradient is W itself, position by
    # position, so HiResCAM = ReLU(sum_k W * A) and differs from Grad-CAM's mean weights.
    inputs = keras.Input((4, 4, 1))
    conv = keras.layers.Conv2D(2, 1, name="conv")
    feats = keras.layers.ReLU(name="relu")(conv(inputs))
    dense = keras.layers.Dense(3, name="logits")
    out = keras.layers.Activation("softmax")(dense(keras.layers.Flatten()(feats)))
    model = keras.Model(inputs, out)
    conv.set_weights([CONV_K, CONV_B])
    w = np.random.default_rng(3).normal(size=(32, 3)).astype(np.float32)
    dense.set_weights([w, np.zeros(3, np.float32)])
    x = _ramp()
    a = _acts(x)
    for c in range(3):
        expected = _max_norm(np.maximum(0.0, (a * w[:, c].reshape(4, 4, 2)).sum(-1))[None])
        got = explain.attribution(model, x, "hirescam", class_index=c, layer_name="relu")
        np.testing.assert_allclose(got, expected, atol=1e-5)
    grad = explain.attribution(model, x, "gradcam", class_index=0, layer_name="relu")
    assert not np.allclose(grad, explain.attribution(model, x, "hirescam", 0, "relu"), atol=1e-3)


def test_scorecam_equals_hand_computation():
    # The layer grid is the input grid, so each mask is the channel scaled to [0, 1]; the
    # channel's weight is the softmax probability of the class on the masked input.
    # bias 1.5: both channels positive with minimum 0.5, so the masks' min-max scaling shows
    bias = np.array([1.5, 1.5], np.float32)
    model, x = _gap_model(bias), _ramp()
    a = _acts(x, bias)
    for c in range(3):
        weights = []
        for k in range(2):
            mask = (a[..., k] - a[..., k].min()) / (a[..., k].max() - a[..., k].min() + 1e-7)
            masked = x[0, ..., 0] * mask
            logits = _acts(masked[None, ..., None], bias).mean((0, 1)) @ DENSE_W
            probs = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
            weights.append(probs[c])
        expected = _max_norm(np.maximum(0.0, (a * np.array(weights)).sum(-1))[None])
        got = explain.attribution(model, x, "scorecam", class_index=c, layer_name="relu")
        np.testing.assert_allclose(got, expected, atol=1e-5)


def test_scorecam_skips_dead_channels_without_changing_the_map():
    """A channel that never fires is skipped; tf-keras-vis, which runs it, gives the same map."""
    from tf_keras_vis.scorecam import Scorecam
    from tf_keras_vis.utils.model_modifiers import ReplaceToLinear
    from tf_keras_vis.utils.scores import CategoricalScore

    inputs = keras.Input((6, 6, 1))
    conv = keras.layers.Conv2D(3, 3, padding="same", name="conv")
    feats = keras.layers.ReLU(name="relu")(conv(inputs))
    dense = keras.layers.Dense(2, name="logits")
    out = keras.layers.Activation("softmax")(dense(keras.layers.Flatten()(feats)))
    model = keras.Model(inputs, out)
    kernel = np.random.default_rng(8).normal(size=(3, 3, 1, 3)).astype(np.float32)
    kernel[..., 2] = 0.0  # channel 2: zero kernel, negative bias -> ReLU output always 0
    conv.set_weights([kernel, np.array([0.1, 0.2, -1.0], np.float32)])
    dense.set_weights(
        [np.random.default_rng(9).normal(size=(108, 2)).astype(np.float32), np.zeros(2, np.float32)]
    )
    x = np.random.default_rng(10).random((2, 6, 6, 1), dtype=np.float32)
    ours = explain.attribution(model, x, "scorecam", 1, "relu", upsample=False)
    theirs = Scorecam(model, model_modifier=ReplaceToLinear(), clone=True)(
        CategoricalScore([1, 1]),
        x,
        penultimate_layer="relu",
        seek_penultimate_conv_layer=False,
        expand_cam=False,
        normalize_cam=False,
    )
    assert ours.max() == 1.0
    np.testing.assert_allclose(ours, _max_norm(np.asarray(theirs)), atol=1e-5)


def _linear_model(shape: tuple[int, ...]) -> tuple[keras.Model, np.ndarray]:
    """Flatten -> logits (3 classes) -> softmax: the input gradient of class c is W[:, c]."""
    inputs = keras.Input(shape)
    dense = keras.layers.Dense(3, name="logits")
    out = keras.layers.Activation("softmax")(dense(keras.layers.Flatten()(inputs)))
    model = keras.Model(inputs, out)
    w = np.random.default_rng(4).normal(size=(int(np.prod(shape)), 3)).astype(np.float32)
    dense.set_weights([w, np.full(3, 0.3, np.float32)])
    return model, w


@pytest.mark.parametrize("shape", [(5, 6, 2), (3, 4, 5, 2)])
def test_pixel_methods_equal_hand_computation_on_a_linear_model(shape):
    model, w = _linear_model(shape)
    x = np.random.default_rng(5).random((2, *shape), dtype=np.float32)
    for c in range(3):
        wc = w[:, c].reshape(shape)
        # IG of a linear score is exact at any step count: (x - 0) * W, summed over channels
        ig = _max_norm(np.maximum(0.0, (x * wc).sum(-1)))
        got = explain.attribution(model, x, "integrated_gradients", class_index=c, steps=3)
        np.testing.assert_allclose(got, ig, atol=1e-5)
        # the gradient is W whatever the noise: SmoothGrad = max over channels of |W|
        sg = _max_norm(np.broadcast_to(np.abs(wc).max(-1), x.shape[:-1]))
        got = explain.attribution(model, x, "smoothgrad", class_index=c, samples=3)
        np.testing.assert_allclose(got, sg, atol=1e-5)


def test_occlusion_is_the_positive_score_drop():
    model, _ = _linear_model((8, 8, 1))
    x = np.random.default_rng(6).random((1, 8, 8, 1), dtype=np.float32)
    raw = explain.occlusion_map(explain.keras_predict_fn(model), x[0], 2, patch=4, stride=2)
    got = explain.attribution(model, x, "occlusion", class_index=2)
    np.testing.assert_allclose(got[0], _max_norm(np.maximum(raw, 0.0)[None])[0], atol=1e-6)


def test_fused_layercam_averages_per_layer_maps(tiny_models):
    model = tiny_models["cnn2d"]
    x = _inputs(model, 2)
    layers = explain.fused_layers(model)
    assert len(layers) == 2  # the tiny model has two resolution stages
    single = [explain.attribution(model, x, "layercam", 1, layer) for layer in layers]
    fused = explain.attribution(model, x, "layercam_fused", 1)
    np.testing.assert_allclose(fused, _max_norm(sum(single) / 2), atol=1e-5)
    one = explain.attribution(model, x, "layercam_fused", 1, [layers[0]])
    np.testing.assert_allclose(one, single[0], atol=1e-6)


def test_gradcam_equals_the_grad_cam_function(tiny_models):
    for model in tiny_models.values():
        x = _inputs(model, 2)
        np.testing.assert_allclose(
            explain.attribution(model, x, "gradcam", 2),
            explain.grad_cam(model, x, class_index=2),
            atol=1e-6,
        )


# ---------------------------------------------------------------------------------------------
# Equality with tf-keras-vis on the layer grid
# ---------------------------------------------------------------------------------------------
def _tf_keras_vis(cls_name: str, model: keras.Model):
    import tf_keras_vis.layercam
    import tf_keras_vis.scorecam
    from tf_keras_vis.utils.model_modifiers import ReplaceToLinear

    module = tf_keras_vis.scorecam if cls_name == "Scorecam" else tf_keras_vis.layercam
    return getattr(module, cls_name)(model, model_modifier=ReplaceToLinear(), clone=True)


@pytest.mark.parametrize("name", list(TINY))
@pytest.mark.parametrize(
    ("method", "peer", "opts"),
    [
        ("layercam", "Layercam", {"upsample": False}),
        ("scorecam", "Scorecam", {"upsample": False, "mask_upsample": "align_corners"}),
    ],
)
def test_cams_match_tf_keras_vis(tiny_models, name, method, peer, opts):
    from tf_keras_vis.utils.scores import CategoricalScore

    model = tiny_models[name]
    layer = explain.default_layer(model)
    x = _inputs(model, 2)
    ours = explain.attribution(model, x, method, 1, layer, **opts)
    theirs = _tf_keras_vis(peer, model)(
        CategoricalScore([1, 1]),
        x,
        penultimate_layer=layer,
        seek_penultimate_conv_layer=False,
        expand_cam=False,
        normalize_cam=False,
    )
    assert ours.shape[1:] == explain.layer_grid(model, layer)
    np.testing.assert_allclose(ours, _max_norm(np.asarray(theirs)), atol=1e-4)


@pytest.mark.parametrize("name", list(TINY))
def test_smoothgrad_matches_tf_keras_vis_with_the_same_noise(tiny_models, name):
    from tf_keras_vis.saliency import Saliency
    from tf_keras_vis.utils.model_modifiers import ReplaceToLinear
    from tf_keras_vis.utils.scores import CategoricalScore

    model = tiny_models[name]
    x = _inputs(model, 1)
    samples = 5
    # tf-keras-vis draws np.random.normal(0, sigma, (samples, n, ...)) = sigma * unit normals
    np.random.seed(7)
    eps = np.random.normal(0.0, 1.0, (samples, 1, *x.shape[1:])).astype(np.float32)
    np.random.seed(7)
    saliency = Saliency(model, model_modifier=ReplaceToLinear(), clone=True)
    theirs = saliency(
        CategoricalScore([2]), x, smooth_samples=samples, smooth_noise=0.2, normalize_map=False
    )
    m = explain.get_method("smoothgrad")
    fn = m.function(model, (), m.options({"samples": samples, "noise": 0.2}))
    ours, _ = fn(tf.constant(x), tf.constant([2], tf.int32), tf.constant(np.swapaxes(eps, 0, 1)))
    np.testing.assert_allclose(_min_max(ours.numpy()), _min_max(theirs), atol=1e-3)


# ---------------------------------------------------------------------------------------------
# Layer choice
# ---------------------------------------------------------------------------------------------
def test_no_default_map_from_a_coarse_grid():
    model = build_model("vgg16", (28, 28, 3), 2, "binary-class", weights=None, dense_units=8)
    assert explain.layer_grid(model, "block5_conv3") == (2, 2)
    candidates = explain.candidate_layers(model)
    names = [n for n, _ in candidates]
    assert "caffe_preprocess" not in names and "block5_conv3" not in names
    assert all(min(grid) >= MIN_GRID for _, grid in candidates)
    for method in ("gradcam", "gradcam++", "hirescam", "layercam", "scorecam"):
        (layer,) = explain.resolve_layers(model, method)
        assert layer == "block4_conv3" and explain.layer_grid(model, layer) == (4, 4)
    fused = explain.fused_layers(model)
    assert fused == ("block2_conv2", "block3_conv3", "block4_conv3")
    assert explain.describe_layers(model, fused[-1:]) == "block4_conv3 (4×4)"


def test_cnn3d_candidates_have_their_grids(tiny_models):
    model = tiny_models["cnn3d"]
    candidates = explain.candidate_layers(model)
    assert candidates[-1] == (explain.default_layer(model), (4, 4, 4))
    assert all(len(grid) == 3 for _, grid in candidates)


def test_a_model_with_only_coarse_grids_gets_its_finest():
    inputs = keras.Input((4, 4, 1))
    a = keras.layers.Conv2D(2, 3, strides=2, padding="same", name="coarse1")(inputs)  # 2x2
    b = keras.layers.Conv2D(2, 3, strides=2, padding="same", name="coarse2")(a)  # 1x1
    out = keras.layers.Dense(2, name="logits")(keras.layers.Flatten()(b))
    model = keras.Model(inputs, out)
    assert explain.candidate_layers(model) == []
    assert explain.default_layer(model) == "coarse1"
    with pytest.raises(ValueError, match="grid of at least 3"):
        explain.fused_layers(model)


# ---------------------------------------------------------------------------------------------
# Bad inputs and arguments
# ---------------------------------------------------------------------------------------------
def test_unknown_method_lists_the_valid_ones(tiny_models):
    with pytest.raises(ValueError, match="choose one of .*layercam_fused"):
        explain.attribution(tiny_models["cnn2d"], _inputs(tiny_models["cnn2d"]), "lime")


@pytest.mark.parametrize(
    ("make_x", "match"),
    [
        (lambda: np.zeros((16, 16, 1), np.float32), "expects a batch"),
        (lambda: np.zeros((1, 16, 16, 3), np.float32), "channel"),
        (lambda: np.full((1, 16, 16, 1), np.nan, np.float32), "NaN"),
        (lambda: np.zeros((0, 16, 16, 1), np.float32), "empty"),
        (lambda: np.array([["a"]]), "numeric"),
    ],
)
@pytest.mark.parametrize("method", ["gradcam", "scorecam", "smoothgrad", "occlusion"])
def test_bad_inputs(tiny_models, make_x, match, method):
    with pytest.raises(ValueError, match=match):
        explain.attribution(tiny_models["cnn2d"], make_x(), method)


@pytest.mark.parametrize("bad", [3, -1, 1.5, [0, 1]])
def test_class_out_of_range(tiny_models, bad):
    model = tiny_models["cnn3d"]
    with pytest.raises(ValueError, match="class_index"):
        explain.attribution(model, _inputs(model, 3), "layercam", class_index=bad)


def test_bad_layers_are_refused_with_the_candidates(tiny_models):
    model = tiny_models["cnn2d"]
    x = _inputs(model, 1)
    with pytest.raises(ValueError, match="Convolution layers"):
        explain.attribution(model, x, "gradcam", layer_name="no_such_layer")
    with pytest.raises(ValueError, match="Convolution layers"):
        explain.attribution(model, x, "layercam_fused", layer_name=["no_such_layer"])
    with pytest.raises(ValueError, match="only 'layercam_fused' takes a list"):
        explain.attribution(model, x, "gradcam", layer_name=["block2_relu2"])
    with pytest.raises(ValueError, match="takes no layer"):
        explain.attribution(model, x, "integrated_gradients", layer_name="block2_relu2")
    with pytest.raises(ValueError, match="at least one layer"):
        explain.attribution(model, x, "layercam_fused", layer_name=[])


def test_unknown_option_lists_the_method_options(tiny_models):
    model = tiny_models["cnn2d"]
    with pytest.raises(ValueError, match="steps"):
        explain.attribution(model, _inputs(model, 1), "integrated_gradients", step=3)
    with pytest.raises(ValueError, match="upsample"):
        explain.attribution(model, _inputs(model, 1), "gradcam", upsample="nearest")


@pytest.mark.parametrize("name", ["cnn2d", "cnn3d"])
def test_scorecam_on_a_layer_that_never_fires_gives_an_empty_map(name):
    """Every channel dead on this input: an all-zero map, not a crash. The 3D model's fused
    BatchNorm rejected the empty batch of masked inputs this used to make (CI, an untrained
    tiny cnn3d whose relu2 stayed at 0 on a synthetic volume)."""
    shape, kwargs = TINY[name]
    prefix = "" if name == "cnn3d" else "block2_"
    keras.utils.set_random_seed(3)
    model = build_model(name, shape, 3, TASK, **kwargs)
    conv = model.get_layer(f"{prefix}conv2")
    weights = conv.get_weights()
    conv.set_weights([np.zeros_like(w) for w in weights])
    bn = model.get_layer(f"{prefix}bn2")
    gamma, beta, mean, var = bn.get_weights()
    bn.set_weights([gamma, np.full_like(beta, -1.0), mean, var])  # -> relu2 outputs 0 everywhere
    layer = f"{prefix}relu2"
    x = _inputs(model, n=2)
    acts = keras.Model(model.inputs, model.get_layer(layer).output)(x)
    assert float(tf.reduce_max(acts)) == 0.0
    cam = explain.attribution(model, x, "scorecam", class_index=1, layer_name=layer)
    assert cam.shape == (2, *shape[:-1]) and np.all(cam == 0.0)
