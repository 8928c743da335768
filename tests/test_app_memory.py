"""Server memory under load: predictions, 3D scenes and a short soak of the review pages.

The clinic-day load test (``python -m benchmarks.app_load``, docs/benchmarks.md) found the
server's RSS climbing ~1.2 MB per interaction with no plateau. Two causes, both fixed and
guarded here:

- ``keras.Model.predict`` builds a data adapter and a predict function on every call and keeps
  30-70 kB of it; ``core.evaluation.predict`` now runs one compiled forward pass per model.
- Every distinct PyVista scene (~1.9 MB of HTML) passed to ``st.iframe`` as a string stayed
  pinned in ``urllib.parse.urlsplit``'s LRU cache (st.iframe first tries the string as a URL),
  two copies a scene, up to 128 scenes; scenes are now files handed to ``st.iframe`` as paths.
"""

from __future__ import annotations

import gc
import os
import threading
import weakref
from pathlib import Path

import numpy as np
import pytest
from app_helpers import SPLIT_SIZES, make_run, synthetic_environment
from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parents[1]
HOME = str(ROOT / "app" / "Home.py")


def rss_mb() -> float:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6


def _model(family: str, flag: str):
    import tf_keras as keras

    from core import info, models

    keras.utils.set_random_seed(0)
    shape = models.input_shape_for(family, flag, 28)
    return models.build_model(family, shape, info.num_classes(flag), info.task(flag)), shape


# --------------------------------------------------------------------------------------------
# core.evaluation.predict
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("family", "flag"), [("cnn2d", "retinamnist"), ("cnn3d", "adrenalmnist3d")]
)
def test_predict_equals_keras_predict(family, flag):
    model, shape = _model(family, flag)
    x = np.random.default_rng(1).random((7, *shape), dtype=np.float32)
    for batch_size in (256, 3):
        expected = model.predict(x, batch_size=batch_size, verbose=0)
        got = _predict(model, x, batch_size)
        assert got.dtype == np.float64 and got.shape == expected.shape
        # Same graph, same batches: bit-identical, not merely close.
        assert np.array_equal(got, expected.astype(np.float64))
    # float64 and uint8-valued inputs are cast as model.predict casts them
    assert np.array_equal(_predict(model, x.astype(np.float64), 256), _predict(model, x, 256))


def _predict(model, x, batch_size):
    from core import evaluation

    return evaluation.predict(model, x, batch_size=batch_size)


def test_predict_keeps_no_memory_per_call():
    """~300 single-sample predictions (one per new sample a page shows) must not grow RSS.

    ``model.predict`` grew 32 kB per call here (68 kB from a fresh thread, as Streamlit calls
    it); the compiled call grows < 1 kB. Bound: 8 kB per call, 4x from either side.
    """
    model, shape = _model("cnn2d", "retinamnist")
    x = np.random.default_rng(2).random((1, *shape), dtype=np.float32)
    for _ in range(20):
        _predict(model, x, 256)
    gc.collect()
    before = rss_mb()
    calls = 300
    for _ in range(calls):
        _predict(model, x, 256)
    gc.collect()
    per_call_kb = (rss_mb() - before) * 1000 / calls
    assert per_call_kb < 8, f"RSS grew {per_call_kb:.1f} kB per predict call"


