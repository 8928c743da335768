"""AppTest of the Case review page: name, verdicts, progress, filters, model/split switches.

Random-weight models on small synthetic MedMNIST files (``app_helpers``), a temporary
``REVIEWS_DB``; the browser test (``test_browser_review.py``) covers the real data and a server
restart.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import streamlit as st
from app_helpers import build_registry, synthetic_environment
from streamlit.testing.v1 import AppTest

from core.reviews import ReviewStore

ROOT = Path(__file__).resolve().parents[1]
HOME = str(ROOT / "app" / "Home.py")
PAGE = "../pages/case_review.py"


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("review_app")
    with synthetic_environment(tmp) as values:
        runs = build_registry(Path(values["TRAINED_MODELS_DIR"]), quantize=False)
        yield {**values, "runs": runs, "tmp": tmp}


@pytest.fixture()
def db(env, tmp_path, monkeypatch) -> Path:
    path = tmp_path / "reviews.sqlite"
    monkeypatch.setenv("REVIEWS_DB", str(path))
    return path


RETINA = "retinamnist-cnn2d-s0"
ADRENAL = "adrenalmnist3d-cnn3d-s2"


def open_review(
    name: str | None = "Dr Test", researcher: bool = False, run: str = RETINA
) -> AppTest:
    """The Case review page on ``run``, past the name form when ``name`` is given."""
    st.cache_data.clear()
    at = AppTest.from_file(HOME, default_timeout=180)
    # the researcher role follows server.address, as on the Retrain page (core.auth)
    at.run()
    at.switch_page(PAGE)
    st.config.set_option("server.address", "127.0.0.1" if researcher else "0.0.0.0")
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    if name is not None:
        at.text_input(key="review_name_input").input(name)
        at.button(key="FormSubmitter:review_name_form-Start reviewing").click().run()
        assert not at.exception, [e.value for e in at.exception]
        pick_run(at, run)
    return at


def pick_run(at: AppTest, name: str) -> None:
    at.sidebar.selectbox(key="review_run").set_value(name).run()
    assert not at.exception, [e.value for e in at.exception]


def progress_text(at: AppTest) -> str:
    return at.get("progress")[0].proto.text


def shown_case(at: AppTest) -> str:
    return at.subheader[0].value


def shown_prediction(at: AppTest) -> str:
    return at.metric[0].value


def click(at: AppTest, key: str) -> AppTest:
    at.button(key=key).click().run()
    assert not at.exception, [e.value for e in at.exception]
    return at


@pytest.fixture(autouse=True)
def _reset_address():
    yield
    st.config.set_option("server.address", None)


def test_the_page_asks_a_name_once_and_shows_the_worklist(db):
    at = open_review(name=None)
    assert at.title[0].value == "Case review"
    assert not at.get("progress")  # nothing before the reviewer is known
    at.text_input(key="review_name_input").input("Dr Test")
    at.button(key="FormSubmitter:review_name_form-Start reviewing").click().run()
    assert not at.exception
    pick_run(at, RETINA)
    assert progress_text(at).startswith("0 of 12 reviewed")  # retinamnist test split: 12
    assert any(t.value == "Dr Test" for t in at.sidebar.text)
    for label in ("Agree", "Disagree", "Unsure"):
        assert any(b.label == label for b in at.button), label


def test_a_name_with_markup_is_shown_and_stored_as_typed(db):
    name = "[Dr X](http://example.com) <b>y</b>"
    at = open_review(name)
    assert any(t.value == name for t in at.sidebar.text)
    assert not any(name in c.value for c in at.sidebar.caption)  # never via Markdown
    click(at, "review_unsure")
    assert [r.reviewer for r in ReviewStore(db).rows()] == [name]


def test_agree_is_stored_progress_moves_and_the_next_case_opens(db):
    at = open_review()
    first = shown_case(at)
    at.text_area(key=next(t.key for t in at.text_area)).input("looks =SUM(A1) fine")
    click(at, "review_agree")
    assert progress_text(at).startswith("1 of 12 reviewed")
    assert shown_case(at) != first  # moved on to the next case
    rows = ReviewStore(db).rows()
    assert [(r.reviewer, r.verdict, r.note) for r in rows] == [
        ("Dr Test", "agree", "looks =SUM(A1) fine")
    ]
    assert f"#{rows[0].sample_index}" in first
    # back to it: the verdict and the note are shown as plain text, the PDF can be downloaded
    click(at, "review_prev")
    assert shown_case(at) == first
    assert any(t.value == "looks =SUM(A1) fine" for t in at.text)
    assert any(
        re.fullmatch(r"Agree · Dr Test · \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", t.value)
        for t in at.text
    )
    assert at.get("download_button")


def test_disagree_needs_a_label_and_stores_it(db):
    at = open_review()
    click(at, "review_disagree")
    assert any("needs the correct label" in e.value for e in at.error)
    assert ReviewStore(db).rows() == []
    label_box = next(s for s in at.selectbox if s.key.endswith("_corrected"))
    assert label_box.value is None  # no label chosen for the reviewer
    chosen = 4 if "Proliferative" not in shown_prediction(at) else 0
    label_box.set_value(chosen)  # submitted together with the button, as in a browser
    click(at, "review_disagree")
    (row,) = ReviewStore(db).rows()
    assert row.verdict == "disagree" and row.corrected_label == chosen != row.predicted
    # the disagreed filter shows exactly that case
    at.sidebar.radio(key="review_filter").set_value("disagreed").run()
    assert f"#{row.sample_index}" in shown_case(at)
    assert "Case 1 of 1 in this list" in [c.value for c in at.caption]


def test_unreviewed_filter_hides_reviewed_cases(db):
    at = open_review()
    at.sidebar.radio(key="review_filter").set_value("unreviewed").run()
    first = shown_case(at)
    click(at, "review_unsure")
    assert shown_case(at) != first
    assert "Case 1 of 11 in this list" in [c.value for c in at.caption]


def test_switching_model_and_split_leaves_no_stale_state(db):
    at = open_review()
    click(at, "review_agree")
    assert progress_text(at).startswith("1 of 12 reviewed")
    at.sidebar.radio(key="review_split").set_value("val").run()
    assert not at.exception
    assert progress_text(at).startswith("0 of 8 reviewed")  # val split: 8, none reviewed
    assert "Val sample" in shown_case(at)
    pick_run(at, ADRENAL)
    assert progress_text(at).startswith("0 of 4 reviewed")  # adrenal val split: 4
    assert "Val sample" in shown_case(at)
    assert any("three middle slices" in c.value for c in at.caption)
    # and back: the retinamnist test verdict is still counted
    at.sidebar.radio(key="review_split").set_value("test").run()
    pick_run(at, RETINA)
    assert progress_text(at).startswith("1 of 12 reviewed")


def test_ground_truth_only_for_researchers(db):
    clinician = open_review(researcher=False)
    assert not any("Ground truth" in m.value for m in clinician.markdown)
    researcher = open_review(researcher=True)
    assert any("Ground truth" in m.value for m in researcher.markdown)


def test_agreement_lists_two_reviewers_and_kappa(db):
    at = open_review("Dr A")
    for _ in range(3):
        click(at, "review_agree")
    at = open_review("Dr B")
    for _ in range(3):
        click(at, "review_agree")
    tables = [t.value for t in at.dataframe]
    assert any("Dr A / Dr B" in str(t.values) for t in tables)


def test_a_damaged_database_gives_steps_not_a_traceback(env, tmp_path, monkeypatch):
    bad = tmp_path / "reviews.sqlite"
    bad.write_bytes(b"this is not sqlite" * 100)
    monkeypatch.setenv("REVIEWS_DB", str(bad))
    at = open_review(name=None)
    assert not at.exception
    assert any("not a SQLite database" in e.value for e in at.error)
    assert bad.read_bytes() == b"this is not sqlite" * 100


def test_a_locked_database_on_save_shows_steps_and_loses_nothing(db, monkeypatch):
    import sqlite3

    from core.reviews import store as store_mod

    at = open_review()
    case = shown_case(at)
    monkeypatch.setattr(store_mod, "BUSY_TIMEOUT_S", 0.2)
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # another program holds the file
    try:
        click(at, "review_agree")
        assert any("stayed locked" in e.value and "1. Try again" in e.value for e in at.error)
        assert shown_case(at) == case and progress_text(at).startswith("0 of 12")
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    click(at, "review_agree")  # once released, the same button works
    assert progress_text(at).startswith("1 of 12")
    assert len(ReviewStore(db).rows()) == 1


def disagree_on_shown_case(at: AppTest) -> int:
    """Record Disagree with a label other than the prediction; return the sample index."""
    label_box = next(s for s in at.selectbox if s.key.endswith("_corrected"))
    label_box.set_value(int(label_box.options[0].split(":")[0]))  # options: "i: name"
    index = int(shown_case(at).rsplit("#", 1)[1])
    click(at, "review_disagree")
    return index


def test_retraining_button_queues_a_job_with_train_corrections_only(db, env):
    from core.jobs import JobStore

    jobs_db = JobStore(env["JOBS_DB"])
    before = {j.id for j in jobs_db.list()}
    clinician = open_review(researcher=False)
    assert not any(b.key == "review_retrain" for b in clinician.button)

    at = open_review(researcher=True)
    disagree_on_shown_case(at)  # a test-split correction: refused
    click(at, "review_retrain")
    assert any("all on the test split" in m.value for m in at.warning)
    assert not at.success
    at.sidebar.radio(key="review_split").set_value("train").run()
    index = disagree_on_shown_case(at)
    click(at, "review_retrain")
    (message,) = [m.value for m in at.success if "Queued training job" in m.value]
    job_id = int(message.split("#", 1)[1].split()[0])
    assert job_id not in before
    rows = ReviewStore(db).rows()
    train_row = next(r for r in rows if r.split == "train")
    params = jobs_db.get(job_id).params
    assert params["label_overrides"] == {
        "train": {str(index): train_row.corrected_label},
        "review_ids": [train_row.id],
    }
    assert params["dataset"] == "retinamnist" and params["model"] == "cnn2d"
    assert "1 test-split corrections left out" in message
