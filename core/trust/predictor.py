"""``Predictor``: calibrated probabilities, uncertainty, an OOD guard and a refer flag for one
run or an ensemble of runs, from the values ``python -m core.trust`` fitted (``calibration.json``
and ``ood.npz`` in the run directory).

TensorFlow is imported here (the models), so ``core.registry.load_predictor`` imports this
module inside the function. This module never imports ``core.registry`` (that would be an
import cycle): the registry resolves folders, loads the models and JSON, and passes them in.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from core.trust import calibration, ood
from core.trust.foreign import conform

CALIBRATION_FILE = "calibration.json"
OOD_FILE = "ood.npz"
UNCERTAINTY_MEASURE = "1 - calibrated top-class probability"
_BATCH = 256


class TrustNotFittedError(RuntimeError):
    """The run has no fitted calibration/OOD values (``calibration.json``)."""


def _not_fitted(run_dir: Path) -> TrustNotFittedError:
    return TrustNotFittedError(
        f"{run_dir} has no {CALIBRATION_FILE}, so its probabilities are not calibrated and it "
        "has no out-of-distribution guard or refer threshold.\n"
        f"  1. Run `python -m core.trust {run_dir}` (a minute for a small model).\n"
        f"  2. Or restore {CALIBRATION_FILE} and {OOD_FILE} from git "
        f"(`git checkout -- {run_dir}`)."
    )


def tta_views(x: np.ndarray, augment: bool) -> list[np.ndarray]:
    """Test-time views limited to transforms the training augmentation applies (core.augment).

    2D: identity + horizontal flip; 3D: the 8 combinations of flips over D, H, W. A run trained
    without augmentation gets the identity only (it never saw flipped inputs).
    """
    if not augment:
        return [x]
    if x.ndim == 4:
        return [x, x[:, :, ::-1]]
    views = []
    for mask in range(8):
        v = x
        for axis in range(3):
            if mask >> axis & 1:
                v = np.flip(v, axis=axis + 1)
        views.append(np.ascontiguousarray(v))
    return views


class Member:
    """One trained model with a second output: its penultimate features (the input of
    ``logits``)."""

    def __init__(self, run_dir: str | os.PathLike, model: Any, config: dict[str, Any]) -> None:
        """Args: the run folder, its loaded Keras model and its ``config.json`` dict."""
        import tf_keras as keras

        self.run_dir = Path(run_dir)
        self.config = config
        self.model = model
        layer = model.get_layer("logits")
        self._feat = keras.Model(model.inputs, [layer.input, layer.output])
        self.input_shape = tuple(int(d) for d in model.input_shape[1:])
        spec = tf.TensorSpec((None, *self.input_shape), tf.float32)
        # one graph for every batch size: eager Keras calls cost ~10x more for one image
        self._call = tf.function(lambda x: self._feat(x, training=False), input_signature=[spec])

    @property
    def augment(self) -> bool:
        return bool(self.config.get("augment"))

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(features (N, D), logits (N, K))`` of model-ready ``x``."""
        feats, logits = [], []
        for i in range(0, len(x), _BATCH):
            f, z = self._call(tf.constant(x[i : i + _BATCH], tf.float32))
            feats.append(f.numpy())
            logits.append(z.numpy())
        return np.concatenate(feats), np.concatenate(logits)


def _log_mean_softmax(logit_list: list[np.ndarray]) -> np.ndarray:
    from scipy.special import log_softmax, logsumexp

    logp = np.stack([log_softmax(z.astype(np.float64), axis=1) for z in logit_list])
    return logsumexp(logp, axis=0) - np.log(len(logit_list))


