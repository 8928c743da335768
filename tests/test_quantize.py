"""core.quantize + core.tflite_runner: every mode on every family, the runner, the results table."""

from __future__ import annotations

import json
import os
import threading

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tf_keras as keras  # noqa: E402

from core import quantize as q  # noqa: E402
from core.models import build_model, compile_model  # noqa: E402
from core.quantize import compare  # noqa: E402
from core.tflite_runner import TFLiteModel  # noqa: E402

TASK = "multi-class"
N_CLASSES = 3

# name: (family, input shape, builder kwargs)
FAMILIES = {
    "cnn2d": ("cnn2d", (16, 16, 1), {"filters": (4, 8), "dense_units": 8}),
    "resnet2d": ("resnet", (16, 16, 3), {"filters": (4, 8), "blocks": (1, 1), "stem_filters": 4}),
    "cnn3d": ("cnn3d", (8, 8, 8, 1), {"filters": (4, 8), "dense_units": 8}),
    "resnet3d": ("resnet", (8, 8, 8, 1), {"filters": (4, 8), "blocks": (1, 1), "stem_filters": 4}),
    "vgg16": ("vgg16", (28, 28, 3), {"weights": None, "dense_units": 8}),
}
# Output tolerance vs the float Keras model (probabilities). Full-integer modes are looser:
# 8-bit activations on a random-weight network.
ATOL = {"dynamic": 0.02, "float16": 0.01, "int8": 0.08}


def _data(shape: tuple[int, ...], n: int = 16, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.random((n, *shape), dtype=np.float32), rng.integers(0, N_CLASSES, (n, 1))


_CACHE: dict[str, keras.Model] = {}


def _trained(name: str) -> tuple[keras.Model, np.ndarray, np.ndarray]:
    """Build the tiny model and train one step (so BatchNorm statistics are not the defaults)."""
    family, shape, kwargs = FAMILIES[name]
    x, y = _data(shape)
    if name not in _CACHE:
        keras.utils.set_random_seed(0)
        model = build_model(family, shape, N_CLASSES, TASK, **kwargs)
        compile_model(model, TASK)
        model.fit(x, y, epochs=1, batch_size=16, verbose=0)
        _CACHE[name] = model
    return _CACHE[name], x, y


def _params():
    for name in FAMILIES:
        for mode in ("dynamic", "int8", "float16"):
            marks = [pytest.mark.slow] if name == "vgg16" else []
            yield pytest.param(name, mode, id=f"{name}-{mode}", marks=marks)


@pytest.mark.parametrize(("name", "mode"), list(_params()))
def test_post_training_modes_match_keras(name, mode):
    model, x, _ = _trained(name)
    flat = q.quantize(model, mode, x)
    runner = TFLiteModel(flat)
    ref = model.predict(x, verbose=0)
    out = runner.predict(x)
    assert out.shape == ref.shape and out.dtype == np.float32
    np.testing.assert_allclose(out, ref, atol=ATOL[mode])
    ops = runner.op_summary()
    if mode == "int8":
        assert runner.input_dtype == np.int8 and runner.output_dtype == np.int8
        # 3D models too: their Conv3D layers are rewritten to Conv2D (core.quantize.conv3d_rewrite)
        assert ops["fully_integer"], ops["float_ops"]
        assert "CONV_3D" not in ops["ops"]
    else:
        assert runner.input_dtype == np.float32


@pytest.mark.slow
@pytest.mark.parametrize("name", list(FAMILIES))
def test_qat_end_to_end(name):
    model, x, y = _trained(name)
    before = [w.copy() for w in model.get_weights()]
    qat_model = q.quantization_aware_model(model, x, train_data=(x, y), epochs=1, batch_size=8)
    # the float model is left untouched
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights(), strict=True))
    # BatchNorm statistics stay frozen during the fine-tune
    bn = [
        layer
        for layer in qat_model.layers
        if isinstance(getattr(layer, "layer", layer), keras.layers.BatchNormalization)
    ]
    assert bn and all(not getattr(layer, "layer", layer).trainable for layer in bn)

    # exactly the float model's trainable weights train: layers frozen there (VGG16 backbone,
    # caffe preprocessing) stay frozen although tfmot's wrapper marks their kernels trainable
    def n_trainable(m: keras.Model) -> int:
        return int(sum(np.prod(w.shape) for w in m.trainable_weights))

    assert n_trainable(qat_model) == n_trainable(model)
    flat = q._convert(qat_model, "qat", x)
    runner = TFLiteModel(flat)
    assert runner.input_dtype == np.int8
    # the int8 flatbuffer reproduces the fake-quantized Keras model it came from
    np.testing.assert_allclose(runner.predict(x), qat_model.predict(x, verbose=0), atol=0.08)
    if name == "cnn2d":  # the one-call API runs the same path
        assert TFLiteModel(q.quantize(model, "qat", x)).input_dtype == np.int8


