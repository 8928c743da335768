"""core.quantize.conv3d_rewrite: the Conv3D → Conv2D rewrite is exact, and makes 3D models int8."""

from __future__ import annotations

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tf_keras as keras  # noqa: E402
from conftest import REPO, real_root, require_real_file  # noqa: E402

from core import quantize as q  # noqa: E402
from core.models import build_model  # noqa: E402
from core.quantize.conv3d_rewrite import DepthGroupMask, DepthUngroup  # noqa: E402
from core.tflite_runner import TFLiteModel  # noqa: E402

# (kernel, strides, padding, in channels, filters, then BatchNorm+ReLU, bias)
CASES = [
    ((1, 1, 1), (1, 1, 1), "same", 1, 2, False, True),
    ((1, 1, 1), (2, 2, 2), "valid", 3, 4, True, False),
    ((2, 2, 2), (1, 1, 1), "same", 2, 3, False, True),
    ((2, 2, 2), (2, 2, 2), "valid", 1, 5, True, True),
    ((3, 3, 3), (1, 1, 1), "same", 1, 4, True, False),
    ((3, 3, 3), (2, 2, 2), "same", 3, 2, True, False),
    ((3, 3, 3), (1, 1, 1), "valid", 4, 3, False, True),
    ((5, 5, 5), (1, 1, 1), "same", 2, 3, False, True),
    ((5, 5, 5), (2, 2, 2), "valid", 1, 2, True, True),
    ((3, 1, 3), (1, 1, 1), "same", 2, 4, True, False),
    ((3, 1, 3), (2, 1, 2), "valid", 3, 2, False, True),
    ((1, 3, 5), (2, 1, 1), "same", 1, 3, True, True),
    ((5, 2, 1), (1, 2, 2), "same", 2, 2, False, False),
    ((2, 5, 3), (2, 2, 1), "valid", 3, 4, True, True),
]


def _case_model(kernel, strides, padding, channels, filters, bn_relu, bias, shape) -> keras.Model:
    rng = np.random.default_rng(sum(kernel) + 7 * filters)
    inputs = keras.Input((*shape, channels))
    conv = keras.layers.Conv3D(
        filters, kernel, strides=strides, padding=padding, use_bias=bias, name="conv"
    )
    x = conv(inputs)
    # Random weights, biases and BatchNorm statistics, so nothing cancels by accident.
    conv.set_weights([rng.normal(0, 0.5, w.shape).astype(np.float32) for w in conv.weights])
    if bn_relu:
        bn = keras.layers.BatchNormalization(name="bn")
        x = keras.layers.ReLU(name="relu")(bn(x))
        gamma, beta = rng.normal(1, 0.5, filters), rng.normal(0, 0.5, filters)
        mean, var = rng.normal(0, 1, filters), rng.uniform(0.2, 3, filters)
        bn.set_weights([a.astype(np.float32) for a in (gamma, beta, mean, var)])
    return keras.Model(inputs, x)


