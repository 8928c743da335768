"""Retraining with reviewers' corrected labels (core.reviews.retrain): which verdicts are used,
test-split corrections refused, the job's parameters checked, and a real training job on
RetinaMNIST that trains on the corrected train/val labels and records the review rows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import real_root, require_real_file

from core import config, data, info, registry
from core.jobs import InvalidParamsError, JobStore, check_params, run_job
from core.reviews import (
    NothingToRetrainError,
    ReviewStore,
    Verdict,
    queue_retraining,
    retraining_plan,
)

FLAG = "retinamnist"
RUN_CONFIG = {
    "dataset": FLAG,
    "model": "cnn2d",
    "size": 28,
    "epochs": 1,
    "batch_size": 64,
    "seed": 5,
    "augment": False,
    "name": "reviewed-run",
    "task": info.task(FLAG),  # run metadata: not a TrainConfig field, left out of the job
    "labels": info.label_names(FLAG),
}


@pytest.fixture()
def store(tmp_path) -> ReviewStore:
    return ReviewStore(tmp_path / "reviews.sqlite")


def add(store: ReviewStore, reviewer: str, split: str, index: int, verdict: str, label=None):
    return store.add(
        Verdict(
            reviewer=reviewer,
            run="reviewed-run",
            dataset=FLAG,
            split=split,
            sample_index=index,
            predicted=0,
            probability=0.6,
            verdict=verdict,
            corrected_label=label,
        )
    )


def test_plan_uses_train_and_val_corrections_only(store):
    used = [add(store, "Dr A", "train", 3, "disagree", 4)]
    used.append(add(store, "Dr A", "val", 7, "disagree", 2))
    used.append(add(store, "Dr B", "train", 3, "disagree", 4))  # a second reviewer agrees
    add(store, "Dr A", "test", 1, "disagree", 3)  # never trained on
    add(store, "Dr A", "train", 9, "disagree", 1)
    add(store, "Dr B", "train", 9, "disagree", 2)  # reviewers differ: left out
    add(store, "Dr A", "train", 11, "disagree", 1)
    add(store, "Dr A", "train", 11, "agree")  # the latest verdict is Agree: no correction
    add(store, "Dr A", "train", 12, "unsure")

    plan = retraining_plan(RUN_CONFIG, store.latest(run="reviewed-run"))
    overrides = plan.params["label_overrides"]
    assert overrides == {"train": {"3": 4}, "val": {"7": 2}, "review_ids": sorted(used)}
    assert "test" not in overrides
    assert plan.review_ids == tuple(sorted(used))
    assert plan.counts == {"train": 1, "val": 1}
    assert plan.refused_test == 1 and plan.conflicts == ("train:9",)
    assert "1 test-split corrections left out" in plan.summary
    # the job is the reviewed run's recipe under a new name
    assert {k: plan.params[k] for k in ("dataset", "model", "epochs", "seed")} == {
        "dataset": FLAG,
        "model": "cnn2d",
        "epochs": 1,
        "seed": 5,
    }
    assert "name" not in plan.params and "task" not in plan.params
    checked = check_params(plan.params)
    assert checked.ok, checked.errors
    assert checked.config.label_overrides == overrides


def test_only_test_corrections_are_refused(store):
    add(store, "Dr A", "test", 1, "disagree", 3)
    with pytest.raises(NothingToRetrainError, match="all on the test split") as err:
        retraining_plan(RUN_CONFIG, store.latest(run="reviewed-run"))
    assert "1. Pick the train or val split" in str(err.value)
    with pytest.raises(NothingToRetrainError, match="no reviewer has disagreed"):
        retraining_plan(RUN_CONFIG, {})


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"test": {"1": 2}}, "never trained on"),
        ({"train": {"1": 5}}, "expected a class in 0..4"),
        ({"train": {"x": 1}}, "is not a number"),
        ({"train": {"1": True}}, "expected a class"),
        ({"review_ids": [0]}, "positive integers"),
        ({"holdout": {}}, "unknown keys"),
        ("train:1=2", "must be a mapping"),
    ],
)
def test_job_parameters_refuse_bad_overrides(overrides, message):
    checked = check_params({"dataset": FLAG, "model": "cnn2d", "label_overrides": overrides})
    assert not checked.ok and any(message in e for e in checked.errors), checked.errors
    with pytest.raises(ValueError, match=message):
        config.check_label_overrides(overrides, FLAG)


def test_multilabel_datasets_refuse_overrides():
    with pytest.raises(ValueError, match="single-label"):
        config.check_label_overrides({"train": {"0": 1}}, "chestmnist")


def test_queued_job_trains_on_the_corrected_labels_and_records_the_rows(
    store, tmp_path, monkeypatch
):
    require_real_file(FLAG)
    monkeypatch.setenv("MEDMNIST_ROOT", str(real_root()))
    monkeypatch.setenv("TRAINED_MODELS_DIR", str(tmp_path / "registry"))
    from core import training

    _, y_train = data.load_split(FLAG, "train")
    _, y_val = data.load_split(FLAG, "val")
    _, y_test = data.load_split(FLAG, "test")
    # corrections that differ from the dataset's labels, so a trainer ignoring them is caught
    wrong = {i: int((y_train[i, 0] + 1) % 5) for i in (0, 17, 500)}
    ids = [add(store, "Dr A", "train", i, "disagree", label) for i, label in wrong.items()]
    ids.append(add(store, "Dr A", "val", 4, "disagree", int((y_val[4, 0] + 2) % 5)))
    add(store, "Dr A", "test", 0, "disagree", int((y_test[0, 0] + 1) % 5))

    seen: dict[str, np.ndarray] = {}
    make_dataset = training.data.make_dataset

    def spy_dataset(x, y, *args, **kwargs):
        seen["train"] = np.array(y)
        return make_dataset(x, y, *args, **kwargs)

    monitor = training.ValidationMonitor

    def spy_monitor(x_val, y_val_seen, *args, **kwargs):
        seen["val"] = np.array(y_val_seen)
        return monitor(x_val, y_val_seen, *args, **kwargs)

    evaluate = training.evaluation.evaluate
    test_labels = []

    def spy_evaluate(y, scores, task):
        if len(y) == len(y_test):
            test_labels.append(np.array(y))
        return evaluate(y, scores, task)

    monkeypatch.setattr(training.data, "make_dataset", spy_dataset)
    monkeypatch.setattr(training, "ValidationMonitor", spy_monitor)
    monkeypatch.setattr(training.evaluation, "evaluate", spy_evaluate)

    jobs_store = JobStore(tmp_path / "jobs.sqlite")
    job_id, plan = queue_retraining(
        RUN_CONFIG, store.latest(run="reviewed-run"), "Dr A", jobs_store=jobs_store
    )
    assert plan.refused_test == 1
    assert jobs_store.get(job_id).params["label_overrides"]["review_ids"] == sorted(ids)
    assert jobs_store.claim_next("test:1").id == job_id
    assert run_job(job_id, jobs_store) == 0, jobs_store.get(job_id).error

    expected_train = y_train.copy()
    for i, label in wrong.items():
        expected_train[i, 0] = label
    np.testing.assert_array_equal(seen["train"], expected_train)
    expected_val = y_val.copy()
    expected_val[4, 0] = (y_val[4, 0] + 2) % 5
    np.testing.assert_array_equal(seen["val"], expected_val)
    for labels in test_labels:  # the test split is scored on the dataset's own labels
        np.testing.assert_array_equal(labels, y_test)
    assert test_labels

    run_dir = Path(jobs_store.get(job_id).run_dir)
    saved = registry.read_json(run_dir, "config.json")["label_overrides"]
    assert saved["review_ids"] == sorted(ids)
    assert saved["train"] == {str(i): label for i, label in wrong.items()}
    assert "test" not in saved


def test_training_refuses_an_index_outside_the_split(monkeypatch):
    require_real_file(FLAG)
    monkeypatch.setenv("MEDMNIST_ROOT", str(real_root()))
    from core import training

    cfg = config.TrainConfig(dataset=FLAG, model="cnn2d", label_overrides={"val": {"120": 1}})
    with pytest.raises(ValueError, match="val split has 120 samples"):
        training.load_data(cfg)


def test_submit_refuses_test_overrides_directly(tmp_path):
    with pytest.raises(InvalidParamsError, match="never trained on"):
        from core.jobs import submit_job

        submit_job(
            {"dataset": FLAG, "model": "cnn2d", "label_overrides": {"test": {"0": 1}}},
            store=JobStore(tmp_path / "jobs.sqlite"),
        )