def _predict_in_threads(model, x: np.ndarray, n: int) -> list[np.ndarray]:
    from core import evaluation

    results: list[np.ndarray] = []

    def work() -> None:
        results.append(evaluation.predict(model, x))

    threads = [threading.Thread(target=work) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def test_predict_from_many_threads_and_frees_the_model():
    """Streamlit runs each rerun in a new thread; the model must still be freeable after."""
    from core import evaluation

    model, shape = _model("cnn2d", "retinamnist")
    x = np.random.default_rng(3).random((2, *shape), dtype=np.float32)
    expected = evaluation.predict(model, x)
    results = _predict_in_threads(model, x, 4)
    assert len(results) == 4 and all(np.array_equal(r, expected) for r in results)
    ref = weakref.ref(model)
    del model
    gc.collect()
    assert ref() is None, "the compiled predict function keeps its model alive"


def test_libraries_are_frozen_out_of_the_gc_but_models_stay_collectable():
    """Streamlit's ``gc.collect(2)`` after each rerun walked all of TensorFlow (~0.2 CPU-s);
    ``app.cache.freeze_libraries`` freezes it once. A model built afterwards is still freed."""
    import time

    from app import cache

    cache.freeze_libraries()
    frozen = gc.get_freeze_count()
    assert frozen > 100_000, f"only {frozen} objects frozen: TensorFlow not imported first?"
    cache.freeze_libraries()
    assert gc.get_freeze_count() == frozen, "froze a second time"
    model, _ = _model("cnn2d", "retinamnist")
    ref = weakref.ref(model)
    del model
    gc.collect()
    assert ref() is None, "a model made after the freeze was not freed"
    start = time.process_time()
    gc.collect(2)
    assert time.process_time() - start < 0.1, "a full collection still walks the libraries"


# --------------------------------------------------------------------------------------------
# 3D scenes
# --------------------------------------------------------------------------------------------


def fake_scene_html(volume, cam, opts, timeout: float = 90.0) -> str:
    """Stands in for the PyVista child (seconds of CPU a scene): distinct HTML of a real
    scene's size (~1.9 MB), with the '#' colours a real one has."""
    from app import volume as v3d

    key = v3d.scene_key(volume, cam, opts)
    return f"<html><body style='background:#10141a'>{key}{'x' * 1_900_000}</body></html>"


def test_scene_file_is_built_once_and_old_scenes_are_pruned(monkeypatch, tmp_path):
    from app import volume as v3d

    calls = []

    def counting(volume, cam, opts, timeout=90.0):
        calls.append(1)
        return fake_scene_html(volume, cam, opts)

    monkeypatch.setattr(v3d, "pyvista_scene_html", counting)
    monkeypatch.setattr(v3d, "_scene_dir", tmp_path)
    vols = [np.full((4, 4, 4), i, np.uint8) for i in range(5)]
    opts = v3d.SceneOptions()
    first = v3d.scene_file(vols[0], None, opts, keep=3)
    assert first.read_text().startswith("<html>") and len(calls) == 1
    assert v3d.scene_file(vols[0], None, opts, keep=3) == first and len(calls) == 1
    assert v3d.cached_scene_file(vols[0], None, opts) == first
    for vol in vols[1:]:
        v3d.scene_file(vol, None, opts, keep=3)
    assert len(list(tmp_path.glob("*.html"))) == 3
    assert v3d.cached_scene_file(vols[0], None, opts) is None  # least recently used: pruned
    assert v3d.cached_scene_file(vols[4], None, opts) is not None
    assert not list(tmp_path.glob("*.tmp"))


# --------------------------------------------------------------------------------------------
# Soak: users on the Explanations page and the 3D viewer, ~200 interactions
# --------------------------------------------------------------------------------------------

# Per-interaction RSS growth allowed after warm-up, from the mean RSS of the first and last 20
# interactions of the window (single samples jump by MBs). Measured with this test (AppTest,
# fake renderer, 150-interaction window): the old code grew ~1,360 kB per interaction (the
# pinned scenes), the fixed code 110-125 kB: in so short a window the bounded caches are still
# filling (64 heatmaps, 88 kB each for 28³ volumes) and TensorFlow keeps ~13 kB of eager state
# per rerun thread. 400 kB sits ~3x from both; the goal (< 100 MB over 2,000
# interactions) is checked by the browser soak in benchmarks/app_load.py, not here.
MAX_KB_PER_INTERACTION = 400
INTERACTIONS = 210
WARM_UP = 60  # fills the bounded caches (64 heatmaps / probabilities) and traces the functions


@pytest.fixture(scope="module")
def soak_env(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("soak")
    with pytest.MonkeyPatch.context() as mp:
        # enough samples that every sample change is new (a cache miss), as with real data
        mp.setitem(SPLIT_SIZES, "retinamnist", (20, 8, 200))
        mp.setitem(SPLIT_SIZES, "adrenalmnist3d", (6, 4, 60))
        with synthetic_environment(tmp) as env:
            registry = Path(env["TRAINED_MODELS_DIR"])
            runs = {
                "gradcam": make_run(registry, "retinamnist", "cnn2d", seed=0),
                "volume": make_run(registry, "adrenalmnist3d", "cnn3d", seed=1),
            }
            yield runs


def _open(page: str, query: dict) -> AppTest:
    import streamlit as st

    st.cache_data.clear()
    at = AppTest.from_file(HOME, default_timeout=180)
    at.run()
    for key, value in query.items():
        at.query_params[key] = value
    at.switch_page(f"../pages/{page}.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


CHILD_FLAG = "MEDMNIST_SOAK_CHILD"


@pytest.mark.slow
def test_soak_memory_levels_off():
    """The soak, run in a fresh interpreter.

    In the suite's own process the RSS also carries what every earlier test left behind
    (Streamlit and TensorFlow state, other registries' cached models): in a CI run the same
    soak read 413 kB per interaction where it reads −150..+125 kB alone. A child process
    measures this soak and nothing else.
    """
    import subprocess
    import sys

    test = f"{Path(__file__).resolve()}::test_soak_in_this_process"
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider", test],
        env={**os.environ, CHILD_FLAG: "1"},
        cwd=Path(__file__).resolve().parents[1],
        capture_output=True,
        text=True,
        timeout=1500,
    )
    tail = (out.stdout[-4000:] + out.stderr[-2000:]).strip()
    assert out.returncode == 0 and "1 passed" in out.stdout, tail
    print(*(line for line in out.stdout.splitlines() if line.startswith("soak:")))


@pytest.mark.skipif(
    os.environ.get(CHILD_FLAG) != "1",
    reason="runs in the child process that test_soak_memory_levels_off starts",
)
def test_soak_in_this_process(soak_env, monkeypatch):
    import sys

    from app import cache
    from app import volume as v3d

    # what the first model load does; then every library the pages import must be in the freeze
    cache.freeze_libraries()
    frozen_roots = {name.split(".")[0] for name in sys.modules}
    monkeypatch.setattr(v3d, "pyvista_scene_html", fake_scene_html)
    users = [
        ("gradcam", _open("gradcam", {"run": soak_env["gradcam"].name, "split": "test"})),
        ("gradcam", _open("gradcam", {"run": soak_env["gradcam"].name, "split": "test"})),
        ("volume", _open("volume", {"dataset": "adrenalmnist3d", "size": "28"})),
    ]
    # the 3D user turns the scene on: scenes were the largest leak (pinned HTML strings)
    users[2][1].toggle(key="volume_show_scene").set_value(True).run()
    n_samples = {"gradcam": SPLIT_SIZES["retinamnist"][2], "volume": 60}
    methods = {"gradcam": ["gradcam++", "layercam", "gradcam"], "volume": ["gradcam++", "gradcam"]}
    points = []
    for i in range(INTERACTIONS):
        page, at = users[i % 3]
        step, turn = (i // 3) % 3, i // 9
        if step == 0:  # a new sample
            at.number_input(key=f"{page}_index").set_value((turn * 7 + i) % n_samples[page])
        elif step == 1:  # heatmap opacity
            at.slider(key=f"{page}_alpha").set_value(0.5 if turn % 2 == 0 else 0.45)
        else:  # method
            options = methods[page]
            at.selectbox(key=f"{page}_method").set_value(options[turn % len(options)])
        at.run()
        assert not at.exception, (i, page, [e.value for e in at.exception])
        if i >= WARM_UP:
            points.append((i, rss_mb()))
    # a library first imported after the freeze is walked by Streamlit's GC after every run
    # (~0.05 CPU-s per run for scipy, sklearn, matplotlib, plotly): add it to LAZY_LIBRARIES
    late = (
        {
            name.split(".")[0]
            for name in sys.modules
            if not name.startswith(("app", "core", "__autograph_generated"))
        }
        - frozen_roots
        - set(sys.stdlib_module_names)
    )
    assert not late, f"imported after app.cache.freeze_libraries: {sorted(late)}"
    steps, mbs = np.array(points).T
    per_kb = float((mbs[-20:].mean() - mbs[:20].mean()) / (steps[-20:].mean() - steps[:20].mean()))
    per_kb *= 1000
    growth = mbs[-1] - mbs[0]
    print(f"soak: {per_kb:.1f} kB per interaction, {growth:+.1f} MB over {len(points)}")
    assert per_kb < MAX_KB_PER_INTERACTION, (
        f"RSS grows {per_kb:.0f} kB per interaction after warm-up ({growth:+.1f} MB over "
        f"{len(points)} interactions); bound {MAX_KB_PER_INTERACTION} kB"
    )


def test_every_app_cache_is_bounded():
    """Each st.cache_data / st.cache_resource in the app has max_entries (issue 16)."""
    import ast

    unbounded = []
    for path in sorted([*(ROOT / "app").glob("*.py"), *(ROOT / "pages").glob("*.py")]):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for deco in node.decorator_list:
                target = deco.func if isinstance(deco, ast.Call) else deco
                name = ast.unparse(target)
                if name.endswith(("cache_data", "cache_resource")):
                    call = isinstance(deco, ast.Call)
                    keywords = {k.arg for k in deco.keywords} if call else set()
                    if "max_entries" not in keywords:
                        unbounded.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}")
    assert not unbounded, f"caches without max_entries: {unbounded}"