@pytest.mark.parametrize("group_width", [64, 0], ids=["grouped", "one-depth-rows"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"k{c[0]}-s{c[1]}-{c[2]}-c{c[3]}-f{c[4]}")
def test_rewrite_is_exact_over_kernel_stride_padding_table(case, group_width):
    # Odd, unequal sides: TensorFlow's SAME padding is asymmetric there.
    shape = (9, 8, 7)
    model = _case_model(*case, shape)
    x = np.random.default_rng(1).random((3, *shape, case[3]), dtype=np.float32)
    rewritten, note = q.rewrite_conv3d(model, group_width=group_width)
    kernel, channels, filters = case[0], case[3], case[4]
    # Few-channel taps compute several output depths per Conv2D row (DepthUngroup after it).
    grouped = group_width and kernel[0] * channels <= 8 and 2 * filters <= group_width
    assert any(isinstance(layer, DepthUngroup) for layer in rewritten.layers) == bool(grouped)
    assert note and note.startswith("1 Conv3D layer(s) rewritten")
    layers = {type(layer).__name__ for layer in rewritten.layers}
    assert "Conv3D" not in layers and "Conv2D" in layers
    if case[5]:  # BatchNorm and ReLU folded into the Conv2D
        assert "BatchNormalization" not in layers and "merged into their Conv2D: bn, relu" in note
    want = model(x, training=False).numpy()
    got = rewritten(x, training=False).numpy()
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
    assert "conv" in [layer.name for layer in model.layers]  # the input model is untouched


def test_conv3d_left_alone_when_not_rewritable_and_models_without_conv3d():
    inputs = keras.Input((6, 6, 6, 1))
    x = keras.layers.Conv3D(2, 3, dilation_rate=2, padding="same", name="dilated")(inputs)
    x = keras.layers.Conv3D(2, 3, padding="same", name="plain")(x)
    model = keras.Model(inputs, x)
    rewritten, note = q.rewrite_conv3d(model)
    assert "1 Conv3D layer(s) rewritten" in note and "dilated (dilated)" in note
    x = np.random.default_rng(0).random((2, 6, 6, 6, 1), dtype=np.float32)
    np.testing.assert_allclose(rewritten(x).numpy(), model(x).numpy(), atol=1e-5, rtol=0)
    flat = build_model("cnn2d", (8, 8, 1), 2, "binary-class", filters=(2,), dense_units=4)
    assert q.rewrite_conv3d(flat) == (flat, None)


@pytest.fixture(scope="module")
def adrenal_volumes() -> tuple[np.ndarray, np.ndarray]:
    """64 real AdrenalMNIST3D train volumes (calibration) and 64 test volumes."""
    from core import data

    require_real_file("adrenalmnist3d")
    root = real_root()
    x_train, _ = data.load_split("adrenalmnist3d", "train", 28, root=root)
    x_test, _ = data.load_split("adrenalmnist3d", "test", 28, root=root)
    return x_train[:64].astype(np.float32), x_test[:64].astype(np.float32)


def _resnet3d() -> keras.Model:
    keras.utils.set_random_seed(0)
    return build_model(
        "resnet", (28, 28, 28, 1), 2, "binary-class", filters=(4, 8), blocks=(1, 1), stem_filters=4
    )


def _shipped_cnn3d() -> keras.Model:
    from core import registry

    return registry.load_model(REPO / "trained_models" / "cnn3d", allow_outside=True)


@pytest.mark.parametrize("which", ["shipped_cnn3d", "resnet3d"])
def test_rewrite_is_exact_on_real_volumes(which, adrenal_volumes):
    model = _shipped_cnn3d() if which == "shipped_cnn3d" else _resnet3d()
    _, x = adrenal_volumes
    rewritten, note = q.rewrite_conv3d(model)
    n_conv3d = sum(isinstance(layer, keras.layers.Conv3D) for layer in model.layers)
    assert note.startswith(f"{n_conv3d} Conv3D layer(s) rewritten")
    # The first conv (1 input channel) computes several depths per row; cnn3d's wider ones not.
    ungroup = [layer.name for layer in rewritten.layers if isinstance(layer, DepthUngroup)]
    assert f"{model.layers[1].name}_ungroup" in ungroup
    if which == "shipped_cnn3d":
        assert ungroup == ["conv1_ungroup"]
    want = model.predict(x, verbose=0)
    np.testing.assert_allclose(rewritten.predict(x, verbose=0), want, atol=1e-5, rtol=0)
    # The logits too, not only saturating probabilities.
    logits = [keras.Model(m.input, m.get_layer("logits").output) for m in (model, rewritten)]
    np.testing.assert_allclose(
        logits[1].predict(x, verbose=0), logits[0].predict(x, verbose=0), atol=1e-4, rtol=1e-5
    )


@pytest.mark.parametrize("which", ["shipped_cnn3d", "resnet3d"])
def test_int8_3d_model_has_no_float_conv_and_matches_keras(which, adrenal_volumes):
    model = _shipped_cnn3d() if which == "shipped_cnn3d" else _resnet3d()
    x_train, x_test = adrenal_volumes
    runner = TFLiteModel(q.quantize(model, "int8", x_train))
    ops = runner.op_summary()
    assert ops["fully_integer"], ops["float_ops"]
    assert "CONV_3D" not in ops["ops"] and ops["ops"]["CONV_2D"] >= 3
    assert runner.input_dtype == np.int8 and runner.output_dtype == np.int8
    want = model.predict(x_test, verbose=0)
    got = runner.predict(x_test)
    np.testing.assert_allclose(got, want, atol=0.1)
    assert np.mean(got.argmax(1) == want.argmax(1)) >= 0.9


def test_qat_quantizes_the_rewritten_graph_fully(adrenal_volumes):
    model = _resnet3d()
    x_train, _ = adrenal_volumes
    y = (x_train.reshape(len(x_train), -1).mean(1) > np.median(x_train.mean())).astype(int)
    qat = q.quantization_aware_model(
        q.rewrite_conv3d(model)[0], x_train[:16], train_data=(x_train, y[:, None]), batch_size=16
    )
    inner = {type(getattr(layer, "layer", layer)).__name__ for layer in qat.layers}
    assert "Conv3D" not in inner and "Conv2D" in inner
    # The grouped stem conv's structural zeros stay zero through the fine-tune (its constraint).
    (wrapper,) = [la for la in qat.layers if la.name.endswith("stem_conv")]
    constraint = wrapper.layer.kernel_constraint
    assert isinstance(constraint, DepthGroupMask)
    (kernel,) = [w.numpy() for w in wrapper.trainable_weights if "kernel" in w.name]
    mask = constraint.mask(kernel.shape)
    assert np.all(kernel[mask == 0] == 0) and np.any(kernel[mask == 1] != 0)
    runner = TFLiteModel(
        q.quantize(model, "qat", x_train, train_data=(x_train, y[:, None]), batch_size=16)
    )
    assert runner.op_summary()["fully_integer"]
    np.testing.assert_allclose(
        runner.predict(x_train[:16]), model.predict(x_train[:16], verbose=0), atol=0.1
    )