def test_qat_fine_tune_is_seeded():
    model, x, y = _trained("cnn2d")

    def weights(seed: int) -> list[np.ndarray]:
        qat = q.quantization_aware_model(
            model, x, train_data=(x, y), epochs=2, batch_size=4, learning_rate=1e-2, seed=seed
        )
        return qat.get_weights()

    first, again, other = weights(3), weights(3), weights(4)
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(first, other, strict=True))


def test_mode_validation_and_errors():
    model, x, _ = _trained("cnn2d")
    with pytest.raises(ValueError, match="'int4' is not supported; choose one of dynamic, int8"):
        q.quantize(model, "int4")
    for mode in ("int8", "qat"):
        with pytest.raises(ValueError, match="needs representative_data"):
            q.quantize(model, mode)
    bad = x.copy()
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        q.quantize(model, "int8", bad)
    assert q.validate_mode("qat") == "qat"


def test_runner_batches_threads_and_latency(tmp_path):
    model, x, _ = _trained("cnn2d")
    flat = q.quantize(model, "int8", x)
    path = tmp_path / "m.tflite"
    path.write_bytes(flat)
    runner = TFLiteModel(path)
    assert runner.size_bytes == len(flat) and runner.input_shape == (None, 16, 16, 1)
    # the interpreter gets the CPUs TensorFlow gets, unless told otherwise
    from core.tflite_runner import available_cpus

    assert runner.num_threads == available_cpus() >= 1
    one = TFLiteModel(flat, num_threads=1)
    assert one.num_threads == 1
    np.testing.assert_allclose(one.predict(x), runner.predict(x), atol=1e-6)
    batched = runner.predict(x, batch_size=5)
    single = np.concatenate([runner.predict(x[i : i + 1]) for i in range(len(x))])
    np.testing.assert_allclose(batched, single, atol=1e-6)
    results: dict[int, np.ndarray] = {}

    def work(i: int) -> None:
        results[i] = runner.predict(x[i % 4 :: 2])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, out in results.items():
        np.testing.assert_allclose(out, single[i % 4 :: 2], atol=1e-6)
    assert runner.latency_ms(x, runs=5, warmup=1) > 0
    with pytest.raises(ValueError, match="expects"):
        runner.predict(x[:, :8])
    with pytest.raises(ValueError, match="NaN"):
        runner.predict(np.full_like(x[:1], np.nan))
    with pytest.raises(FileNotFoundError):
        TFLiteModel(tmp_path / "missing.tflite")


def test_occlusion_through_tflite_agrees_with_keras():
    from core.explain import keras_predict_fn, occlusion_agreement, occlusion_map

    model, x, _ = _trained("cnn2d")
    runner = TFLiteModel(q.quantize(model, "dynamic"))
    cls = int(np.argmax(model.predict(x[:1], verbose=0)))
    float_map = occlusion_map(keras_predict_fn(model), x[0], cls, patch=4, stride=2)
    tflite_map = occlusion_map(runner.predict, x[0], cls, patch=4, stride=2)
    assert tflite_map.shape == (16, 16)
    assert occlusion_agreement(float_map, tflite_map) > 0.95


