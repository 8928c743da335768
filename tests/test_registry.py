"""core.registry: atomic save, listing without TensorFlow, safe loading, name/path checks."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from core import registry

REPO = Path(__file__).resolve().parents[1]
CFG = {"dataset": "pneumoniamnist", "model": "cnn2d", "seed": 0}
METRICS = {"val": {"auc": 0.9, "acc": 0.8}, "test": {"auc": 0.85, "acc": 0.75}}


def _tiny_model():
    import tf_keras as keras

    from core.models import build_model

    keras.utils.set_random_seed(0)
    return build_model(
        "cnn2d", (8, 8, 1), 2, "binary-class", filters=(4,), dense_units=4, convs_per_block=1
    )


def _snapshot(path: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()
    }


def _save_fake(root: Path, name: str, metrics: dict | None = None) -> Path:
    """A run with JSON files only (registry listing does not need a model)."""
    run = root / name
    run.mkdir(parents=True)
    registry.write_json_atomic(run / "config.json", {**CFG, "name": name})
    registry.write_json_atomic(run / "metrics.json", metrics or METRICS)
    return run


def test_save_list_load_round_trip(tmp_path):
    model = _tiny_model()
    history = {"loss": [0.7, 0.5], "val_auc": [0.6, 0.7]}
    evaluation = {"auc": 0.85, "per_class": []}
    run = registry.save_run(model, CFG, history, METRICS, evaluation, root=tmp_path, name="r1")
    assert run == tmp_path / "r1"
    assert sorted(p.name for p in run.iterdir()) == [
        "config.json",
        "evaluation.json",
        "history.json",
        "metrics.json",
        "model.keras",
    ]
    assert registry.read_json(run, "history.json") == history
    assert registry.read_json(run, "config.json") == {**CFG, "name": "r1", "lean": False}
    assert registry.read_json(run, "missing.json", default={"x": 1}) == {"x": 1}
    runs = registry.list_runs(tmp_path)
    assert [r["name"] for r in runs] == ["r1"]
    assert runs[0]["metrics"] == METRICS and runs[0]["path"] == str(run)
    assert runs[0]["config"]["dataset"] == "pneumoniamnist"
    assert registry.resolve_run("r1", tmp_path) == run.resolve()
    x = np.random.default_rng(0).random((3, 8, 8, 1), dtype=np.float32)
    reloaded = registry.load_model("r1", root=tmp_path)
    np.testing.assert_array_equal(reloaded.predict(x, verbose=0), model.predict(x, verbose=0))
    assert not list(tmp_path.glob(".tmp-*")), "scratch left after a successful save"


def test_generated_names_and_settings_root(tmp_path, monkeypatch):
    monkeypatch.setenv("TRAINED_MODELS_DIR", str(tmp_path / "reg"))
    model = _tiny_model()
    a = registry.save_run(model, {**CFG, "augment": True, "seed": 3}, {}, METRICS)
    b = registry.save_run(model, CFG, {}, METRICS)
    assert a.parent == tmp_path / "reg" and a != b
    assert a.name.startswith("pneumoniamnist-cnn2d-aug-s3-")
    assert {r["name"] for r in registry.list_runs()} == {a.name, b.name}


def test_second_save_with_same_name_refuses_and_keeps_first(tmp_path):
    model = _tiny_model()
    first = registry.save_run(model, CFG, {"loss": [1.0]}, METRICS, root=tmp_path, name="dup")
    before = _snapshot(first)
    other = {"val": {"auc": 0.1, "acc": 0.1}, "test": {"auc": 0.1, "acc": 0.1}}
    with pytest.raises(registry.RegistryError, match="already exists"):
        registry.save_run(model, CFG, {"loss": [2.0]}, other, root=tmp_path, name="dup")
    assert _snapshot(first) == before
    assert not list(tmp_path.glob(".tmp-*"))


BAD_NAMES = ["../evil", "a/b", "run\n", "", ".", "..", "/tmp/abs", ".hidden", "a b", "x" * 129]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_invalid_names_refused(tmp_path, name):
    with pytest.raises(ValueError, match="invalid run name"):
        registry.validate_run_name(name)
    if name:  # an empty name means "generate one", like None
        with pytest.raises(ValueError, match="invalid run name"):
            registry.save_run(object(), CFG, {}, METRICS, root=tmp_path / "reg", name=name)
    with pytest.raises(registry.RegistryError):
        registry.resolve_run(name, tmp_path / "reg")
    assert not (tmp_path / "evil").exists()
    reg = tmp_path / "reg"
    assert not reg.exists() or not any(reg.iterdir()), "something was written"


@pytest.mark.parametrize("name", ["r1", "Run_2.b-3", "a" * 128])
def test_valid_names(name):
    assert registry.validate_run_name(name) == name


def test_resolve_run_stays_inside_root(tmp_path):
    root = tmp_path / "reg"
    _save_fake(root, "good")
    outside = _save_fake(tmp_path / "elsewhere", "run")
    assert registry.resolve_run("good", root) == (root / "good").resolve()
    assert registry.resolve_run(root / "good", root) == (root / "good").resolve()
    for attempt in ("../elsewhere/run", str(outside), "good/../../elsewhere/run"):
        with pytest.raises(registry.RegistryError, match="outside the model registry"):
            registry.resolve_run(attempt, root)
    assert registry.resolve_run(outside, root, allow_outside=True) == outside.resolve()
    with pytest.raises(registry.RegistryError, match="invalid run name"):
        registry.resolve_run("..", root)
    with pytest.raises(registry.RegistryError, match="outside"):
        registry.resolve_run(root, root)  # the root itself is not a run
    with pytest.raises(registry.RegistryError, match="no run at"):
        registry.resolve_run("missing", root)
    # a symlink inside the registry that points outside is refused too
    (root / "link").symlink_to(outside, target_is_directory=True)
    with pytest.raises(registry.RegistryError, match="outside"):
        registry.resolve_run("link", root)


def test_list_runs_skips_hidden_and_malformed(tmp_path):
    _save_fake(tmp_path, "ok")
    _save_fake(tmp_path, ".tmp-ok-123")
    _save_fake(tmp_path, ".staging")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "metrics.json").write_text("{not json")
    (broken / "config.json").write_text("{}")
    no_config = tmp_path / "no_config"
    no_config.mkdir()
    registry.write_json_atomic(no_config / "metrics.json", METRICS)
    (tmp_path / "stray.txt").write_text("x")
    (tmp_path / "empty").mkdir()
    assert [r["name"] for r in registry.list_runs(tmp_path)] == ["ok"]
    assert registry.list_runs(tmp_path / "does-not-exist") == []


def test_list_runs_survives_damaged_optional_files(tmp_path):
    run = _save_fake(tmp_path, "ok")
    (run / "explain.json").write_text("{half")
    (run / "quantized").mkdir()
    (run / "quantized" / "results.json").write_text("")
    good = _save_fake(tmp_path, "ok2")
    registry.write_json_atomic(good / "explain.json", {"score": 1})
    runs = {r["name"]: r for r in registry.list_runs(tmp_path)}
    assert set(runs) == {"ok", "ok2"}
    assert runs["ok"]["explain"] is None and runs["ok"]["quantized"] is None
    assert runs["ok2"]["explain"] == {"score": 1}


def test_list_runs_does_not_import_tensorflow(tmp_path):
    _save_fake(tmp_path, "ok")
    code = textwrap.dedent(f"""
        import sys
        import core.registry
        runs = core.registry.list_runs({str(tmp_path)!r})
        assert [r["name"] for r in runs] == ["ok"], runs
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in
                       ("tensorflow", "tf_keras", "keras", "sklearn", "streamlit"))
        print("HEAVY", heavy)
        assert not heavy, heavy
    """)
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "HEAVY []" in out.stdout


KILL_SCRIPT = """
import os, sys, time
from core import registry
from core.models import build_model

