"""Streamlit pieces of the Case review page: who reviews, the worklist controls, the verdict form.

Each ``*_ui`` function draws its widgets and returns plain values; storage, ordering and
agreement are in :mod:`core.reviews`. Nothing here imports TensorFlow at import time: the
predictor cache (:func:`predictor`, :func:`split_trust`) imports ``core.registry``'s loader
inside the function.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import streamlit as st

from app import cache, state
from core import auth
from core.reviews import (
    FILTERS,
    MAX_NOTE_CHARS,
    Agreement,
    NothingToRetrainError,
    ReviewStore,
    ReviewStoreError,
    WorkItem,
    Worklist,
    queue_retraining,
    validate_reviewer,
)

log = logging.getLogger("medmnist_review.app")
REVIEWER_KEY = "review_reviewer"  # plain key: survives page switches for the browser session
CASE_KEY = "review_case"  # the sample index on screen (plain key, set by next/previous)
CONTEXT_KEY = "review_context"  # (run, split): a new one starts at the top of the list
SAVED_KEY = "review_saved"  # message of the verdict just saved, shown after the rerun
FILTER_LABELS = {
    "all": "All cases",
    "unreviewed": "Not yet reviewed by me",
    "disagreed": "Disagreed (by any reviewer)",
}
VERDICT_BUTTONS = {"agree": "Agree", "disagree": "Disagree", "unsure": "Unsure"}
HELP_PROBABILITY = {
    True: "The class the model scores highest, and its calibrated probability: the raw scores "
    "are rescaled (temperature scaling, with a per-class offset where that fitted better, "
    "both fitted on the validation images) so that, over many cases, a class shown at 70 % "
    "is right about 70 % of the time. It says how sure the model "
    "is; it is not a guarantee that this case is right.",
    False: "The class the model scores highest, and the probability it gives it. This model has "
    "no trust values yet, so this is the raw model output, not calibrated: it is often more "
    "confident than the model's real accuracy. It is not a guarantee that this case is right.",
}
HELP_REFER = (
    "**Referred to a specialist**: the model is not sure enough to be relied on for this case "
    "(its uncertainty is above the threshold chosen on the validation images), or the image "
    "does not look like the images it was trained on. Referred cases come first in the list."
)


# 16 = a few runs x 3 splits; N x (classes + 2) floats each (a few kB at MedMNIST sizes)
@st.cache_data(max_entries=16, ttl=3600, show_spinner="Scoring the cases…")
def split_trust(run_path: str, flag: str, split: str, size: int) -> dict[str, Any]:
    """The predictor's view of a whole split: what the worklist orders and shows.

    Args:
        run_path: the run folder.
        flag, split, size: the split the run's cases come from (``core.data.load_split``).

    Returns:
        ``{"proba" (N, K), "uncertainty" (N,), "refer" (N,) bool or None, "calibrated"}``:
        calibrated probabilities, uncertainty and refer flags when the run has
        ``calibration.json``; otherwise the raw probabilities (temperature 1), their
        uncertainty, ``refer`` None and ``calibrated`` False.

    Raises:
        core.registry.RegistryError / RunFileError: the run or its files cannot be read.
    """
    from core import data

    pred = cache.predictor(run_path)  # the one app-wide predictor cache (app.cache)
    x, _ = data.load_split(flag, split, size)
    if pred.trust:
        out = pred.assess(x)
        return {
            "proba": out["proba"],
            "uncertainty": out["uncertainty"],
            "refer": out["refer"].astype(bool),
            "calibrated": True,
        }
    # without calibration.json: T = 1 (raw softmax); no refer threshold or OOD guard exists
    proba = pred.predict_proba(x)
    return {
        "proba": proba,
        "uncertainty": 1.0 - proba.max(axis=1),
        "refer": None,
        "calibrated": False,
    }


def trust_note_ui(calibrated: bool, run_name: str) -> None:
    """Say how the worklist is ordered and whether its probabilities are calibrated."""
    if calibrated:
        st.caption(
            "Cases the model refers to a specialist come first, then the most uncertain ones. "
            "Probabilities are calibrated (temperature scaling fitted on the validation images, "
            "with a per-class offset where that fitted them better)."
        )
        return
    st.info(
        "This model has no trust values yet (no calibration.json): the probabilities shown are "
        "the raw model output, **not calibrated**, and no case is flagged for referral. The "
        "list starts with the cases the model is least sure about.\n\n"
        f"1. A researcher can fit them with `python -m core.trust {run_name}` (about a minute "
        "for a small model).\n"
        "2. Reload this page afterwards.",
        icon=":material/tune:",
    )


def _secrets() -> dict[str, Any]:
    """``st.secrets`` as a dict; empty when there is no secrets.toml (or it cannot be parsed)."""
    try:
        return {key: st.secrets[key] for key in st.secrets}
    except Exception:  # noqa: BLE001 - FileNotFoundError, TOML errors: treat as unconfigured
        return {}


def store_error_ui(exc: Exception, doing: str) -> None:
    """Show a review-database error: its own numbered steps, one per line; the log gets it too."""
    log.error("review database error while %s", doing, exc_info=exc)
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    st.error("  \n".join(lines), icon=":material/database:")


def _login_configured() -> bool:
    return "auth" in _secrets()


def is_researcher() -> bool:
    """Whether this viewer holds the researcher role (sees the ground truth).

    The same rule as the Retrain page (``core.auth.access_mode``): a signed-in user on the
    researcher list, a browser session that unlocked retraining with the researcher password,
    or anyone when the server listens on this machine only.
    """
    secrets = _secrets()
    mode = auth.access_mode(
        "auth" in secrets,
        secrets.get("researcher_password_hash"),
        st.get_option("server.address"),
    )
    if mode == "login":
        user = st.user
        if not user.get("is_logged_in", False):
            return False
        allow = secrets.get("researchers")
        return auth.is_researcher_email(user.get("email"), list(allow) if allow else None)
    if mode == "password":
        return bool(st.session_state.get("retrain_unlocked"))
    return mode == "localhost"


@dataclass(frozen=True)
class ReviewerChoice:
    """Who reviews, decided from the sign-in state and the name given in this session.

    Attributes:
        name: The identity stored with every verdict, or None while it is not known.
        source: "signed_in" (``st.user``), "session" (the name typed in this browser
            session), "sign_in" (login is configured, nobody is signed in: offer sign-in) or
            "ask_name" (no login configured, no name yet: ask for one).
    """

    name: str | None
    source: str


def choose_reviewer(
    login_configured: bool, user: Mapping[str, Any], session_name: str | None
) -> ReviewerChoice:
    """The reviewer's identity: the signed-in user when login is configured, else a name.

    When login is configured, a typed name is never used: verdicts carry the identity the
    identity provider vouches for (its e-mail, else its name).

    Args:
        login_configured: ``secrets.toml`` has an ``[auth]`` section (``st.login`` works).
        user: ``st.user`` (a mapping: ``is_logged_in``, ``email``, ``name``, ...).
        session_name: The name given earlier in this browser session, if any.

    Returns:
        The ``ReviewerChoice``.

    Raises:
        ValueError: the signed-in user's e-mail/name is not a valid reviewer name (see
            ``core.reviews.validate_reviewer``).
    """
    if login_configured:
        if user.get("is_logged_in", False):
            who = user.get("email") or user.get("name")
            if who:
                return ReviewerChoice(validate_reviewer(str(who)), "signed_in")
        return ReviewerChoice(None, "sign_in")
    if session_name:
        return ReviewerChoice(session_name, "session")
    return ReviewerChoice(None, "ask_name")


def reviewer_ui() -> str | None:
    """The reviewer's identity: the signed-in user, else a name asked once per browser session.

    Returns:
        The name stored with every verdict, or None while it is not known yet (the page stops;
        a sign-in button or a name form is on screen).
    """
    login = _login_configured()
    try:
        choice = choose_reviewer(
            login, st.user if login else {}, st.session_state.get(REVIEWER_KEY)
        )
    except ValueError:
        st.error(
            "Your sign-in identity cannot be stored as a reviewer name (empty, over 120 "
            "characters or with control characters).\n"
            "1. Ask the operator to check the identity provider's e-mail/name claims.\n"
            "2. Sign in again."
        )
        return None
    if choice.source == "signed_in":
        st.sidebar.caption("Reviewing as (signed in):")
        st.sidebar.text(choice.name)  # plain text: a name is never Markdown
        return choice.name
    if choice.source == "sign_in":
        st.info(
            "Sign in to review cases: every verdict is stored with your identity.",
            icon=":material/login:",
        )
        if st.button("Sign in", key="review_login", type="primary"):
            st.login()
        return None
    if choice.source == "session":
        st.sidebar.caption("Reviewing as (name given in this browser session):")
        st.sidebar.text(choice.name)  # plain text: a typed name is never rendered as Markdown
        return choice.name
    with st.form("review_name_form"):
        typed = st.text_input(
            "Your name",
            key="review_name_input",
            max_chars=120,
            help="Stored with every verdict you record (the audit trail says who said what). "
            "Asked once per browser session; no sign-in is configured on this server.",
        )
        submitted = st.form_submit_button("Start reviewing", type="primary")
    if submitted:
        try:
            st.session_state[REVIEWER_KEY] = validate_reviewer(typed)
        except ValueError:
            st.error("Type your name (1-120 printable characters), then press Start reviewing.")
            return None
        st.rerun()
    return None


def filters_ui(labels: Sequence[str], container: Any = st) -> tuple[str, int | None]:
    """Which cases the worklist shows: a filter and optionally one predicted class.

    Returns:
        ``(filter, predicted class or None)``; the filter is one of ``core.reviews.FILTERS``.
    """
    state.follow("review_filter", FILTERS, "all")
    show = container.radio(
        "Show",
        FILTERS,
        key="review_filter",
        format_func=FILTER_LABELS.get,
        help="Disagreed: cases where at least one reviewer's current verdict is Disagree.",
    )
    # -1 = every class (None would show as an empty choice in the browser)
    options = [-1, *range(len(labels))]
    state.follow("review_class", options, -1, parent=tuple(labels))
    cls = container.selectbox(
        "Predicted class",
        options,
        key="review_class",
        format_func=lambda i: "Every class" if i < 0 else f"{i}: {labels[i]}",
        help="Only the cases the model assigned to this class.",
    )
    return show, (None if cls < 0 else int(cls))


def current_case(worklist: Worklist, context: tuple) -> WorkItem | None:
    """The case on screen: the one last shown if still in the list, else the first.

    A new ``context`` (another model or split) starts at the top of the list, so a case
    index from one model is never shown with another model's prediction.
    """
    if st.session_state.get(CONTEXT_KEY) != context:
        st.session_state[CONTEXT_KEY] = context
        st.session_state.pop(CASE_KEY, None)
    if not worklist.items:
        return None
    index = st.session_state.get(CASE_KEY)
    item = worklist.items[worklist.position(index)]
    st.session_state[CASE_KEY] = item.index
    return item


def _go(index: int | None) -> None:
    if index is not None:
        st.session_state[CASE_KEY] = index


def navigation_ui(worklist: Worklist, item: WorkItem) -> None:
    """Previous / next buttons and where the case is in the list."""
    pos = worklist.position(item.index)
    cols = st.columns([1, 1, 4])
    cols[0].button(
        "Previous",
        key="review_prev",
        icon=":material/arrow_back:",
        disabled=pos == 0,
        on_click=_go,
        args=(worklist.neighbour(item.index, -1),),
        width="stretch",
    )
    cols[1].button(
        "Next",
        key="review_next",
        icon=":material/arrow_forward:",
        disabled=pos >= len(worklist.items) - 1,
        on_click=_go,
        args=(worklist.neighbour(item.index, +1),),
        width="stretch",
    )
    cols[2].caption(f"Case {pos + 1} of {len(worklist.items)} in this list")


@dataclass(frozen=True)
class VerdictInput:
    """What the reviewer submitted: the verdict, the corrected label and the note."""

    verdict: str
    corrected_label: int | None
    note: str


def verdict_form_ui(item: WorkItem, labels: Sequence[str], form_key: str) -> VerdictInput | None:
    """The verdict form of one case: correct label (for Disagree), note, three buttons.

    Args:
        item: the case on screen.
        labels: class names by index.
        form_key: unique per (run, split, case), so nothing typed for one case shows on another.

    Returns:
        The submitted verdict, or None when no button was pressed. A Disagree without a label
        shows an error and returns None.
    """
    others = [i for i in range(len(labels)) if i != item.predicted]
    with st.form(form_key, clear_on_submit=True, border=True):
        corrected = st.selectbox(
            "Correct label (needed for Disagree)",
            others,
            index=None,
            key=f"{form_key}_corrected",
            placeholder="Choose the class you think is right",
            format_func=lambda i: f"{i}: {labels[i]}",
            help="Only asked when you disagree: the class this case really shows, in your "
            "judgement. The model's prediction is not in the list.",
        )
        note = st.text_area(
            f"Note (optional, at most {MAX_NOTE_CHARS:,} characters)",
            key=f"{form_key}_note",
            max_chars=MAX_NOTE_CHARS,
            help="Free text stored with the verdict and shown as plain text (no formatting).",
        )
        cols = st.columns(3)
        pressed = None
        for col, (verdict, label) in zip(cols, VERDICT_BUTTONS.items(), strict=True):
            if col.form_submit_button(
                label,
                key=f"review_{verdict}",
                type="primary" if verdict == "agree" else "secondary",
                width="stretch",
                help={
                    "agree": "The prediction is right.",
                    "disagree": "The prediction is wrong: pick the correct label above first.",
                    "unsure": "You cannot tell from this image.",
                }[verdict],
            ):
                pressed = verdict
    if pressed is None:
        return None
    if pressed == "disagree" and corrected is None:
        st.error(
            "Nothing was saved: a disagreement needs the correct label.\n\n"
            "1. Choose the class you think is right under *Correct label*.\n"
            "2. Press **Disagree** again."
        )
        return None
    return VerdictInput(
        verdict=pressed,
        corrected_label=int(corrected) if pressed == "disagree" else None,
        note=(note or "").strip(),
    )


def colour_bar(cmap: str, width: int = 256, height: int = 14) -> np.ndarray:
    """A horizontal colour bar (low relevance left, high right) for the overlay's legend."""
    from core.imaging import colorize

    return colorize(np.tile(np.linspace(0.0, 1.0, width), (height, 1)), cmap)


