"""Fit and measure a run's (or ensemble's) trust values; write ``calibration.json`` + ``ood.npz``.

Everything is chosen on the validation split (temperature, refer threshold, OOD detector and
threshold, ensemble members, TTA) and then measured once on the test split.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from core import data, evaluation, registry
from core.trust import calibration, ensemble, foreign, ood, selective
from core.trust.predictor import (
    CALIBRATION_FILE,
    OOD_FILE,
    component_score,
    detector_score,
)

TARGET_ACCURACY = selective.TARGET_ACCURACY
DEFAULT_TARGET = selective.DEFAULT_TARGET


def _labels(y: np.ndarray) -> np.ndarray:
    return np.asarray(y).reshape(-1).astype(int)


def _ood_section(
    stats: dict[str, np.ndarray],
    outs: dict[str, dict[str, Any]],
    foreign_val: dict[str, dict[str, Any]],
    foreign_test: dict[str, dict[str, Any]],
) -> dict[str, Any]:
    """Compare the detectors on val, choose one, and measure every one on test."""
    norms = {}
    for comp in ood.COMPONENTS:
        raw = component_score(comp, outs["val"], stats)
        norms[comp] = [[float(np.median(s)), ood.threshold_for(s)] for s in raw]
    val_in = {d: detector_score(d, outs["val"], stats, norms) for d in ood.DETECTORS}
    val_for = {
        d: {k: detector_score(d, o, stats, norms) for k, o in foreign_val.items()}
        for d in ood.DETECTORS
    }
    choice = ood.choose_detector(val_in, val_for)
    test = {}
    for det in ood.DETECTORS:
        thr = choice["table"][det]["threshold"]
        s_in = detector_score(det, outs["test"], stats, norms)
        sets = {}
        for name, o in foreign_test.items():
            s = detector_score(det, o, stats, norms)
            sets[name] = {"flagged": ood.flag_rate(s, thr), "auroc": ood.auroc(s_in, s)}
        test[det] = {"in_distribution_flagged": ood.flag_rate(s_in, thr), "foreign": sets}
    det = choice["detector"]
    return {
        "detector": det,
        "threshold": choice["table"][det]["threshold"],
        "norms": norms,
        "false_alarm_target": ood.FALSE_ALARM,
        "false_alarm_confidence": ood.CONFIDENCE,
        "chosen_on": "val: highest flag rate on the worst foreign val set, then the mean",
        "val": choice["table"],
        "test": test,
    }


def fit(
    run_dir: str | os.PathLike,
    root: str | os.PathLike | None = None,
    data_root: str | os.PathLike | None = None,
    target_accuracy: float | None = None,
) -> dict[str, Any]:
    """Fit temperature, refer threshold and OOD detector on val; measure them on test.

    Writes ``calibration.json`` and ``ood.npz`` into the run (or ensemble) folder; for an
    ensemble also ``metrics.json`` (val/test AUC and ACC of the calibrated mean).

    Args:
        run_dir: run or ensemble name or path.
        root: registry root.
        data_root: MedMNIST folder.
        target_accuracy: accuracy required of retained cases (default per dataset,
            ``TARGET_ACCURACY``).

    Returns:
        The ``calibration.json`` dict.
    """
    t0 = time.perf_counter()
    p = registry.load_predictor(run_dir, root)
    cfg = p.members[0].config
    dataset, task = cfg["dataset"], cfg["task"]
    size = int(cfg.get("size", 28))
    target = target_accuracy or TARGET_ACCURACY.get(dataset, DEFAULT_TARGET)
    splits = {s: data.load_split(dataset, s, size, root=data_root) for s in data_splits()}
    outs = {s: p.raw(x) for s, (x, _) in splits.items()}
    y = {s: _labels(v[1]) for s, v in splits.items()}

    stats: dict[str, np.ndarray] = {}
    for i in range(len(p.members)):
        fitted = ood.fit_mahalanobis(outs["train"]["features"][i], y["train"])
        stats.update({f"{i}_{k}": v for k, v in fitted.items()})
    fitted = ood.fit_mahalanobis(outs["train"]["input_stats"], np.zeros(len(y["train"])))
    stats.update({f"input_{k}": v for k, v in fitted.items()})

    cal = calibration.calibration_report(outs["val"]["z"], y["val"], outs["test"]["z"], y["test"])
    t, bias = cal["temperature"], cal["bias"]
    proba = {s: calibration.scaled_proba(outs[s]["z"], t, bias) for s in ("val", "test")}
    unc = {s: 1.0 - proba[s].max(axis=1) for s in proba}
    correct = {s: (proba[s].argmax(axis=1) == y[s]).astype(int) for s in proba}
    chosen = selective.choose_threshold(unc["val"], correct["val"], target)
    refer = {
        "uncertainty": p.uncertainty_measure,
        "threshold": chosen["threshold"],
        "target_accuracy": target,
        "val": chosen,
        "test": selective.apply_threshold(unc["test"], correct["test"], chosen["threshold"]),
        "curves": {
            s: selective.curve_to_json(selective.risk_coverage(unc[s], correct[s])) for s in unc
        },
        "aurc": {s: selective.aurc(selective.risk_coverage(unc[s], correct[s])) for s in unc},
    }

    fv = foreign.foreign_sets(dataset, "val", splits["val"][0], p.input_shape, root=data_root)
    ft = foreign.foreign_sets(dataset, "test", splits["test"][0], p.input_shape, root=data_root)
    foreign_val = {k: p.raw(v, tta=False) for k, v in fv.items()}
    foreign_test = {k: p.raw(v, tta=False) for k, v in ft.items()}
    ood_cfg = _ood_section(stats, outs, foreign_val, foreign_test)

    # refer on test including the OOD guard (what the app shows)
    score = detector_score(ood_cfg["detector"], outs["test"], stats, ood_cfg["norms"])
    flagged = score > ood_cfg["threshold"]
    keep = ~(flagged | (unc["test"] > refer["threshold"]))
    refer["test_with_ood"] = {
        "coverage": float(keep.mean()),
        "accuracy": float(correct["test"][keep].mean()) if keep.any() else float("nan"),
    }
    metrics = {s: evaluation.evaluate(splits[s][1], proba[s], task) for s in ("val", "test")}
    out = {
        "run": p.run_dir.name,
        "dataset": dataset,
        "kind": "ensemble" if (p.run_dir / ensemble.ENSEMBLE_FILE).is_file() else "run",
        "members": [m.run_dir.name for m in p.members],
        "tta": p.tta,
        "temperature": t,
        "bias": bias,
        "calibrator": cal["method"],
        "ece_bins": calibration.N_BINS,
        "calibration": cal,
        "metrics": metrics,
        "refer": refer,
        "ood": ood_cfg,
        "fit_seconds": round(time.perf_counter() - t0, 1),
    }
    np.savez(p.run_dir / OOD_FILE, **stats)
    registry.write_json_atomic(p.run_dir / CALIBRATION_FILE, out)
    if out["kind"] == "ensemble":
        registry.write_json_atomic(p.run_dir / "metrics.json", {**metrics, "kind": "ensemble"})
    return out


def data_splits() -> tuple[str, ...]:
    return ("train", "val", "test")


def build_ensemble(
    dataset: str,
    name: str,
    root: str | os.PathLike | None = None,
    data_root: str | os.PathLike | None = None,
    max_members: int = 8,
    members: Sequence[str] | None = None,
) -> Path:
    """Choose members greedily on val log-loss (or take ``members``), decide TTA on val, write
    ``ensemble.json``.

    Args:
        dataset: MedMNIST flag; every member must be a run of it.
        name: the ensemble folder's name in the registry.
        root: registry folder (default ``TRAINED_MODELS_DIR``).
        data_root: MedMNIST folder (default ``MEDMNIST_ROOT``).
        max_members: greedy selection stops at this size.
        members: a membership fixed before looking at any split, e.g. every seed of one arm
            (a deep ensemble): no selection is made, and ``ensemble.json`` says so.

    Returns:
        The ensemble folder (call :func:`fit` on it next).

    Raises:
        ValueError: no runs of ``dataset`` in the registry, or a named member is not one of
            them (the message lists the runs there are).

    Example:
        >>> build_ensemble("adrenalmnist3d", "ensemble_cnn3d_seeds",
        ...                members=["cnn3d", "cnn3d_s1", "cnn3d_s2"])  # doctest: +SKIP
    """
    base = registry.root_dir(root)
    names = ensemble.candidates(dataset, base)
    if not names:
        raise ValueError(f"no runs of {dataset} in {base} to build an ensemble from")
    if members is not None:
        unknown = sorted(set(members) - set(names))
        if unknown or not members:
            raise ValueError(
                f"{', '.join(unknown) or 'no member'}: not a run of {dataset} in {base}.\n"
                f"1. Name members among: {', '.join(names)}.\n"
                "2. Or leave --members out to choose them greedily on val."
            )
        names = list(dict.fromkeys(members))
    loaded = {n: registry.load_predictor(base / n).members[0] for n in names}
    cfg = loaded[names[0]].config
    x, yv = data.load_split(dataset, "val", int(cfg.get("size", 28)), root=data_root)
    from core.trust.predictor import tta_views

    logits, logits_tta = {}, {}
    for n, m in loaded.items():
        xm = foreign.conform(x, m.input_shape)
        views = tta_views(xm, m.augment)
        logits[n] = m.forward(xm)[1]
        logits_tta[n] = [m.forward(v)[1] for v in views]
    everyone = ensemble.log_loss(list(logits.values()), yv)
    if members is not None:
        chosen = {"members": names, "trace": []}
        criterion = "members fixed beforehand (no selection); TTA kept when it lowers the val "
        criterion += "log-loss of the temperature-scaled mean softmax"
    else:
        chosen = ensemble.greedy_select(logits, yv, max_members)
        # greedy forward selection can stop before a larger set that is better still on val:
        # compare with every candidate at once (the "mean of all shipped models")
        if len(names) <= max_members and everyone < chosen["trace"][-1]["val_log_loss"]:
            chosen = {**chosen, "members": sorted(names), "all_candidates_won": True}
        criterion = "val log-loss of the temperature-scaled mean softmax (greedy forward, "
        criterion += "no replacement); TTA kept when it lowers that log-loss"
    chosen["all_candidates_val_log_loss"] = everyone
    plain = ensemble.log_loss([logits[n] for n in chosen["members"]], yv)
    with_tta = ensemble.log_loss([z for n in chosen["members"] for z in logits_tta[n]], yv)
    selection = {
        **chosen,
        "criterion": criterion,
        "candidates": names,
        "val_log_loss": {"no_tta": plain, "tta": with_tta},
    }
    ens_dir = base / registry.validate_run_name(name)
    return ensemble.write_spec(
        ens_dir,
        dataset,
        chosen["members"],
        with_tta < plain,
        selection,
        cfg.get("labels", []),
        cfg["task"],
    )
