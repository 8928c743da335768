"""The shipped trust values against real MedMNIST files: a chest X-ray sent to a retina model
and a vessel volume sent to the adrenal model are flagged; the stored figures reproduce."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import REPO, require_real_file

from core import data, registry

SHIPPED = REPO / "trained_models"


@pytest.mark.parametrize(
    ("run", "flag", "foreign"),
    [
        ("cnn2d_noaug", "retinamnist", "pneumoniamnist"),
        ("cnn3d", "adrenalmnist3d", "vesselmnist3d"),
    ],
)
def test_shipped_guard_flags_foreign_images_and_reproduces_its_figures(
    run, flag, foreign, real_data_env
):
    for f in (flag, foreign):
        require_real_file(f)
    if not (SHIPPED / run / "calibration.json").is_file():
        pytest.fail(f"{run} ships no calibration.json: run `python -m core.trust {run}`")
    p = registry.load_predictor(SHIPPED / run)
    trust = p.trust
    x_in, y_in = data.load_split(flag, "test")
    out = p.assess(x_in)
    # the stored test figures are what the shipped files compute now
    det = trust["ood"]["detector"]
    stored = trust["ood"]["test"][det]["in_distribution_flagged"]
    assert out["is_ood"].mean() == pytest.approx(stored, abs=1e-9)
    acc = (out["proba"].argmax(axis=1) == y_in.reshape(-1)).mean()
    assert acc == pytest.approx(trust["metrics"]["test"]["acc"], abs=1e-9)
    # a foreign upload: at least the share flagged, each flagged one also referred
    x_out, _ = data.load_split(foreign, "test")
    flagged = p.is_ood(x_out[:200])
    assert flagged.mean() >= (0.95 if flag == "retinamnist" else 0.90)
    assert p.refer(x_out[:200])[flagged].all()
    # probabilities stay probabilities and uncertainty is 1 - top probability
    np.testing.assert_allclose(out["proba"].sum(axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(out["uncertainty"], 1 - out["proba"].max(axis=1), atol=1e-9)


def test_shipped_cnn3d_page_shows_the_val_chosen_call_beside_argmax(monkeypatch, real_data_env):
    """Test volume 34 is hyperplasia; the shipped 3D model's calibrated argmax calls it normal
    (calibrated p = 0.37; raw 0.11), its validation-chosen threshold on the raw probability
    (0.09) calls it hyperplasia: the page shows both."""
    from pathlib import Path

    import streamlit as st
    from streamlit.testing.v1 import AppTest

    require_real_file("adrenalmnist3d")
    monkeypatch.setenv("TRAINED_MODELS_DIR", str(SHIPPED))
    st.cache_data.clear()
    st.cache_resource.clear()
    home = str(Path(REPO) / "app" / "Home.py")
    at = AppTest.from_file(home, default_timeout=240).run()
    at.query_params["run"] = "cnn3d"
    at.query_params["index"] = "34"
    at.switch_page("../pages/gradcam.py").run()
    assert not at.exception, [e.value for e in at.exception]
    text = " ".join(m.value for m in at.markdown)
    assert "Model predicted: **normal**" in text, text[:3000]
    rule = "validation-chosen rule (hyperplasia when its uncalibrated probability is 9.1% or more"
    assert rule in text
    assert "): **hyperplasia**" in text


def test_home_recommends_on_val_and_reports_the_shown_predictions_accuracy(monkeypatch):
    """Home's recommended table: per dataset the candidate with the best *validation* AUC, and
    the test ACC of the predictions the panels show (calibrated, with class offsets when val
    chose them), named as such. The recommendation is recomputed here from the files, not
    taken from the code under test: reference runs and ensembles, best val AUC.
    """
    import json
    from pathlib import Path

    import streamlit as st
    from streamlit.testing.v1 import AppTest

    from core import catalog

    monkeypatch.setenv("TRAINED_MODELS_DIR", str(SHIPPED))
    st.cache_data.clear()
    at = AppTest.from_file(str(Path(REPO) / "app" / "Home.py"), default_timeout=240).run()
    assert not at.exception, [e.value for e in at.exception]
    table = next(d.value for d in at.dataframe if "recommended" in d.value.columns)
    rows = {r["recommended"]: r for r in table.to_dict("records")}

    def val_auc(path: Path) -> float:
        return json.loads((path / "metrics.json").read_text())["val"]["auc"]

    ensembles = [p for p in SHIPPED.iterdir() if (p / "ensemble.json").is_file()]
    references = [Path(r["path"]) for r in registry.list_runs(SHIPPED) if catalog.is_reference(r)]
    expected = {}
    for path in ensembles + references:
        spec = path / ("ensemble.json" if path in ensembles else "config.json")
        dataset = json.loads(spec.read_text())["dataset"]
        best = expected.get(dataset)
        if best is None or val_auc(path) > val_auc(best):
            expected[dataset] = path
    assert set(rows) == {p.name for p in expected.values()}
    # the 3-seed 3D ensemble wins on val (0.8882 vs 0.8876 for seed 1 alone), by a hair
    assert set(rows) == {"ensemble_adrenal_seeds", "ensemble_retina"}
    for name, row in rows.items():
        calibrated = json.loads((SHIPPED / name / "calibration.json").read_text())["metrics"]
        assert row["probabilities"] == "calibrated"
        assert row["test ACC"] == pytest.approx(calibrated["test"]["acc"])
        assert row["test AUC"] == pytest.approx(calibrated["test"]["auc"])


@pytest.mark.parametrize(
    ("wanted", "expected"),
    [
        ("ensemble_retina", "**ensemble_retina** is an ensemble (the average of cnn2d_aug_s0"),
        ("no_such_run", "The link asked for the model **no_such_run**, which is not among"),
    ],
)
def test_a_link_to_a_model_the_page_cannot_show_says_so(
    monkeypatch, real_data_env, wanted, expected
):
    """The Explanations page explains one Keras model: a link to an ensemble (or a run that is
    gone) opens the first model *and says why*, instead of switching silently; the next
    rerun keeps the user's choice without repeating the note."""
    from pathlib import Path

    import streamlit as st
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("TRAINED_MODELS_DIR", str(SHIPPED))
    st.cache_data.clear()
    st.cache_resource.clear()
    at = AppTest.from_file(str(Path(REPO) / "app" / "Home.py"), default_timeout=240).run()
    at.query_params["run"] = wanted
    at.switch_page("../pages/gradcam.py").run()
    assert not at.exception, [e.value for e in at.exception]
    notes = [i.value for i in at.info if "link asked" in i.value or "is an ensemble" in i.value]
    assert len(notes) == 1 and notes[0].startswith(expected), notes
    shown = at.selectbox(key="gradcam_run").value
    assert shown != wanted and f"opened **{shown}**" in notes[0]
    if wanted == "ensemble_retina":
        assert "pick cnn2d_aug_s0 or vgg16_ft2 or cnn2d_noaug_s0" in notes[0]
    at.selectbox(key="gradcam_run").set_value("vgg16_ft2").run()
    assert at.selectbox(key="gradcam_run").value == "vgg16_ft2"
    assert not [i for i in at.info if "link asked" in i.value or "is an ensemble" in i.value]
