"""Official MedMNIST metrics (medmnist's own getAUC/getACC) plus per-class detail for the app."""

from __future__ import annotations

import threading
import weakref
from typing import Any

import numpy as np

from core import info
from core.info import MULTI_LABEL, TASKS


def _check(y_true: np.ndarray, y_score: np.ndarray, task: str) -> tuple[np.ndarray, np.ndarray]:
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; expected one of {TASKS}")
    y_true = np.asarray(y_true)
    y_score = np.asarray(y_score, dtype=np.float64)
    if len(y_true) != len(y_score):
        raise ValueError(f"{len(y_true)} labels but {len(y_score)} score rows")
    if not np.all(np.isfinite(y_score)):
        raise ValueError("scores contain NaN or inf; the model diverged or the input was invalid")
    return y_true, y_score


def evaluate(y_true: np.ndarray, y_score: np.ndarray, task: str) -> dict[str, float]:
    """Test AUC and ACC exactly as medmnist's evaluator computes them.

    Args:
        y_true: labels ``(N, L)`` or ``(N,)``.
        y_score: probabilities ``(N, classes)``; for binary tasks column -1 is P(positive).
        task: ``INFO[flag]["task"]``.
    """
    y_true, y_score = _check(y_true, y_score, task)
    get_auc, get_acc = info.evaluator_functions()
    return {
        "auc": float(get_auc(y_true, y_score, task)),
        "acc": float(get_acc(y_true, y_score, task)),
    }


def predicted_classes(y_score: np.ndarray, task: str) -> np.ndarray:
    """Class per sample (argmax), or the 0/1 label matrix at 0.5 for multi-label tasks."""
    y_score = np.asarray(y_score)
    if task == MULTI_LABEL:
        return (y_score > 0.5).astype(np.int64)
    return np.argmax(y_score, axis=-1)


def report(
    y_true: np.ndarray,
    y_score: np.ndarray,
    task: str,
    labels: list[str] | None = None,
    roc_points: int = 101,
) -> dict[str, Any]:
    """Official AUC/ACC plus per-class AUC/precision/recall, ROC points and the confusion matrix.

    ROC curves are one-vs-rest per class (per label for multi-label), resampled to at most
    ``roc_points`` points so the JSON stays small.
    """
    from sklearn.metrics import confusion_matrix, roc_auc_score, roc_curve

    y_true, y_score = _check(y_true, y_score, task)
    out: dict[str, Any] = {"task": task, **evaluate(y_true, y_score, task), "n": int(len(y_true))}
    n_out = y_score.shape[1]
    labels = labels or [str(i) for i in range(n_out)]
    per_class, roc = [], []
    if task == MULTI_LABEL:
        targets = [(labels[i], y_true[:, i], y_score[:, i]) for i in range(n_out)]
    elif task == "binary-class":
        yt = y_true.ravel()
        targets = [(labels[-1] if len(labels) > 1 else "1", yt == 1, y_score[:, -1])]
    else:
        yt = y_true.ravel()
        targets = [(labels[i], yt == i, y_score[:, i]) for i in range(n_out)]
    pred = predicted_classes(y_score, task)
    for i, (name, truth, score) in enumerate(targets):
        truth = np.asarray(truth).astype(int)
        entry: dict[str, Any] = {"label": name, "support": int(truth.sum())}
        if 0 < truth.sum() < len(truth):
            entry["auc"] = float(roc_auc_score(truth, score))
            fpr, tpr, _ = roc_curve(truth, score)
            idx = np.unique(np.linspace(0, len(fpr) - 1, min(roc_points, len(fpr))).astype(int))
            roc.append(
                {
                    "label": name,
                    "fpr": fpr[idx].round(4).tolist(),
                    "tpr": tpr[idx].round(4).tolist(),
                    "auc": entry["auc"],
                }
            )
        if task == MULTI_LABEL:
            hit = pred[:, i].astype(int)
        elif task == "binary-class":
            hit = (y_score[:, -1] > 0.5).astype(int)
        else:
            hit = (pred == i).astype(int)
        tp = int((hit & truth).sum())
        entry["precision"] = float(tp / hit.sum()) if hit.sum() else 0.0
        entry["recall"] = float(tp / truth.sum()) if truth.sum() else 0.0
        per_class.append(entry)
    out["per_class"] = per_class
    out["roc"] = roc
    if task != MULTI_LABEL:
        yt = y_true.ravel()
        pred_cls = (y_score[:, -1] > 0.5).astype(int) if task == "binary-class" else pred
        classes = list(range(max(2, n_out)))
        out["confusion"] = confusion_matrix(yt, pred_cls, labels=classes).tolist()
        out["labels"] = labels
    return out


# model -> its compiled forward pass. Weak keys, and the function reaches its model only through
# a weak reference, so an evicted model (the app caches a few) is freed with its function.
_PREDICT_FNS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_PREDICT_LOCK = threading.Lock()


def _compiled_forward(model: Any) -> Any:
    """``model(x, training=False)`` as one concrete ``tf.function`` per model (built once).

    ``keras.Model.predict`` builds a data adapter and a new predict function on every call:
    ~40 ms of CPU and 30-70 kB of memory that is never given back (measured with tf-keras
    2.21; a server predicting once per page grew without bound). A concrete function with a
    fixed input signature (any batch size) is traced once and then costs ~2 ms per call.
    """
    import tensorflow as tf

    with _PREDICT_LOCK:
        fn = _PREDICT_FNS.get(model)
        if fn is None:
            ref = weakref.ref(model)

            def forward(batch: tf.Tensor) -> tf.Tensor:
                return ref()(batch, training=False)

            spec = tf.TensorSpec((None, *model.input_shape[1:]), tf.float32)
            fn = tf.function(forward, input_signature=[spec]).get_concrete_function()
            _PREDICT_FNS[model] = fn
        return fn


def predict(model: Any, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Probabilities of a Keras model, or of a TFLite runner's ``predict(x)``, as float64.

    Keras models run through one compiled forward pass per model (see ``_compiled_forward``),
    in batches of ``batch_size``: the same outputs as ``model.predict`` without its per-call
    cost. Models built under a distribution strategy (training) keep ``model.predict``, which
    knows how to run on the strategy's replicas.

    Args:
        model: A tf-keras model, or any object with ``predict(x) -> scores``.
        x: Batch of model inputs (batch axis first).
        batch_size: Samples per forward pass (Keras models only).

    Returns:
        Scores ``(N, classes)`` as float64.
    """
    import tf_keras as keras

    if not isinstance(model, keras.Model):
        return np.asarray(model.predict(x), dtype=np.float64)
    if getattr(model, "_distribution_strategy", None) is not None:
        return np.asarray(model.predict(x, batch_size=batch_size, verbose=0), dtype=np.float64)
    import tensorflow as tf

    arr = np.asarray(x, dtype=np.float32)
    if len(arr) == 0:
        return np.zeros((0, *model.output_shape[1:]), dtype=np.float64)
    fn = _compiled_forward(model)
    step = max(1, int(batch_size))
    out = [fn(tf.constant(arr[i : i + step])).numpy() for i in range(0, len(arr), step)]
    return np.concatenate(out).astype(np.float64)
