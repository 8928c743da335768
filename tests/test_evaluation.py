"""core.evaluation: official MedMNIST metrics, the detailed report, and predict()."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from core import evaluation, info

ML = "multi-label, binary-class"


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _case(task: str, n: int = 60, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Fixed labels and informative-but-imperfect scores for a task."""
    rng = np.random.default_rng(seed)
    if task == ML:
        y = (rng.random((n, 14)) < 0.3).astype(np.int64)
        y[0], y[1] = 1, 0
        score = 1 / (1 + np.exp(-(2.0 * (y - 0.5) + rng.normal(0, 1.2, y.shape))))
        return y, score
    k = 2 if task == "binary-class" else 5
    y = (np.arange(n) % k).reshape(n, 1)
    z = rng.normal(0, 1.0, (n, k))
    z[np.arange(n), y.ravel()] += 1.2
    return y, _softmax(z)


def _by_hand(y: np.ndarray, score: np.ndarray, task: str) -> dict[str, float]:
    """Independent computation of the documented medmnist semantics."""
    if task == ML:
        auc = np.mean([roc_auc_score(y[:, i], score[:, i]) for i in range(y.shape[1])])
        acc = np.mean((score > 0.5) == y)
    elif task == "binary-class":
        auc = roc_auc_score(y.ravel(), score[:, -1])
        acc = np.mean((score[:, -1] > 0.5) == y.ravel())
    else:
        yt = y.ravel()
        auc = np.mean([roc_auc_score(yt == i, score[:, i]) for i in range(score.shape[1])])
        acc = np.mean(score.argmax(axis=1) == yt)
    return {"auc": float(auc), "acc": float(acc)}


@pytest.mark.parametrize("task", ["binary-class", "multi-class", "ordinal-regression", ML])
def test_evaluate_equals_medmnist_and_hand_computation(task):
    y, score = _case(task)
    got = evaluation.evaluate(y, score, task)
    get_auc, get_acc = info.evaluator_functions()
    assert got == pytest.approx({"auc": get_auc(y, score, task), "acc": get_acc(y, score, task)})
    assert got == pytest.approx(_by_hand(y, score, task))
    assert 0.5 < got["auc"] < 1.0  # the fixture is informative but imperfect
    assert isinstance(got["auc"], float) and isinstance(got["acc"], float)


def test_binary_uses_last_column_and_known_values():
    # the textbook example: one of four positive/negative pairs is mis-ordered -> AUC 0.75
    y = np.array([[0], [0], [1], [1]])
    p_pos = np.array([0.1, 0.4, 0.35, 0.8])
    score = np.stack([1 - p_pos, p_pos], axis=1)
    assert evaluation.evaluate(y, score, "binary-class") == pytest.approx(
        {"auc": 0.75, "acc": 0.75}
    )
    # flipping the columns must change the result: column -1 is P(positive)
    assert evaluation.evaluate(y, score[:, ::-1], "binary-class")["auc"] == pytest.approx(0.25)


def test_multiclass_known_values():
    y = np.array([0, 1, 2, 2])
    score = np.array([[0.7, 0.2, 0.1], [0.2, 0.5, 0.3], [0.1, 0.2, 0.7], [0.5, 0.25, 0.25]])
    got = evaluation.evaluate(y, score, "multi-class")
    assert got["acc"] == pytest.approx(0.75)
    # one-vs-rest: classes 0 and 1 rank perfectly; class 2 mis-orders 0.25 < 0.3 in 1 of 4 pairs
    assert got["auc"] == pytest.approx((1.0 + 1.0 + 0.75) / 3)