model = build_model("cnn2d", (8, 8, 1), 2, "binary-class", filters=(4,), dense_units=4)
real_fsync = os.fsync

def slow_fsync(fd):
    # save_run fsyncs every file it writes: stall in the middle of the save and get killed there
    real_fsync(fd)
    print("IN_SAVE", flush=True)
    time.sleep(60)

os.fsync = slow_fsync
registry.save_run(model, {"dataset": "pneumoniamnist", "model": "cnn2d"}, {}, {"val": {}},
                  root=sys.argv[1], name="victim")
print("FINISHED", flush=True)
"""


def test_kill_during_save_leaves_registry_intact(tmp_path):
    root = tmp_path / "reg"
    existing = registry.save_run(_tiny_model(), CFG, {"loss": [1.0]}, METRICS, root=root, name="a")
    before = _snapshot(existing)
    proc = subprocess.Popen(
        [sys.executable, "-c", KILL_SCRIPT, str(root)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline()
        assert line.strip() == "IN_SAVE", line + proc.stderr.read()
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    visible = sorted(p.name for p in root.iterdir() if not p.name.startswith("."))
    assert visible == ["a"], "a half-written run became visible"
    assert _snapshot(existing) == before, "the existing run was modified"
    assert [r["name"] for r in registry.list_runs(root)] == ["a"]
    with pytest.raises(registry.RegistryError):
        registry.resolve_run("victim", root)
    scratch = sorted(p.name for p in root.glob(".tmp-*"))
    assert len(scratch) == 1 and scratch[0].startswith(".tmp-victim-")
    assert registry.clean_scratch(root) == scratch
    assert not list(root.glob(".tmp-*"))
    assert _snapshot(existing) == before
    # the interrupted name is free again
    registry.save_run(_tiny_model(), CFG, {}, METRICS, root=root, name="victim")


def test_failed_save_cleans_up(tmp_path, monkeypatch):
    written = []

    def disk_full(path, obj):
        written.append(Path(path).name)
        raise OSError("disk full")

    monkeypatch.setattr(registry, "write_json_atomic", disk_full)
    with pytest.raises(OSError, match="disk full"):
        registry.save_run(_tiny_model(), CFG, {}, METRICS, root=tmp_path, name="b")
    assert written == ["config.json"]  # it failed after the model file was written
    assert list(tmp_path.iterdir()) == []


def test_load_model_uses_safe_mode(tmp_path):
    import tf_keras as keras

    inp = keras.Input((3,))
    out = keras.layers.Lambda(lambda t: t * 2.0, name="code")(inp)
    model = keras.Model(inp, keras.layers.Dense(2, activation="softmax", name="predictions")(out))
    registry.save_run(model, CFG, {}, METRICS, root=tmp_path, name="lambda")
    with pytest.raises(ValueError, match="(?i)unsafe|safe_mode"):
        registry.load_model("lambda", root=tmp_path)


def test_load_model_without_model_file(tmp_path):
    _save_fake(tmp_path, "nomodel")
    with pytest.raises(registry.RegistryError, match="has no model.keras"):
        registry.load_model("nomodel", root=tmp_path)


def test_write_json_atomic(tmp_path):
    target = tmp_path / "sub" / "m.json"
    registry.write_json_atomic(target, {"a": np.float32(0.5), "arr": np.arange(3), "p": Path("/x")})
    assert json.loads(target.read_text()) == {"a": 0.5, "arr": [0, 1, 2], "p": "/x"}
    registry.write_json_atomic(target, {"b": 2})
    assert json.loads(target.read_text()) == {"b": 2}
    with pytest.raises(TypeError, match="not JSON serialisable"):
        registry.write_json_atomic(target, {"c": object()})
    assert json.loads(target.read_text()) == {"b": 2}, "a failed write damaged the old file"
    assert [p.name for p in target.parent.iterdir()] == ["m.json"], "temp files left"


def test_write_json_atomic_readers_never_see_half_a_file(tmp_path):
    target = tmp_path / "m.json"
    big = {"values": list(range(200_000))}
    registry.write_json_atomic(target, {"values": []})
    code = textwrap.dedent(f"""
        import json, time
        end = time.time() + 1.5
        n = 0
        while time.time() < end:
            json.loads(open({str(target)!r}).read())
            n += 1
        print(n)
    """)
    reader = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    deadline = time.time() + 1.5
    while time.time() < deadline:
        registry.write_json_atomic(target, big)
        registry.write_json_atomic(target, {"values": []})
    out, _ = reader.communicate(timeout=30)
    assert reader.returncode == 0 and int(out) > 0
