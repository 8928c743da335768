"""The Retrain form is drawn from one table, ``core.jobs.form.FORM_FIELDS`` (issue 10).

A new ``TrainConfig`` field reaches the form by one entry there, or by one line in
``NOT_IN_FORM`` saying why it is left out; the help texts quote the limits ``check_params``
enforces, so they cannot drift apart.
"""

from __future__ import annotations

import dataclasses

from test_retrain_page import env, fill_form, local, run_page  # noqa: F401 - fixtures

from core import config
from core.jobs import form
from core.jobs.params import UI_LIMITS


def test_every_trainconfig_field_is_in_the_form_or_says_why_not():
    in_form = [f.name for f in form.FORM_FIELDS]
    assert len(in_form) == len(set(in_form)), "a field is drawn twice"
    fields = {f.name for f in dataclasses.fields(config.TrainConfig)}
    assert set(in_form).isdisjoint(form.NOT_IN_FORM)
    assert set(in_form) | set(form.NOT_IN_FORM) == fields
    assert all(reason.strip() for reason in form.NOT_IN_FORM.values())


def test_help_texts_quote_the_limits_that_are_checked():
    for f in form.FORM_FIELDS:
        if f.name in UI_LIMITS and f.name != "learning_rate":
            hi = int(UI_LIMITS[f.name][1])
            assert f"{hi:,}" in f.help, (f.name, f.help)
    lr = next(f for f in form.FORM_FIELDS if f.name == "learning_rate")
    lo, hi = UI_LIMITS["learning_rate"]
    assert f"{lo:g} to {hi:g}" in lr.help


def test_a_field_added_to_the_table_appears_in_the_form_and_the_job(env, local, monkeypatch):  # noqa: F811
    """Adding ``patience`` to the table alone puts it on the page and into the queued job."""
    extra = form.FormField("patience", "Patience", "int", 10, "epochs", "retrain_patience")
    monkeypatch.setattr(form, "FORM_FIELDS", (*form.FORM_FIELDS, extra))
    at = run_page()
    assert at.number_input(key="retrain_patience").value == 10
    at.number_input(key="retrain_patience").set_value(7)
    at = fill_form(at)
    assert not at.exception and not at.sidebar.error
    (job,) = env.list()
    assert job.params["patience"] == 7
