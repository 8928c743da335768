"""check_params: every TrainConfig field x {wrong type, out of range, missing} (issue 17 #5-7).

The table has one row per field; a test checks that no field is left out, so a field added to
TrainConfig later cannot skip type validation.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from core import config, jobs
from core.jobs import params as job_params

REPO = Path(__file__).resolve().parents[1]
_DEFAULTS = config.TrainConfig("retinamnist", "cnn2d").to_dict()


def base(model: str = "cnn2d") -> dict:
    return {"dataset": "retinamnist", "model": model, "epochs": 1}


# field -> (base model, wrong-type values, out-of-range values, missing: "error" or default)
TABLE: dict[str, tuple[str, list, list, object]] = {
    "dataset": ("cnn2d", [5, ["retinamnist"]], ["imagenet", "RetinaMNIST"], "error"),
    "model": ("cnn2d", [2, ["cnn2d"]], ["transformer", "cnn3d"], "error"),
    "size": ("cnn2d", ["28", True, 28.5, float("nan")], [32, 0, -28], 28),
    "epochs": ("cnn2d", ["5", True, 2.5, float("inf"), None], [0, 301, -1], 50),
    "batch_size": ("cnn2d", ["16", False, 16.5], [0, 1025], 32),
    "learning_rate": ("cnn2d", ["0.001", True, float("nan"), None], [0.0, 1e-7, 1.5], 1e-3),
    "augment": ("cnn2d", ["false", "true", 0, 1, None], [], False),
    "fine_tune_blocks": ("vgg16", ["1", True, 1.5], [6, -1], 0),
    "seed": ("cnn2d", ["0", True, 0.5], [-1, 2**31], 0),
    "patience": ("cnn2d", ["10", True, 2.5], [0, 301], 10),
    "min_epochs": ("cnn2d", ["0", True, 1.5], [-1, 301], 0),
    "lr_schedule": ("cnn2d", [1, True, ["cosine"]], ["linear", "Cosine"], "plateau"),
    "class_weights": ("cnn2d", ["false", "true", "no", 0, 1, None], [], False),
    "input_size": ("vgg16", ["64", True, 64.5], [16, 225], None),
    "label_smoothing": ("cnn2d", ["0.1", True, float("nan")], [1.0, -0.1, 2], 0.0),
    "weight_ema": ("cnn2d", ["0.99", True, float("inf")], [1.0, -0.5], 0.0),
    "name": ("cnn2d", [123, ["run"], True], ["../evil", ".hidden", "a/b", ""], None),
    "label_overrides": (
        "cnn2d",
        ["train:1=2", [{"train": {}}], True],
        [{"test": {"0": 1}}, {"train": {"1": 5}}, {"train": {"-1": 0}}, {"review_ids": ["7"]}],
        None,
    ),
}


def test_the_table_covers_every_trainconfig_field():
    assert set(TABLE) == job_params.field_names() == set(job_params.FIELDS)


def _rows(column: int):
    for name, row in TABLE.items():
        for value in row[column]:
            yield pytest.param(name, row[0], value, id=f"{name}={value!r}")


def _assert_refused(params: dict, name: str, value) -> None:
    checked = jobs.check_params(params)
    assert not checked.ok and checked.config is None, (params, checked)
    assert any(name in e and repr(value) in e for e in checked.errors), checked.errors


@pytest.mark.parametrize(("name", "model", "value"), list(_rows(1)))
def test_wrong_type_is_refused_naming_field_and_value(name, model, value, tmp_path):
    params = {**base(model), name: value}
    _assert_refused(params, name, value)


@pytest.mark.parametrize(("name", "model", "value"), list(_rows(2)))
def test_out_of_range_is_refused_naming_field_and_value(name, model, value, tmp_path):
    params = {**base(model), name: value}
    _assert_refused(params, name, value)


@pytest.mark.parametrize("name", list(TABLE))
def test_missing_field(name):
    model, _, _, missing = TABLE[name]
    params = {**base(model)}
    params.pop(name, None)
    checked = jobs.check_params(params)
    if missing == "error":
        assert not checked.ok
        assert any(name in e and "missing" in e for e in checked.errors), checked.errors
    else:
        assert checked.ok, checked.errors
        assert missing == _DEFAULTS[name]  # the table agrees with TrainConfig's defaults
        assert getattr(checked.config, name) == missing


def test_reported_row_5_size_as_whole_float_is_normalised_not_a_crash(tmp_path, monkeypatch):
    # was: KeyError: 'url_64.0' (64.0 passed the range test, then info.url() failed)
    monkeypatch.setenv("MEDMNIST_ROOT", str(tmp_path / "empty"))
    checked = jobs.check_params({"dataset": "breastmnist", "model": "cnn2d", "size": 64.0})
    assert checked.ok, checked.errors
    assert checked.config.size == 64 and type(checked.config.size) is int
    assert any("breastmnist_64.npz" in w for w in checked.warnings), checked.warnings


def test_whole_floats_become_ints_everywhere():
    checked = jobs.check_params({**base("vgg16"), "epochs": 5.0, "seed": 3.0, "input_size": 64.0})
    assert checked.ok, checked.errors
    for name, value in (("epochs", 5), ("seed", 3), ("input_size", 64)):
        assert getattr(checked.config, name) == value
        assert type(getattr(checked.config, name)) is int


def test_reported_row_6_class_weights_text_false_is_refused():
    # was: accepted, and bool("false") is True: class weighting silently turned ON
    checked = jobs.check_params({**base(), "class_weights": "false"})
    assert not checked.ok
    assert any("class_weights" in e and "'false'" in e for e in checked.errors)
    assert jobs.check_params({**base(), "class_weights": True}).config.class_weights is True


def test_every_problem_is_reported_at_once():
    checked = jobs.check_params(
        {**base(), "size": "28", "augment": "no", "epochs": 0, "lr_schedule": "x"}
    )
    text = " | ".join(checked.errors)
    assert len(checked.errors) == 4, checked.errors
    assert all(name in text for name in ("size", "augment", "epochs", "lr_schedule"))


def test_input_size_only_for_vgg16():
    checked = jobs.check_params({**base(), "input_size": 64})
    assert not checked.ok and any("input_size" in e and "vgg16" in e for e in checked.errors)


# ---------------------------------------------------------------------------------------------
# 7: a run name that exists is refused at submit time (the job would train, then fail at save)
# ---------------------------------------------------------------------------------------------


def test_reported_row_7_existing_name_in_the_shipped_registry(monkeypatch):
    assert (REPO / "trained_models" / "cnn2d_aug").is_dir()
    monkeypatch.delenv("TRAINED_MODELS_DIR", raising=False)
    checked = jobs.check_params({"dataset": "retinamnist", "model": "cnn2d", "name": "cnn2d_aug"})
    assert not checked.ok
    (message,) = checked.errors
    assert "'cnn2d_aug'" in message and "already" in message and "choose another name" in message
    assert str(REPO / "trained_models") in message


def test_existing_name_in_a_tmp_registry(tmp_path, monkeypatch):
    registry = tmp_path / "trained_models"
    (registry / "mine").mkdir(parents=True)
    monkeypatch.setenv("TRAINED_MODELS_DIR", str(registry))
    assert not jobs.check_params({**base(), "name": "mine"}).ok
    assert jobs.check_params({**base(), "name": "mine-2"}).ok
    # an explicit registry wins over the environment
    assert jobs.check_params({**base(), "name": "mine"}, registry_root=tmp_path / "other").ok
    with pytest.raises(jobs.InvalidParamsError, match="'mine'"):
        jobs.submit_job({**base(), "name": "mine"}, store=jobs.JobStore(tmp_path / "q.sqlite"))
    assert jobs.JobStore(tmp_path / "q.sqlite").list() == []