def _show_disagreed() -> None:
    # a callback: it runs before the script, so the filter radio is not drawn yet
    st.session_state["review_filter"] = "disagreed"


def agreement_ui(model_rows: Sequence[Agreement], pairs: Sequence[Agreement]) -> None:
    """Model-vs-reviewer and reviewer-vs-reviewer tables, and a button to the disagreed cases."""

    def fmt(value: float | None, pattern: str) -> str:
        return "–" if value is None else format(value, pattern)

    st.dataframe(
        [
            {
                "Reviewer": row.b,
                "Cases with a label": row.n,
                "Agreed with the model": fmt(row.accuracy, ".1%"),
                "Cohen's kappa": fmt(row.kappa, ".2f"),
            }
            for row in model_rows
        ],
        hide_index=True,
        key="review_agreement_model",
    )
    if pairs:
        st.dataframe(
            [
                {
                    "Reviewers": f"{row.a} / {row.b}",
                    "Shared cases": row.n,
                    "Same label": fmt(row.accuracy, ".1%"),
                    "Cohen's kappa": fmt(row.kappa, ".2f"),
                }
                for row in pairs
            ],
            hide_index=True,
            key="review_agreement_pairs",
        )
    else:
        st.caption("Reviewer-vs-reviewer agreement appears once two reviewers label a case.")
    st.caption(
        "Cohen's kappa: agreement beyond what chance alone would give (1 = perfect, 0 = chance "
        "level, below 0 = worse than chance); '–' when it is undefined (fewer than two cases, "
        "or a single class throughout). Unsure verdicts are left out."
    )
    st.button(
        "Show the disagreed cases",
        key="review_show_disagreed",
        icon=":material/filter_alt:",
        on_click=_show_disagreed,
        help="Sets the worklist filter to the cases some reviewer disagreed with.",
    )


