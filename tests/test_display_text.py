"""What pages say (issue 17, items 17 and 19): RetinaMNIST grade names, human sizes and a
readable scatter on the Quantization page, plain job errors, and missing-file steps that fit
the page that shows them.
"""

from __future__ import annotations

import json
import traceback
from pathlib import Path

import pytest
from app_helpers import synthetic_environment
from streamlit.testing.v1 import AppTest

from core import info, jobs, registry
from core.joblog import split_log

ROOT = Path(__file__).resolve().parents[1]
HOME = str(ROOT / "app" / "Home.py")
DR_GRADES = ["No DR", "Mild", "Moderate", "Severe NPDR", "Proliferative DR"]


def open_page(page: str) -> AppTest:
    import streamlit as st

    st.cache_data.clear()
    at = AppTest.from_file(HOME, default_timeout=120).run()
    assert not at.exception
    at.switch_page(f"../pages/{page}.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


# ------------------------------------------------------------------------------------------
# Item 17: RetinaMNIST grades by name
# ------------------------------------------------------------------------------------------


def test_retinamnist_grades_have_their_clinical_names():
    assert info.label_names("retinamnist") == DR_GRADES
    # names stored by older runs ("0".."4") map to the same display names
    assert [info.display_label("retinamnist", str(i)) for i in range(5)] == DR_GRADES
    # other datasets keep INFO's names, and unknown names pass through
    assert info.label_names("adrenalmnist3d") == ["normal", "hyperplasia"]
    assert info.display_label("adrenalmnist3d", "normal") == "normal"
    assert info.display_label("retinamnist", "Moderate") == "Moderate"


def test_sample_browser_shows_grade_names(tmp_path):
    with synthetic_environment(tmp_path):
        at = open_page("samples")
        at.selectbox(key="samples_dataset_flag").set_value("retinamnist").run()
        assert not at.exception
        options = at.selectbox(key="samples_label").options
        assert options[1:] == [f"{i}: {name}" for i, name in enumerate(DR_GRADES)]
        shown = " ".join(str(e.value) for e in (*at.markdown, *at.caption))
        shown += " ".join(str(i.proto.imgs[0].caption) for i in at.get("imgs"))
        assert "Moderate" in shown or "No DR" in shown, shown[:500]


def test_experiments_page_names_grades_of_runs_stored_with_bare_numbers(monkeypatch):
    """The shipped RetinaMNIST runs stored "0".."4" in evaluation.json (ROC, confusion,
    per-class rows); the page shows the grade names."""
    monkeypatch.delenv("TRAINED_MODELS_DIR", raising=False)
    stored = registry.read_json(registry.resolve_run("cnn2d_aug"), "evaluation.json")
    assert stored["labels"] == ["0", "1", "2", "3", "4"]  # what makes this test meaningful
    at = open_page("experiments")
    at.selectbox(key="experiments_dataset").set_value("retinamnist").run()
    at.selectbox(key="experiments_run").set_value("cnn2d_aug").run()
    assert not at.exception, [e.value for e in at.exception]
    traces = [t for chart in at.get("plotly_chart") for t in json.loads(chart.proto.spec)["data"]]
    roc_names = [t["name"] for t in traces if str(t.get("name", "")).endswith(")")]
    assert any(n.startswith("Proliferative DR (AUC") for n in roc_names), roc_names
    heat = next(t for t in traces if t.get("type") == "heatmap")
    assert list(heat["x"]) == [f"pred {g}" for g in DR_GRADES]
    assert list(heat["y"]) == [f"true {g}" for g in DR_GRADES]
    # the per-class table (the Trust & clinical tab adds tables after it)
    per_class = [d.value for d in at.dataframe if "label" in d.value.columns]
    assert per_class, [list(d.value.columns) for d in at.dataframe]
    assert list(per_class[0]["label"]) == DR_GRADES


# ------------------------------------------------------------------------------------------
# Item 19: Quantization page
# ------------------------------------------------------------------------------------------

NOTE = (
    "head_bn folded into block5_conv3 and fc1 before conversion (an exact rewrite; BatchNorm "
    "scales spanned 0.0158..3.29)"
)


@pytest.fixture
def quant_registry(tmp_path, monkeypatch):
    """One run with the shipped vgg16_ft2_ema's quantization figures (JSON only)."""
    root = tmp_path / "registry"
    run = root / "vgg16_ft2_ema"
    run.mkdir(parents=True)
    registry.write_json_atomic(
        run / "config.json", {"dataset": "retinamnist", "model": "vgg16", "fine_tune_blocks": 2}
    )
    registry.write_json_atomic(
        run / "metrics.json", {"val": {"auc": 0.81}, "test": {"auc": 0.754, "acc": 0.53}}
    )

    def mode(size, auc, notes):
        return {"size_bytes": size, "test": {"auc": auc, "acc": 0.53}, "notes": notes}

    registry.write_json_atomic(
        run / "quantized" / "results.json",
        {
            "float": {"size_bytes": 59401768, "keras_size_bytes": 59482910, "auc": 0.7543},
            "modes": {
                "dynamic": mode(14927288, 0.7554, [NOTE, "dynamic range: int8 weights"]),
                "float16": mode(29712820, 0.7543, [NOTE]),
                "int8": mode(14982296, 0.7542, [NOTE]),
            },
        },
    )
    monkeypatch.setenv("TRAINED_MODELS_DIR", str(root))
    monkeypatch.setenv("MEDMNIST_ROOT", str(tmp_path / "no-data"))
    monkeypatch.setenv("JOBS_WORKER_AUTOSTART", "0")
    monkeypatch.setenv("JOBS_DB", str(tmp_path / "jobs.sqlite"))
    return root


def test_quantization_sizes_in_mb_no_overlapping_labels_notes_in_full(quant_registry):
    at = open_page("quantization")
    table = at.dataframe[0].value
    assert "size (bytes)" not in table.columns
    sizes = dict(zip(table["mode"], table["size (MB)"], strict=True))
    assert sizes["float"] == pytest.approx(59.401768)
    assert sizes["int8"] == pytest.approx(14.982296)
    (scatter,) = [
        json.loads(c.proto.spec) for c in at.get("plotly_chart") if "size vs" in c.proto.spec
    ]
    # dynamic (14.93 MB, 0.7554) and int8 (14.98 MB, 0.7542) sit on one spot: names printed
    # next to the markers overlap, so the chart names modes in its legend instead
    assert all("text" not in trace.get("mode", "") for trace in scatter["data"])
    assert scatter["layout"]["showlegend"] is True
    assert {t["name"] for t in scatter["data"]} == {"float", "dynamic", "float16", "int8"}
    assert len({t["marker"]["symbol"] for t in scatter["data"]}) == 4
    # the notes are sentences: shown whole, not cut off in a table cell
    assert "notes" not in table.columns
    notes = " ".join(m.value for m in at.markdown)
    assert NOTE in notes and "**dynamic**" in notes and "dynamic range: int8 weights" in notes
    assert notes.count(NOTE) == 1  # shared by every quantized mode: said once


# ------------------------------------------------------------------------------------------
# Item 19: job logs show the error, not the traceback
# ------------------------------------------------------------------------------------------


def _failed_log() -> str:
    from core.data import DatasetUnavailableError

    def fail():
        try:
            raise OSError("network is unreachable")
        except OSError as exc:
            raise DatasetUnavailableError(
                "breastmnist.npz is not available: download failed\n"
                "  1. Download https://zenodo.org/breastmnist.npz\n"
                "  2. Save it as /data/breastmnist.npz"
            ) from exc

    try:
        fail()
    except DatasetUnavailableError:
        tb = traceback.format_exc()
    return f'[worker] job 1 started by w\n[job] {{"dataset": "breastmnist"}}\n{tb}[worker] done\n'


def test_split_log_folds_tracebacks_into_their_error():
    view = split_log(_failed_log())
    assert view.error.splitlines() == [
        "breastmnist.npz is not available: download failed",
        "1. Download https://zenodo.org/breastmnist.npz",
        "2. Save it as /data/breastmnist.npz",
    ]
    assert "Traceback" not in view.text and 'File "' not in view.text
    assert "[error] DatasetUnavailableError: breastmnist.npz is not available" in view.text
    assert view.text.splitlines()[0] == "[worker] job 1 started by w"
    assert view.text.splitlines()[-1] == "[worker] done"
    assert view.details.count("Traceback (most recent call last):") == 2  # the chained cause
    assert "OSError: network is unreachable" in view.details
    plain = split_log("[progress] epoch=1\n[job] saved run x\n")
    assert plain.text == "[progress] epoch=1\n[job] saved run x" and plain.error is None
    assert plain.details == ""


def test_retrain_page_shows_the_error_plainly_and_the_traceback_as_details(tmp_path, monkeypatch):
    from streamlit import config as st_config

    monkeypatch.setenv("JOBS_DB", str(tmp_path / "jobs.sqlite"))
    monkeypatch.setenv("TRAINED_MODELS_DIR", str(tmp_path / "models"))
    monkeypatch.setenv("MEDMNIST_ROOT", str(tmp_path / "data"))
    monkeypatch.setenv("JOBS_WORKER_AUTOSTART", "0")
    store = jobs.JobStore(tmp_path / "jobs.sqlite")
    job_id = store.submit({"dataset": "breastmnist", "model": "cnn2d", "epochs": 2})
    store.claim_next("host:1")
    store.append_log(job_id, _failed_log())
    store.fail(job_id, "DatasetUnavailableError: breastmnist.npz is not available: download")
    old = st_config.get_option("server.address")
    st_config.set_option("server.address", "127.0.0.1")
    try:
        at = AppTest.from_file(str(ROOT / "pages" / "retrain.py"), default_timeout=60).run()
    finally:
        st_config.set_option("server.address", old)
    assert not at.exception
    error = " ".join(e.value for e in at.error)
    assert "breastmnist.npz is not available" in error
    assert "1. Download https://zenodo.org/breastmnist.npz" in error
    assert "Traceback" not in error
    codes = [c.value for c in at.code]
    log = next(c for c in codes if "[worker] job 1 started" in c)
    assert "Traceback" not in log and 'File "' not in log
    (details,) = [c for c in codes if "Traceback (most recent call last)" in c]
    labels = [e.label for e in at.expander]
    assert any(label.startswith("Technical details") for label in labels)
    assert "OSError: network is unreachable" in details


# ------------------------------------------------------------------------------------------
# Item 19: "the file is then downloaded for you" only where something downloads
# ------------------------------------------------------------------------------------------


def test_missing_file_steps_depend_on_whether_the_caller_downloads(tmp_path, monkeypatch):
    import urllib.request

    from core import data

    with pytest.raises(data.DatasetUnavailableError) as viewing:
        data.ensure_file("breastmnist", 28, root=tmp_path, download=False)
    text = str(viewing.value)
    assert "downloaded for you" not in text
    assert "python -m core.data download breastmnist" in text and "Home page" in text
    with pytest.raises(data.DatasetUnavailableError) as viewing64:
        data.load_split("breastmnist", "test", 64, root=tmp_path)
    assert "python -m core.data download breastmnist --size 64" in str(viewing64.value)

    def offline(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(data.DatasetUnavailableError) as downloading:
        data.ensure_file("breastmnist", 28, root=tmp_path, download=True)
    assert "the file is then downloaded for you" in str(downloading.value)