def test_compare_modes_records_failures(monkeypatch):
    from core import evaluation

    model, x, y = _trained("cnn2d")
    real = q.quantize

    def flaky(model, mode, *args, **kwargs):
        if mode == "float16":
            raise RuntimeError("converter exploded")
        return real(model, mode, *args, **kwargs)

    # compare_modes calls the quantize bound in its own module
    monkeypatch.setattr(compare, "quantize", flaky)
    stored = {}
    result = q.compare_modes(
        model,
        x,
        y,
        TASK,
        x,
        modes=("dynamic", "float16", "int8"),
        occlusion_samples=1,
        latency_runs=3,
        on_bytes=lambda m, b: stored.setdefault(m, len(b)) and f"{m}.bin",
    )
    json.dumps(result)
    assert result["float"]["test"] == evaluation.evaluate(y, model.predict(x, verbose=0), TASK)
    assert result["modes"]["float16"] == {"ok": False, "error": "RuntimeError: converter exploded"}
    for mode in ("dynamic", "int8"):
        entry = result["modes"][mode]
        assert entry["ok"] and entry["file"] == f"{mode}.bin"
        assert entry["size_bytes"] == stored[mode] and 0 <= entry["agreement"] <= 1
        assert set(entry["test"]) == {"auc", "acc"} and entry["latency_ms"] > 0
        assert len(entry["occlusion_corr"]) == 1
    assert "dynamic" in q.format_table(result) and "FAILED" in q.format_table(result)
    with pytest.raises(ValueError, match="not supported"):
        q.compare_modes(model, x, y, TASK, x, modes=("bogus",))


@pytest.mark.slow
def test_quantize_run_writes_registry_files(tiny_cnn3d_run):
    run = tiny_cnn3d_run
    result = q.quantize_run(
        run,
        modes=("dynamic", "int8", "qat"),
        latency_runs=2,
        max_file_bytes=60_000,
        occlusion_samples=1,
    )
    written = json.loads((run / "quantized" / "results.json").read_text())
    assert written["run"] == "tiny3d" and written["n_test"] == 12
    for mode in ("dynamic", "int8", "qat"):
        entry = written["modes"][mode]
        assert entry["ok"], entry
        on_disk = run / "quantized" / f"{mode}.tflite"
        # files over max_file_bytes are measured but not shipped
        assert on_disk.is_file() == (entry["size_bytes"] <= 60_000)
        assert (entry["file"] is not None) == on_disk.is_file()
    for mode in ("dynamic", "int8", "qat"):
        notes = written["modes"][mode]["notes"]
        assert any("2 Conv3D layer(s) rewritten as Conv2D" in note for note in notes), notes
        assert "CONV_3D" not in written["modes"][mode]["ops"]["ops"]
    assert written["modes"]["int8"]["ops"]["fully_integer"]
    assert result["modes"]["int8"]["size_bytes"] == written["modes"]["int8"]["size_bytes"]


@pytest.mark.parametrize("name", ["cnn2d", pytest.param("vgg16", marks=pytest.mark.slow)])
def test_qat_calibration_sets_ranges_from_data(name):
    """Fresh QAT ranges come from the data, not tfmot's [-6, 6] start (which clipped VGG16's
    caffe preprocessing and cost 0.23 test AUC), so calibration alone keeps the float outputs."""
    model, x, _ = _trained(name)
    qat_model = q.quantization_aware_model(model, x)
    (input_quantizer,) = [
        layer for layer in qat_model.layers if layer.name.startswith("quantize_layer")
    ]
    in_min, in_max = (float(w.numpy()) for w in input_quantizer.weights[:2])
    assert in_min == pytest.approx(0.0) and in_max == pytest.approx(float(x.max()), abs=1e-6)
    np.testing.assert_allclose(
        qat_model.predict(x, verbose=0), model.predict(x, verbose=0), atol=0.05
    )


def test_collapse_note_flags_constant_outputs_only():
    from core.quantize import _collapse_note

    rng = np.random.default_rng(0)
    varied = rng.random((20, 3))
    constant = np.tile([[0.2, 0.3, 0.5]], (20, 1))
    assert _collapse_note(varied, constant) and "collapsed" in _collapse_note(varied, constant)[0]
    assert _collapse_note(varied, varied) == []