def retrain_ui(run: dict[str, Any], store: ReviewStore, reviewer: str) -> int | None:
    """Researchers: queue a retraining run of ``run``'s recipe with the corrected labels.

    Uses every reviewer's current Disagree verdicts on the run's *train* and *val* cases
    (``core.reviews.queue_retraining``); test-split corrections are refused with a message.

    Returns:
        The queued job's id, or None (button not pressed, or nothing queued: a message says why).
    """
    pressed = st.button(
        "Queue a retraining run with the corrected labels",
        key="review_retrain",
        icon=":material/model_training:",
        help="Trains this model's recipe again, with the correct labels reviewers gave "
        "(Disagree verdicts) replacing the dataset's labels on the train and val splits. "
        "Corrections on the test split are never trained on: the test split measures the "
        "model. The new run records which review records it used.",
    )
    if not pressed:
        return None
    from core import jobs

    try:
        current = store.latest(run=run["name"])
        job_id, plan = queue_retraining(run.get("config") or {}, current, submitted_by=reviewer)
    except NothingToRetrainError as exc:
        st.warning(str(exc).replace("\n", "\n\n"), icon=":material/block:")
        return None
    except ReviewStoreError as exc:
        store_error_ui(exc, "reading the corrected labels")
        return None
    except jobs.InvalidParamsError as exc:
        st.error(
            "Nothing was queued: this model's recipe is not a valid training job any more "
            f"({exc}).\n\n1. Queue a run by hand on the **Retrain** page.",
            icon=":material/error:",
        )
        return None
    except jobs.StoreError as exc:  # busy, damaged or unreadable job database
        log.error("job database error while queueing a retraining run", exc_info=exc)
        st.error(
            f"Nothing was queued: the job database could not be written ({exc}).\n\n"
            "1. Try again in a moment (another job may be writing to it).\n"
            "2. If it keeps failing, open the **Retrain** page: it says what is wrong with "
            "the job database.",
            icon=":material/database:",
        )
        return None
    st.success(
        f"Queued training job #{job_id} with {plan.summary}. Follow it on the **Retrain** page.",
        icon=":material/model_training:",
    )
    return job_id
