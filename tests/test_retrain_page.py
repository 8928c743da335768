"""AppTest of the Retrain page (pages/retrain.py): form validation, queueing, job views, access.

No worker runs here: submitting only queues rows, and job states are written straight into a
temporary job database.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
from streamlit import config as st_config
from streamlit.testing.v1 import AppTest

from core import auth, jobs

PAGE = str(Path(__file__).resolve().parents[1] / "pages" / "retrain.py")
TIMEOUT = 60


@contextlib.contextmanager
def server_address(value):
    old = st_config.get_option("server.address")
    st_config.set_option("server.address", value)
    try:
        yield
    finally:
        st_config.set_option("server.address", old)


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("JOBS_DB", str(tmp_path / "var" / "jobs.sqlite"))
    monkeypatch.setenv("TRAINED_MODELS_DIR", str(tmp_path / "trained_models"))
    monkeypatch.setenv("MEDMNIST_ROOT", str(tmp_path / "data"))
    monkeypatch.setenv("JOBS_WORKER_AUTOSTART", "0")
    return jobs.JobStore(tmp_path / "var" / "jobs.sqlite")


@pytest.fixture
def local():
    with server_address("127.0.0.1"):
        yield


@pytest.fixture
def exposed():
    with server_address(None):
        yield


def run_page(secrets=None, user=None) -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=TIMEOUT)
    if secrets:
        at.secrets = dict(secrets)
    if user is not None:
        at.user = dict(user)
    return at.run()


def texts(elements) -> str:
    return "\n".join(str(e.value) for e in elements)


def fill_form(at: AppTest, **values) -> AppTest:
    keys = {
        "dataset": ("selectbox", "retrain_dataset"),
        "model": ("selectbox", "retrain_model"),
        "size": ("selectbox", "retrain_size"),
        "epochs": ("number_input", "retrain_epochs"),
        "learning_rate": ("text_input", "retrain_lr"),
        "batch_size": ("number_input", "retrain_batch_size"),
        "augment": ("checkbox", "retrain_augment"),
        "fine_tune_blocks": ("number_input", "retrain_fine_tune_blocks"),
        "weight_ema": ("number_input", "retrain_weight_ema"),
        "label_smoothing": ("number_input", "retrain_label_smoothing"),
        "seed": ("number_input", "retrain_seed"),
    }
    defaults = {"dataset": "retinamnist", "model": "cnn2d", "epochs": 2, "learning_rate": "1e-3"}
    for name, value in {**defaults, **values}.items():
        kind, key = keys[name]
        getattr(at, kind)(key=key).set_value(value)
    return at.button(key="retrain_submit").click().run()


FORM_KEYS = [
    ("selectbox", "retrain_dataset"),
    ("selectbox", "retrain_model"),
    ("selectbox", "retrain_size"),
    ("number_input", "retrain_epochs"),
    ("text_input", "retrain_lr"),
    ("number_input", "retrain_batch_size"),
    ("checkbox", "retrain_augment"),
    ("number_input", "retrain_fine_tune_blocks"),
    ("number_input", "retrain_weight_ema"),
    ("number_input", "retrain_label_smoothing"),
    ("number_input", "retrain_seed"),
]


def test_localhost_mode_shows_the_form(env, local):
    at = run_page()
    assert not at.exception
    assert "Access: local only" in texts(at.info)
    for kind, key in FORM_KEYS:
        assert getattr(at, kind)(key=key) is not None
    assert at.button(key="retrain_submit") is not None
    assert "No training jobs yet" in texts(at.info)
    assert "No training worker is running" in texts(at.warning)
    assert at.button(key="retrain_start_worker") is not None


BAD_FORM_VALUES = [
    ({"epochs": 0}, "epochs"),
    ({"epochs": 301}, "epochs"),
    ({"learning_rate": "abc"}, "learning_rate"),
    ({"learning_rate": "0"}, "learning_rate"),
    ({"learning_rate": "2"}, "learning_rate"),
    ({"learning_rate": "1e-9"}, "learning_rate"),
    ({"batch_size": 0}, "batch_size"),
    ({"batch_size": 4096}, "batch_size"),
    ({"model": "vgg16", "fine_tune_blocks": 6}, "fine_tune_blocks"),
    ({"fine_tune_blocks": 2}, "fine_tune_blocks"),  # not a VGG16
    ({"weight_ema": 1.0}, "weight_ema"),
    ({"label_smoothing": -0.1}, "label_smoothing"),
    ({"seed": -1}, "seed"),
    ({"seed": 2**31}, "seed"),
    ({"model": "cnn3d"}, "model"),  # 2D data, 3D model
    ({"dataset": "adrenalmnist3d", "model": "cnn2d"}, "model"),
    ({"dataset": "adrenalmnist3d", "model": "cnn3d", "size": 128}, "size"),
]


@pytest.mark.parametrize(("values", "field"), BAD_FORM_VALUES)
def test_form_rejects_each_bad_value(env, local, values, field):
    at = fill_form(run_page(), **values)
    assert not at.exception
    errors = texts(at.sidebar.error)
    assert "The job was not queued" in errors and field in errors, errors
    assert env.list() == []


def test_valid_form_queues_a_job_without_training(env, local):
    at = fill_form(
        run_page(),
        dataset="retinamnist",
        model="vgg16",
        epochs=3,
        learning_rate="0.0005",
        batch_size=16,
        augment=True,
        fine_tune_blocks=2,
        weight_ema=0.99,
        label_smoothing=0.1,
        seed=7,
    )
    assert not at.exception
    assert not at.sidebar.error
    (job,) = env.list()
    assert job.status == "queued" and job.submitted_by == "local user"
    expected = {
        "dataset": "retinamnist",
        "model": "vgg16",
        "epochs": 3,
        "batch_size": 16,
        "learning_rate": 0.0005,
        "augment": True,
        "fine_tune_blocks": 2,
        "weight_ema": 0.99,
        "label_smoothing": 0.1,
        "seed": 7,
        "size": 28,
    }
    assert {k: job.params[k] for k in expected} == expected
    assert f"Job #{job.id} queued" in texts(at.sidebar.success)
    assert any(f"Job #{job.id} queued" in str(t.value) for t in at.toast)
    # the missing data file is not an error: the worker downloads it
    assert "download" in texts(at.sidebar.warning)
    # the table and the job view show it as queued
    assert at.selectbox(key="retrain_job").value == job.id
    assert "Waiting in the queue" in texts(at.info)
    assert at.button(key=f"retrain_cancel_{job.id}") is not None


def populate(store: jobs.JobStore) -> dict[str, int]:
    params = {
        "dataset": "retinamnist",
        "model": "cnn2d",
        "epochs": 5,
        "seed": 0,
        "learning_rate": 1e-3,
        "batch_size": 32,
    }
    ids = {
        name: store.submit({**params, "seed": i}, submitted_by="ada")
        for i, name in enumerate(["succeeded", "failed", "cancelled", "running", "queued"])
    }
    for name in ("succeeded", "failed", "cancelled", "running"):
        assert store.claim_next("host:1").id == ids[name]
    for epoch in (1, 2):
        for name in ("succeeded", "running"):
            store.update_progress(
                ids[name],
                {
                    "epoch": epoch,
                    "epochs": 5,
                    "loss": 1.2 / epoch,
                    "val_auc": 0.6 + epoch / 20,
                    "val_acc": 0.5,
                },
            )
    store.append_log(ids["failed"], "Traceback (most recent call last):\nOOM while training\n")
    store.fail(ids["failed"], "training process was killed by SIGKILL")
    store.finish(ids["succeeded"], run_dir="/registry/retinamnist-cnn2d-s0-20260101")
    store.finish(ids["cancelled"], status="cancelled")
    store.append_log(ids["running"], "[progress] epoch=2 epochs=5\n")
    return ids


def test_job_table_and_views_for_every_status(env, local):
    ids = populate(env)
    at = run_page()
    assert not at.exception
    table = at.dataframe[0].value
    assert list(table["job"]) == sorted(ids.values(), reverse=True)
    statuses = " ".join(table["status"])
    for status in jobs.STATUSES:
        assert status in statuses
    assert "retinamnist-cnn2d-s0-20260101" in " ".join(table["result"])
    assert {"submitted", "started", "finished", "dataset", "model"} <= set(table.columns)

    # the running job is followed by default: epoch x of y, curves, log, cancel
    assert at.selectbox(key="retrain_job").value == ids["running"]
    (bar,) = at.get("progress")
    assert bar.proto.text.startswith("Epoch 2 of 5") and bar.proto.value == 40
    assert len(at.get("plotly_chart")) == 1
    assert "[progress] epoch=2" in texts(at.code)
    at.button(key=f"retrain_cancel_{ids['running']}").click().run()
    assert not at.exception
    assert env.cancel_requested(ids["running"])
    assert env.get(ids["running"]).status == "running"  # the worker stops it, not the page

    at.selectbox(key="retrain_job").set_value(ids["failed"]).run()
    assert "killed by SIGKILL" in texts(at.error)
    assert "OOM while training" in texts(at.code)
    assert not [b for b in at.button if b.key.startswith("retrain_cancel_")]

    at.selectbox(key="retrain_job").set_value(ids["succeeded"]).run()
    assert "retinamnist-cnn2d-s0-20260101" in texts(at.success)
    assert "retinamnist-cnn2d-s0-20260101" in texts(at.code)  # no Experiments page standalone

    at.selectbox(key="retrain_job").set_value(ids["cancelled"]).run()
    assert "Cancelled" in texts(at.warning)

    at.selectbox(key="retrain_job").set_value(ids["queued"]).run()
    assert "Waiting in the queue" in texts(at.info)
    at.button(key=f"retrain_cancel_{ids['queued']}").click().run()
    assert env.get(ids["queued"]).status == "cancelled"


def test_denied_mode_is_view_only_with_steps(env, exposed):
    ids = populate(env)
    at = run_page()
    assert not at.exception
    warning = texts(at.warning)
    assert "Access: view only" in warning and "all network interfaces" in warning
    for step in (
        "1. Set a researcher password",
        "2. Configure an identity provider",
        "3. For use on this machine only",
    ):
        assert step in warning
    assert "python -m core.auth hash" in warning
    assert not [b for b in at.button if b.key == "retrain_submit"]
    assert "researcher role" in texts(at.sidebar.info)
    # clinicians still see the jobs, without Cancel
    assert len(at.dataframe[0].value) == len(ids)
    assert not [b for b in at.button if b.key.startswith("retrain_cancel_")]
    assert not [b for b in at.button if b.key == "retrain_start_worker"]


def test_password_mode(env, exposed):
    stored = auth.hash_password("researcher-secret", iterations=1_000)
    at = run_page(secrets={"researcher_password_hash": stored})
    assert not at.exception
    assert "Access: researcher password" in texts(at.info)
    assert not [b for b in at.button if b.key == "retrain_submit"]

    at.text_input(key="retrain_password").set_value("wrong guess")
    at.button(key="retrain_unlock").click().run()
    assert "Wrong password" in texts(at.sidebar.error)
    assert not [b for b in at.button if b.key == "retrain_submit"]

    at.text_input(key="retrain_password").set_value("researcher-secret")
    at.button(key="retrain_unlock").click().run()
    assert not at.exception
    assert "Unlocked for this browser session" in texts(at.success)
    at = fill_form(at)
    (job,) = env.list()
    assert job.submitted_by == "researcher (password)"

    at.button(key="retrain_lock").click().run()
    assert not [b for b in at.button if b.key == "retrain_submit"]


def test_password_mode_locks_out_after_repeated_failures(env, exposed):
    stored = auth.hash_password("researcher-secret", iterations=1_000)
    at = run_page(secrets={"researcher_password_hash": stored})
    for _ in range(5):
        at.text_input(key="retrain_password").set_value("nope")
        at.button(key="retrain_unlock").click().run()
    assert "Too many wrong passwords" in texts(at.sidebar.warning)
    assert at.button(key="retrain_unlock").disabled  # a browser cannot submit either
    assert "retrain_locked_until" in at.session_state
    assert not [b for b in at.button if b.key == "retrain_submit"]


def test_password_mode_with_a_malformed_hash(env, exposed):
    at = run_page(secrets={"researcher_password_hash": "plain-text-password"})
    assert not at.exception
    error = texts(at.error)
    assert "not a valid hash" in error and "python -m core.auth hash" in error
    assert not [b for b in at.button if b.key == "retrain_submit"]


AUTH = {
    "auth": {
        "redirect_uri": "http://localhost:8501/oauth2callback",
        "cookie_secret": "x" * 32,
        "client_id": "id",
        "client_secret": "secret",
        "server_metadata_url": "https://idp.example.org/.well-known/openid-configuration",
    }
}


def test_login_mode_signed_out(env, exposed):
    at = run_page(secrets=AUTH, user={"is_logged_in": False})
    assert not at.exception
    assert "Access: identity provider sign-in" in texts(at.info)
    assert at.button(key="retrain_login") is not None
    assert not [b for b in at.button if b.key == "retrain_submit"]


def test_login_mode_researcher_and_allow_list(env, exposed):
    secrets = {**AUTH, "researchers": ["ada@example.org"]}
    at = run_page(secrets=secrets, user={"is_logged_in": True, "email": "ada@example.org"})
    assert not at.exception
    assert "Signed in as ada@example.org: researcher" in texts(at.success)
    fill_form(at)
    assert env.list()[0].submitted_by == "ada@example.org"

    at = run_page(secrets=secrets, user={"is_logged_in": True, "email": "eve@example.org"})
    assert not at.exception
    assert "not on the researcher list" in texts(at.warning)
    assert not [b for b in at.button if b.key == "retrain_submit"]


def test_login_mode_without_allow_list_accepts_any_signed_in_user(env, local):
    at = run_page(secrets=AUTH, user={"is_logged_in": True, "email": "bob@example.org"})
    assert not at.exception
    assert "researcher" in texts(at.success)  # login wins over localhost
    assert at.button(key="retrain_submit") is not None


def test_unreadable_database_shows_steps_not_a_traceback(env, local, tmp_path, monkeypatch):
    bad = tmp_path / "not-a-db.sqlite"
    bad.write_bytes(b"this is not sqlite" * 100)
    monkeypatch.setenv("JOBS_DB", str(bad))
    at = run_page()
    assert not at.exception
    assert "job database cannot be read" in texts(at.error)