def _head_bn_model(gamma_sign: float = 1.0) -> tuple[keras.Model, np.ndarray]:
    """conv → pool → GAP → BatchNorm → Dense whose two channels differ ~10⁴× in scale.

    Channel 0 is large and carries nothing about the class; channel 1 is tiny and carries it,
    the situation of the fine-tuned VGG16 head. Weights are set by hand.
    """
    inputs = keras.Input((8, 8, 2))
    x = keras.layers.Conv2D(2, 1, activation="relu", name="conv")(inputs)
    x = keras.layers.MaxPooling2D(2, name="pool")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    x = keras.layers.BatchNormalization(name="head_bn")(x)
    x = keras.layers.Dense(4, activation="relu", name="fc1")(x)
    x = keras.layers.Dense(2, name="logits")(x)
    model = keras.Model(inputs, keras.layers.Activation("softmax", name="predictions")(x))
    model.get_layer("conv").set_weights(
        [np.array([[[[1000.0, 0.0], [0.0, 0.1]]]], np.float32), np.zeros(2, np.float32)]
    )
    rng = np.random.default_rng(0)
    xs = rng.random((64, 8, 8, 2), dtype=np.float32)
    xs[..., 1] *= rng.random((64, 1, 1), dtype=np.float32)  # per-image signal strength
    pooled = keras.Model(inputs, model.get_layer("gap").output).predict(xs, verbose=0)
    model.get_layer("head_bn").set_weights(
        [
            np.array([1.0, gamma_sign], np.float32),
            np.array([0.1, -0.2], np.float32),
            pooled.mean(0),
            pooled.var(0),
        ]
    )
    model.get_layer("fc1").set_weights(
        [np.array([[0.0] * 4, [3.0, -3.0, 1.0, -1.0]], np.float32), np.zeros(4, np.float32)]
    )
    model.get_layer("logits").set_weights(
        [np.array([[1, -1], [-1, 1], [0.5, 0], [0, 0.5]], np.float32), np.zeros(2, np.float32)]
    )
    return model, xs


def test_fold_head_batchnorm_is_exact_and_rescues_int8():
    model, xs = _head_bn_model()
    folded, note = q.fold_head_batchnorm(model)
    assert note and "head_bn folded into conv and fc1" in note
    assert "head_bn" not in [layer.name for layer in folded.layers]
    assert "head_bn" in [layer.name for layer in model.layers]  # the input model is untouched
    want = model.predict(xs, verbose=0)
    np.testing.assert_allclose(folded.predict(xs, verbose=0), want, atol=1e-5)
    assert want[:, 1].std() > 0.05  # the float model's output depends on the tiny channel

    # Converting the unfolded graph loses the tiny channel to the int8 scale of the large one...
    plain = TFLiteModel(q._convert(model, "int8", xs)).predict(xs)
    assert plain[:, 1].std() < 0.01 * want[:, 1].std()
    assert q._collapse_note(want, plain)
    # ... while quantize() folds first and keeps it.
    for mode in ("int8", "dynamic"):
        got = TFLiteModel(q.quantize(model, mode, xs)).predict(xs)
        assert np.corrcoef(got[:, 1], want[:, 1])[0, 1] > 0.95, mode
        assert not q._collapse_note(want, got), mode


def test_fold_head_batchnorm_leaves_other_models_alone():
    # A negative BatchNorm scale would turn max pooling into min pooling: no fold.
    model, _ = _head_bn_model(gamma_sign=-1.0)
    assert q.fold_head_batchnorm(model) == (model, None)
    # Families without a pooled-head BatchNorm are returned as they are.
    for name in ("cnn2d", "resnet2d", "cnn3d"):
        tiny, _, _ = _trained(name)
        assert q.fold_head_batchnorm(tiny) == (tiny, None), name


@pytest.mark.slow
def test_fold_head_batchnorm_on_the_vgg16_architecture():
    model, x, _ = _trained("vgg16")
    folded, note = q.fold_head_batchnorm(model)
    assert note and "head_bn folded into block5_conv3 and fc1" in note
    np.testing.assert_allclose(folded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-5)
    # Frozen layers stay frozen, so a QAT fine-tune of the folded copy keeps the backbone.
    assert [layer.trainable for layer in folded.layers] == [
        layer.trainable for layer in model.layers if layer.name != "head_bn"
    ]
