"""core.models: every builder × every task head builds, trains a step, saves and reloads."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from core import models, registry
from core.models import MaxPool3DBuiltin, build_model, compile_model
from core.models import io as model_io

TASKS = {
    "binary-class": 2,
    "multi-class": 5,
    "ordinal-regression": 5,
    "multi-label, binary-class": 14,
}
# (case id, family, input shape, builder kwargs); 3D inputs at 16³ keep the step cheap
BUILDS = [
    ("cnn3d", "cnn3d", (16, 16, 16, 1), {}),
    ("cnn2d", "cnn2d", (28, 28, 1), {}),
    ("resnet2d", "resnet", (28, 28, 3), {}),
    ("resnet3d", "resnet", (16, 16, 16, 1), {}),
    ("vgg16_ft0", "vgg16", (28, 28, 3), {"weights": None, "input_size": 32}),
    ("vgg16_ft2", "vgg16", (28, 28, 3), {"weights": None, "input_size": 32, "fine_tune_blocks": 2}),
]


def _labels(task: str, n: int, rng: np.random.Generator) -> np.ndarray:
    units = TASKS[task]
    if task.startswith("multi-label"):
        return (rng.random((n, units)) < 0.5).astype(np.int64)
    return (np.arange(n) % units).astype(np.int64).reshape(n, 1)


def _cfg(family: str, task: str) -> dict:
    dataset = {"binary-class": "pneumoniamnist", "multi-class": "pathmnist"}.get(
        task, "retinamnist" if task == "ordinal-regression" else "chestmnist"
    )
    return {"dataset": dataset, "model": family, "task": task}


# every builder × every task head; VGG16's fine-tuning mode only changes which layers train, so
# one head suffices for it (each VGG16 case saves and reloads a 60 MB model)
MATRIX = [
    pytest.param(family, shape, kwargs, task, id=f"{case}-{task.split(',')[0]}")
    for case, family, shape, kwargs in BUILDS
    for task in TASKS
    if case != "vgg16_ft2" or task.startswith("multi-label")
]


@pytest.mark.parametrize(("family", "shape", "kwargs", "task"), MATRIX)
def test_builder_x_task(tmp_path, family, shape, kwargs, task):
    units = TASKS[task]
    keras.utils.set_random_seed(0)
    model = build_model(family, shape, units, task, **kwargs)
    assert model.output_shape == (None, units)
    assert model.get_layer("logits").output_shape == (None, units)
    predictions = model.get_layer("predictions")
    expected = "sigmoid" if task.startswith("multi-label") else "softmax"
    assert predictions.activation.__name__ == expected
    assert model.layers[-1] is predictions

    rng = np.random.default_rng(0)
    x = rng.random((6, *shape), dtype=np.float32)
    y = _labels(task, 6, rng)
    p = model.predict(x, verbose=0)
    assert p.shape == (6, units) and np.all((p >= 0) & (p <= 1))
    if expected == "softmax":
        np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-5)

    compile_model(model, task, learning_rate=1e-3)
    logits_before = model.get_layer("logits").get_weights()[0].copy()
    frozen = {
        layer.name: [w.copy() for w in layer.get_weights()]
        for layer in model.layers
        if not layer.trainable and layer.get_weights()
    }
    loss = model.train_on_batch(x, y)
    assert np.isfinite(loss)
    assert not np.array_equal(model.get_layer("logits").get_weights()[0], logits_before)
    for name, weights in frozen.items():  # frozen layers really stay frozen
        for before, after in zip(weights, model.get_layer(name).get_weights(), strict=True):
            np.testing.assert_array_equal(before, after, err_msg=name)

    run = registry.save_run(model, _cfg(family, task), {"loss": [float(loss)]}, {}, root=tmp_path)
    assert (run / registry.MODEL_FILE).is_file()
    reloaded = registry.load_model(run, root=tmp_path)
    np.testing.assert_array_equal(reloaded.predict(x, verbose=0), model.predict(x, verbose=0))
    assert [la.name for la in reloaded.layers] == [la.name for la in model.layers]


@pytest.mark.parametrize(
    "shape",
    [(2, 8, 8, 8, 3), (1, 7, 9, 5, 2), (2, 6, 5, 4, 1), (1, 3, 3, 3, 1), (1, 28, 28, 28, 1)],
)
def test_maxpool3d_builtin_equals_keras(shape):
    x = tf.constant(np.random.default_rng(0).normal(size=shape).astype(np.float32))
    ours = MaxPool3DBuiltin()(x).numpy()
    ref = keras.layers.MaxPooling3D(2)(x).numpy()
    assert ours.shape == ref.shape
    np.testing.assert_array_equal(ours, ref)
    inp = keras.Input(shape[1:])
    assert keras.Model(inp, MaxPool3DBuiltin()(inp)).output_shape == (None, *ref.shape[1:])


def test_vgg16_caffe_preprocessing_matches_keras():
    model = build_model("vgg16", (32, 32, 3), 2, "binary-class", weights=None, input_size=32)
    layer = model.get_layer("caffe_preprocess")
    assert not layer.trainable
    sub = keras.Model(model.input, layer.output)
    x = np.random.default_rng(0).random((3, 32, 32, 3), dtype=np.float32)
    ref = keras.applications.vgg16.preprocess_input(x * 255.0)
    np.testing.assert_allclose(sub.predict(x, verbose=0), ref, rtol=0, atol=1e-3)


def test_vgg16_is_flat_and_resizes_in_graph():
    model = build_model("vgg16", (28, 28, 3), 5, "multi-class", weights=None, input_size=48)
    assert not any(isinstance(layer, keras.Model) for layer in model.layers)
    assert model.get_layer("resize").output_shape == (None, 48, 48, 3)
    assert model.get_layer("block5_conv3").output_shape == (None, 3, 3, 512)
    with pytest.raises(ValueError, match="RGB"):
        build_model("vgg16", (28, 28, 1), 2, "binary-class", weights=None)
    with pytest.raises(ValueError, match="input_size >= 32"):
        build_model("vgg16", (28, 28, 3), 2, "binary-class", weights=None, input_size=28)


@pytest.mark.parametrize("fine_tune_blocks", [0, 2])
def test_vgg16_imagenet_weights_from_file(vgg16_weights_file, fine_tune_blocks):
    model = build_model(
        "vgg16",
        (28, 28, 3),
        2,
        "binary-class",
        weights=str(vgg16_weights_file),
        fine_tune_blocks=fine_tune_blocks,
    )
    with h5py.File(vgg16_weights_file, "r") as h5:
        for name in ("block1_conv1", "block5_conv3"):
            kernel, bias = model.get_layer(name).get_weights()
            np.testing.assert_array_equal(kernel, h5[name][name]["kernel:0"][()])
            np.testing.assert_array_equal(bias, h5[name][name]["bias:0"][()])
    trainable_blocks = {"block4", "block5"} if fine_tune_blocks == 2 else set()
    for layer in model.layers:
        if layer.name.startswith("block") and layer.weights:
            assert layer.trainable == (layer.name.split("_")[0] in trainable_blocks), layer.name
    for head in ("head_bn", "fc1", "logits"):
        assert model.get_layer(head).trainable
    assert not model.get_layer("caffe_preprocess").trainable


def test_vgg16_weights_setting_is_used(vgg16_weights_file, monkeypatch):
    monkeypatch.setenv("VGG16_WEIGHTS", str(vgg16_weights_file))
    model = build_model("vgg16", (28, 28, 3), 2, "binary-class")  # weights="default"
    with h5py.File(vgg16_weights_file, "r") as h5:
        ref = h5["block3_conv2"]["block3_conv2"]["kernel:0"][()]
    np.testing.assert_array_equal(model.get_layer("block3_conv2").get_weights()[0], ref)


def test_lean_vgg16_round_trip(tmp_path, vgg16_weights_file, monkeypatch):
    """Lean runs store only trained layers as float16; reload rebuilds the rest from ImageNet."""
    monkeypatch.setenv("VGG16_WEIGHTS", str(vgg16_weights_file))
    model = build_model("vgg16", (28, 28, 3), 5, "ordinal-regression", fine_tune_blocks=1)
    compile_model(model, "ordinal-regression")
    rng = np.random.default_rng(0)
    x = rng.random((4, 28, 28, 3), dtype=np.float32)
    model.train_on_batch(x, np.arange(4).reshape(4, 1))
    # a moving variance beyond float16's range (65504) must survive, not become inf
    bn = model.get_layer("head_bn")
    gamma, beta, mean, var = bn.get_weights()
    var[0] = 1.0e5
    bn.set_weights([gamma, beta, mean, var])
    model_io.round_trained_to_float16(model)
    assert bn.get_weights()[3][0] == np.float32(1.0e5)
    cfg = {"dataset": "retinamnist", "model": "vgg16", "size": 28, "fine_tune_blocks": 1}
    run = registry.save_run(model, cfg, {}, {}, root=tmp_path, lean=True)
    assert not (run / registry.MODEL_FILE).exists()
    with np.load(run / registry.LEAN_FILE) as npz:
        stored = {k.split("/")[0] for k in npz.files}
        assert npz["head_bn/3"].dtype == np.float32  # kept: float16 cannot hold it
        assert all(npz[k].dtype == np.float16 for k in npz.files if k != "head_bn/3")
    assert {"block5_conv1", "block5_conv3", "head_bn", "fc1", "logits"} <= stored
    assert not any(name.startswith(("block1", "block4")) for name in stored)
    reloaded = registry.load_model(run, root=tmp_path)
    np.testing.assert_array_equal(reloaded.predict(x, verbose=0), model.predict(x, verbose=0))


def test_unknown_family_lists_families():
    with pytest.raises(ValueError, match="cnn3d, cnn2d, vgg16, resnet"):
        build_model("alexnet", (28, 28, 1), 2, "binary-class")


def test_wrong_rank_for_family():
    with pytest.raises(ValueError, match="cnn3d"):
        build_model("cnn3d", (28, 28, 1), 2, "binary-class")
    with pytest.raises(ValueError, match="cnn2d"):
        build_model("cnn2d", (28, 28, 28, 1), 2, "binary-class")


def test_input_helpers():
    assert models.input_shape_for("cnn2d", "pneumoniamnist") == (28, 28, 1)
    assert models.input_shape_for("vgg16", "pneumoniamnist", 64) == (64, 64, 3)
    assert models.input_shape_for("resnet", "retinamnist") == (28, 28, 3)
    assert models.input_shape_for("cnn3d", "adrenalmnist3d", 64) == (64, 64, 64, 1)
    grey = np.zeros((2, 28, 28, 1), np.float32)
    assert models.prepare_input("vgg16", grey).shape == (2, 28, 28, 3)
    assert models.prepare_input("cnn2d", grey) is grey


def test_compile_model_label_smoothing():
    model = build_model("cnn2d", (28, 28, 1), 4, "multi-class")
    compile_model(model, "multi-class", label_smoothing=0.2)
    p = np.array([[0.7, 0.1, 0.1, 0.1], [0.25, 0.25, 0.4, 0.1]], np.float32)
    y = np.array([[0], [2]])
    target = np.full((2, 4), 0.05) + 0.8 * np.eye(4)[[0, 2]]
    want = -(target * np.log(p)).sum(axis=1).mean()
    assert float(model.loss(y, p)) == pytest.approx(want, rel=1e-5)
    plain = compile_model(build_model("cnn2d", (28, 28, 1), 4, "multi-class"), "multi-class")
    assert float(plain.loss(y, p)) == pytest.approx(-np.log([0.7, 0.4]).mean(), rel=1e-5)
    with pytest.raises(ValueError, match="single-label"):
        compile_model(model, "multi-label, binary-class", label_smoothing=0.1)
