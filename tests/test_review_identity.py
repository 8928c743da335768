"""Reviewer identity: the signed-in user (``st.user``) when login is configured, else a name.

``choose_reviewer`` is the rule; the AppTests run the Case review page with a mocked
``st.user`` (AppTest cannot sign in through an identity provider) and check that a verdict is
stored under the signed-in user's e-mail, and that no name form is offered instead.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import streamlit as st
from app_helpers import build_registry, synthetic_environment
from streamlit.testing.v1 import AppTest

from app.review_ui import choose_reviewer
from core.reviews import ReviewStore

HOME = str(Path(__file__).resolve().parents[1] / "app" / "Home.py")
AUTH = {
    "auth": {
        "redirect_uri": "http://localhost:8501/oauth2callback",
        "cookie_secret": "x" * 32,
        "client_id": "id",
        "client_secret": "secret",
        "server_metadata_url": "https://idp.example.org/.well-known/openid-configuration",
    }
}


@pytest.mark.parametrize(
    ("login", "user", "session_name", "expected"),
    [
        (
            True,
            {"is_logged_in": True, "email": "ada@example.org", "name": "Ada"},
            None,
            ("ada@example.org", "signed_in"),
        ),
        (True, {"is_logged_in": True, "name": "  Ada L.  "}, None, ("Ada L.", "signed_in")),
        # login configured: a name typed earlier never replaces the provider's identity
        (True, {"is_logged_in": False}, "Dr Typed", (None, "sign_in")),
        (True, {"is_logged_in": True}, "Dr Typed", (None, "sign_in")),  # no e-mail nor name
        (False, {}, "Dr Typed", ("Dr Typed", "session")),
        (False, {"is_logged_in": True, "email": "x@y"}, None, (None, "ask_name")),
    ],
)
def test_choose_reviewer(login, user, session_name, expected):
    choice = choose_reviewer(login, user, session_name)
    assert (choice.name, choice.source) == expected


def test_an_unstorable_identity_is_refused():
    with pytest.raises(ValueError, match="invalid"):
        choose_reviewer(True, {"is_logged_in": True, "email": "bad\x00name"}, None)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("identity")
    with synthetic_environment(tmp) as values:
        build_registry(Path(values["TRAINED_MODELS_DIR"]), quantize=False)
        yield values


def review_page(db: Path, user: dict, monkeypatch) -> AppTest:
    monkeypatch.setenv("REVIEWS_DB", str(db))
    st.cache_data.clear()
    at = AppTest.from_file(HOME, default_timeout=180)
    at.secrets = dict(AUTH)
    at.user = dict(user)
    at.run()
    at.switch_page("../pages/case_review.py")
    st.config.set_option("server.address", "0.0.0.0")
    try:
        at.run()
    finally:
        st.config.set_option("server.address", None)
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_a_signed_in_reviewer_is_stored_with_the_verdict(env, tmp_path, monkeypatch):
    db = tmp_path / "reviews.sqlite"
    at = review_page(db, {"is_logged_in": True, "email": "ada@example.org"}, monkeypatch)
    assert not [t for t in at.text_input if t.key == "review_name_input"]  # no name asked
    assert any(t.value == "ada@example.org" for t in at.sidebar.text)
    assert any("signed in" in c.value for c in at.sidebar.caption)
    at.sidebar.selectbox(key="review_run").set_value("retinamnist-cnn2d-s0").run()
    at.button(key="review_agree").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert [(r.reviewer, r.verdict) for r in ReviewStore(db).rows()] == [
        ("ada@example.org", "agree")
    ]


def test_signed_out_with_login_configured_offers_sign_in_not_a_name(env, tmp_path, monkeypatch):
    at = review_page(tmp_path / "reviews.sqlite", {"is_logged_in": False}, monkeypatch)
    assert "Sign in to review cases" in "\n".join(i.value for i in at.info)
    assert at.button(key="review_login") is not None
    assert not [t for t in at.text_input if t.key == "review_name_input"]
    assert not [b for b in at.button if b.key == "review_agree"]