class Predictor:
    """Calibrated prediction with uncertainty, an OOD guard and a refer flag.

    Inputs ``x`` are batches in ``core.data.load_split`` format (float in [0, 1],
    ``(N, *spatial, C)``); grey images are repeated to RGB and resized to the model's input
    (:func:`core.trust.foreign.conform`) so an upload of any MedMNIST-like image can be scored.

    Attributes:
        run_dir: the run (or ensemble) directory.
        members: the models (one for a single run).
        tta: whether test-time flips are averaged into the probabilities.
        trust: ``calibration.json`` (None before ``python -m core.trust`` ran).
        uncertainty_measure: what :meth:`uncertainty` returns (plain text).
    """

    uncertainty_measure = UNCERTAINTY_MEASURE

    def __init__(
        self,
        run_dir: str | os.PathLike,
        members: list[Member],
        tta: bool = False,
        trust: dict[str, Any] | None = None,
        ood_stats: dict[str, np.ndarray] | None = None,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.members = members
        self.tta = tta
        self.trust = trust
        self._stats = ood_stats or {}
        self.input_shape = members[0].input_shape

    # -- raw outputs ---------------------------------------------------------------------
    def raw(self, x: np.ndarray, tta: bool | None = None) -> dict[str, Any]:
        """One forward pass: ``{"z", "features", "logits"}``.

        ``z`` is the uncalibrated score (logits of a single model without TTA, else the log of
        the mean softmax over members and views); ``features``/``logits`` are per member on
        the untransformed input (the OOD detectors were fitted on those). ``tta`` overrides
        the predictor's setting (fitting scores foreign sets without test-time views).
        """
        tta = self.tta if tta is None else tta
        x = conform(x, self.input_shape)
        feats, logits, all_logits = [], [], []
        for m in self.members:
            views = tta_views(x, tta and m.augment)
            f, z = m.forward(np.concatenate(views) if len(views) > 1 else views[0])
            n = len(x)
            feats.append(f[:n])
            logits.append(z[:n])
            all_logits += [z[i * n : (i + 1) * n] for i in range(len(views))]
        single = len(all_logits) == 1
        z = all_logits[0].astype(np.float64) if single else _log_mean_softmax(all_logits)
        return {"z": z, "features": feats, "logits": logits, "input_stats": ood.input_statistics(x)}

    @property
    def temperature(self) -> float:
        return float(self.trust["temperature"]) if self.trust else 1.0

    @property
    def bias(self) -> np.ndarray | None:
        """Per-class offsets of bias-corrected scaling; None for plain temperature scaling
        (and for ``calibration.json`` files written before the offsets existed)."""
        bias = (self.trust or {}).get("bias")
        return None if bias is None else np.asarray(bias, dtype=np.float64)

    def calibrated_proba(self, z: np.ndarray) -> np.ndarray:
        """``softmax(z / T + b)`` with this run's fitted calibration (T = 1, b = 0 unfitted)."""
        return calibration.scaled_proba(z, self.temperature, self.bias)

    def _require_trust(self) -> dict[str, Any]:
        if not self.trust:
            raise _not_fitted(self.run_dir)
        return self.trust

    # -- public API ----------------------------------------------------------------------
    def assess(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """Everything for a batch in one forward pass.

        Returns:
            ``{"proba", "uncertainty", "disagreement", "ood_score", "is_ood", "refer"}``.

        Raises:
            TrustNotFittedError: no ``calibration.json`` (OOD and refer need it).
        """
        trust = self._require_trust()
        out = self.raw(x)
        proba = self.calibrated_proba(out["z"])
        unc = 1.0 - proba.max(axis=1)
        score = self._ood_from(out)
        flagged = score > trust["ood"]["threshold"]
        return {
            "proba": proba,
            "uncertainty": unc,
            "disagreement": self._disagreement(out),
            "ood_score": score,
            "is_ood": flagged,
            "refer": flagged | (unc > trust["refer"]["threshold"]),
        }

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """Calibrated class probabilities ``(N, K)`` (temperature-scaled, with per-class
        offsets when val chose them; ensemble mean).

        Before ``python -m core.trust`` ran on the run, T = 1 (raw softmax)."""
        return self.calibrated_proba(self.raw(x)["z"])

    def uncertainty(self, x: np.ndarray) -> np.ndarray:
        """``1 - calibrated top-class probability`` per sample (higher = less sure)."""
        return 1.0 - self.predict_proba(x).max(axis=1)

    def disagreement(self, x: np.ndarray) -> np.ndarray:
        """Ensemble members' disagreement: mean total-variation distance of each member's
        softmax from the ensemble mean (0 for a single model)."""
        return self._disagreement(self.raw(x))

    def ood_score(self, x: np.ndarray) -> np.ndarray:
        """Out-of-distribution score (higher = more foreign; 1 ≈ a member's own threshold).

        Raises:
            TrustNotFittedError: no fitted detector.
        """
        self._require_trust()
        return self._ood_from(self.raw(x))

    def is_ood(self, x: np.ndarray) -> np.ndarray:
        """True where the image does not look like the training data (threshold set on
        in-distribution validation images for ≤ 5 % false alarms with 90 % confidence,
        ``core.trust.ood.threshold_for``)."""
        return self.ood_score(x) > self._require_trust()["ood"]["threshold"]

    def refer(self, x: np.ndarray) -> np.ndarray:
        """True where the case should go to a specialist: foreign image, or uncertainty above
        the threshold chosen on val for the run's target accuracy on retained cases."""
        return self.assess(x)["refer"]

    # -- helpers -------------------------------------------------------------------------
    def _disagreement(self, out: dict[str, Any]) -> np.ndarray:
        from scipy.special import softmax

        probs = np.stack([softmax(z.astype(np.float64), axis=1) for z in out["logits"]])
        return 0.5 * np.abs(probs - probs.mean(axis=0)).sum(axis=2).mean(axis=0)

    def _ood_from(self, out: dict[str, Any]) -> np.ndarray:
        cfg = self._require_trust()["ood"]
        return detector_score(cfg["detector"], out, self._stats, cfg["norms"])


def _member_stats(stats: dict[str, np.ndarray], key: str) -> dict[str, np.ndarray] | None:
    if f"{key}_means" not in stats:
        return None
    return {k: stats[f"{key}_{k}"] for k in ("means", "scale", "precision")}


def component_score(
    component: str,
    out: dict[str, Any],
    stats: dict[str, np.ndarray],
    norm: list[list[float]] | None = None,
) -> list[np.ndarray] | np.ndarray:
    """One OOD component's score from a forward pass (:meth:`Predictor.raw`).

    Args:
        component: one of ``core.trust.ood.COMPONENTS``.
        out: the forward pass.
        stats: ``ood.npz`` contents (``{i}_means``/``_scale``/``_precision`` per member,
            and the same three for ``input``).
        norm: ``[[val median, val threshold], ...]`` per member (one entry for ``input``).

    Returns:
        Without ``norm``: the raw score per member (a list). With it: each member's score
        mapped so its val median is 0 and its own threshold 1, averaged over members.
    """
    if component == "input":
        fitted = _member_stats(stats, "input")
        feats = out["input_stats"]
        if fitted is not None:
            # an ood.npz fitted before later statistics were appended uses the leading ones
            feats = feats[:, : np.asarray(fitted["scale"]).shape[-1]]
        raw = [ood.score("input", feats, None, fitted)]
    else:
        raw = [
            ood.score(component, f, z, _member_stats(stats, str(i)))
            for i, (f, z) in enumerate(zip(out["features"], out["logits"], strict=True))
        ]
    if norm is None:
        return raw
    scaled = [(s - med) / max(thr - med, 1e-12) for s, (med, thr) in zip(raw, norm, strict=True)]
    return np.mean(scaled, axis=0)


def detector_score(
    detector: str, out: dict[str, Any], stats: dict[str, np.ndarray], norms: dict[str, Any]
) -> np.ndarray:
    """A detector's score: the largest of its normalised components (``"a+b"``)."""
    parts = detector.split("+")
    return np.max([component_score(c, out, stats, norms[c]) for c in parts], axis=0)


def read_stats(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The fitted OOD Gaussians of ``ood.npz`` (empty when the file is absent)."""
    path = Path(path)
    if not path.is_file():
        return {}
    with np.load(path) as npz:
        return {k: npz[k] for k in npz.files}