@pytest.mark.parametrize("task", ["binary-class", "multi-class", "ordinal-regression", ML])
def test_report_structure(task):
    y, score = _case(task)
    n_out = score.shape[1]
    labels = [f"c{i}" for i in range(n_out)]
    rep = evaluation.report(y, score, task, labels)
    assert rep["task"] == task and rep["n"] == len(y)
    assert rep["auc"] == pytest.approx(evaluation.evaluate(y, score, task)["auc"])
    expected_targets = 1 if task == "binary-class" else n_out
    assert len(rep["per_class"]) == expected_targets == len(rep["roc"])
    for entry, curve in zip(rep["per_class"], rep["roc"], strict=True):
        assert set(entry) >= {"label", "support", "auc", "precision", "recall"}
        assert 0 <= entry["precision"] <= 1 and 0 <= entry["recall"] <= 1
        assert len(curve["fpr"]) == len(curve["tpr"]) <= 101
        assert curve["fpr"][0] == 0 and curve["fpr"][-1] == 1 and curve["tpr"][-1] == 1
        assert np.all(np.diff(curve["fpr"]) >= 0)
    if task == ML:
        assert "confusion" not in rep
        assert [e["label"] for e in rep["per_class"]] == labels
        assert rep["per_class"][3]["support"] == int(y[:, 3].sum())
        assert rep["per_class"][3]["auc"] == pytest.approx(roc_auc_score(y[:, 3], score[:, 3]))
        return
    k = max(2, n_out)
    confusion = np.array(rep["confusion"])
    assert confusion.shape == (k, k) and confusion.sum() == len(y)
    assert confusion.sum(axis=1).tolist() == np.bincount(y.ravel(), minlength=k).tolist()
    assert np.trace(confusion) / len(y) == pytest.approx(rep["acc"])
    if task == "binary-class":
        assert rep["per_class"][0]["label"] == "c1"  # the positive class
        pos = rep["per_class"][0]
        assert pos["recall"] == pytest.approx(confusion[1, 1] / confusion[1].sum())
    else:
        recalls = [e["recall"] for e in rep["per_class"]]
        np.testing.assert_allclose(recalls, np.diag(confusion) / confusion.sum(axis=1))


def test_report_without_labels_and_roc_points():
    y, score = _case("multi-class", n=400)
    rep = evaluation.report(y, score, "multi-class", roc_points=11)
    assert [e["label"] for e in rep["per_class"]] == ["0", "1", "2", "3", "4"]
    assert all(len(c["fpr"]) <= 11 for c in rep["roc"])


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_scores_refused(bad):
    y, score = _case("multi-class")
    score[3, 1] = bad
    with pytest.raises(ValueError, match="NaN or inf"):
        evaluation.evaluate(y, score, "multi-class")
    with pytest.raises(ValueError, match="NaN or inf"):
        evaluation.report(y, score, "multi-class")


def test_unknown_task_and_length_mismatch():
    y, score = _case("binary-class")
    with pytest.raises(ValueError, match="unknown task 'regression'"):
        evaluation.evaluate(y, score, "regression")
    with pytest.raises(ValueError, match="60 labels but 59 score rows"):
        evaluation.evaluate(y, score[:-1], "binary-class")


def test_predicted_classes():
    score = np.array([[0.2, 0.8], [0.9, 0.1]])
    assert evaluation.predicted_classes(score, "binary-class").tolist() == [1, 0]
    assert evaluation.predicted_classes(score, ML).tolist() == [[0, 1], [1, 0]]


def test_predict_keras_and_runner():
    import tf_keras as keras

    inp = keras.Input((3,))
    model = keras.Model(inp, keras.layers.Dense(2, activation="softmax")(inp))
    x = np.random.default_rng(0).random((5, 3), dtype=np.float32)
    p = evaluation.predict(model, x, batch_size=2)
    assert p.dtype == np.float64 and p.shape == (5, 2)
    np.testing.assert_allclose(p, model(x).numpy(), rtol=1e-6)

    class Runner:  # a TFLite runner only needs predict(x)
        def predict(self, x):
            return np.full((len(x), 2), 0.5, np.float32)

    assert evaluation.predict(Runner(), x).dtype == np.float64
