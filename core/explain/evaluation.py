"""Rate each candidate explanation of a run on val and test, pick the default, write explain.json.

``evaluate_run`` is what ``python -m core.explain RUN`` calls. For each candidate (method,
layer) it measures, on a seeded subset of the validation and the test split: deletion and
insertion AUCs against the smooth-random baseline (:mod:`core.explain.faithfulness`), ROAD,
the randomization sanity check (:mod:`core.explain.sanity`) and the anatomy numbers
(:mod:`core.explain.anatomy`); once per split, how the model's score tracks simple properties
(:mod:`core.explain.properties`). :mod:`core.explain.select` picks the default on val.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import tf_keras as keras

from core import registry
from core.explain import anatomy, faithfulness, properties, sanity, select
from core.explain.alignment import anatomy_mask, energy_in_mask
from core.explain.attribution import METHODS, attribution, method_info
from core.explain.layers import fused_layers
from core.explain.occlusion import keras_predict_fn
from core.models import prepare_input
from core.runs import load_run_for_eval

# Budget (a shared, loaded 2-core CPU; all 9 shipped runs must finish in well under 40 min).
# Methods whose cost per sample is one forward pass per channel or per patch are rated on
# fewer samples, so they cannot meet the >= 64-sample goal; explain.json records their ``n``.
EXPENSIVE_SAMPLE_CAP = {"scorecam": 16, "occlusion": 32}
# Score-CAM is skipped on layers with more channels than this (VGG16's 512: 512 forward passes
# per sample and cascade stage).
SCORECAM_MAX_CHANNELS = 256
# 3D occlusion with 4-voxel patches is 343 forward passes per volume; 7-voxel patches make 64.
OCCLUSION_3D = {"patch": 7}
# The sanity check on val (which only gates the choice) uses this many samples; on test all n.
VAL_SANITY_SAMPLES = 32
ROAD_SAMPLES = {2: 64, 3: 8}


def candidates(model: keras.Model) -> list[tuple[str, str | None]]:
    """Candidate (method, layer) pairs rated for a model.

    One-layer CAMs are tried on the deepest layer of each of the two deepest resolution stages
    (:func:`core.explain.layers.fused_layers`), Score-CAM on the deepest only (it costs one
    forward pass per channel); fused LayerCAM and the pixel-level methods need no layer.

    Args:
        model: A flat tf-keras model.

    Returns:
        ``[(method, layer or None), ...]`` in :data:`core.explain.METHODS` order.
    """
    stages = list(fused_layers(model, count=2))
    out: list[tuple[str, str | None]] = []
    for method in METHODS:
        kind = method_info(method)["layers"]
        if kind != "one":
            out.append((method, None))
        elif method == "scorecam":
            channels = model.get_layer(stages[-1]).output_shape[-1]
            if channels <= SCORECAM_MAX_CHANNELS:
                out.append((method, stages[-1]))
        else:
            out.extend((method, layer) for layer in stages[::-1])
    return out


def map_function(method: str, layer: str | None, classes: np.ndarray) -> sanity.ModelMapFn:
    """``(model, x) -> maps`` for one candidate, explaining the fixed ``classes``."""

    def run(model: keras.Model, x: np.ndarray) -> np.ndarray:
        opts = OCCLUSION_3D if method == "occlusion" and np.ndim(x) == 5 else {}
        cls = classes[: len(x)]
        return np.asarray(
            attribution(model, x, method, class_index=cls, layer_name=layer, **opts), np.float32
        )

    return run


def _subset(n_total: int, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.arange(n_total) if n_total <= n else np.sort(rng.choice(n_total, n, replace=False))


def _legacy_entry(cand: dict[str, Any], x_raw: np.ndarray, maps: np.ndarray, flag: str) -> dict:
    """The pre-issue-13 per-method keys the app's alignment table reads (core.results)."""
    f = cand["faithfulness"]
    entry: dict[str, Any] = {
        "method": cand["method"],
        "layer": cand["layer"],
        "n": f["n"],
        "zero_maps": int(np.sum(maps.reshape(len(maps), -1).max(axis=1) <= 0)),
        "deletion_fractions": f["fractions"],
        "deletion_salient_mean": f["deletion_curve"],
        "deletion_random_mean": f.get("baseline_deletion_curve"),
        "deletion_auc_salient_mean": f["deletion_auc"],
        "deletion_auc_random_mean": f["baseline_deletion_auc"],
        "energy_in_mask_mean": None,
        "mask_area_mean": None,
        "energy_over_area": None,
    }
    try:
        masks = anatomy_mask(x_raw, flag)
    except ValueError:
        return entry
    energy = [energy_in_mask(h, m) for h, m in zip(maps, masks, strict=True)]
    e = float(np.nanmean(energy)) if np.isfinite(energy).any() else None
    a = float(np.mean([m.mean() for m in masks]))
    entry.update(
        energy_in_mask_mean=e, mask_area_mean=a, energy_over_area=e / a if e and a else None
    )
    return entry


def _split_data(run: Path, split: str, n: int, seed: int) -> dict[str, Any]:
    config, model, x_raw, y = load_run_for_eval(run, split, prepare=False)
    idx = _subset(len(x_raw), n, seed)
    x_raw = x_raw[idx]
    return {"x_raw": x_raw, "x": prepare_input(config["model"], x_raw), "y": y[idx], "idx": idx}


def evaluate_run(
    run_dir: str | Path,
    n: int = 64,
    n_val: int | None = 32,
    steps: int = 10,
    seed: int = 0,
    methods: Sequence[str] | None = None,
    road: bool = True,
    log: Callable[[str], None] | None = print,
) -> dict[str, Any]:
    """Rate every candidate on val and test, choose the default on val, write ``explain.json``.

    Args:
        run_dir: Run directory or registry name.
        n: Test samples (seeded subset; the goals need >= 64).
        n_val: Validation samples (``None`` = ``n``); val only ranks the candidates.
        steps: Deletion/insertion curve steps.
        seed: Seed of the subsets, the smooth-random maps and the randomized weights.
        methods: Restrict to these method names (default: every candidate).
        road: Also compute ROAD (slow for 3D volumes).
        log: Progress printer (``None`` = silent).

    Returns:
        The dict written to ``<run>/explain.json``.
    """
    say = log or (lambda _msg: None)
    run = registry.resolve_run(run_dir, allow_outside=True)
    config = registry.read_json(run, "config.json")
    flag, family = config["dataset"], config["model"]
    model = registry.load_model(run, allow_outside=True)
    predict = keras_predict_fn(model)
    _, _, x_train_raw, _ = load_run_for_eval(run, "train", prepare=False)
    reference = faithfulness.removal_reference(prepare_input(family, x_train_raw), flag)
    del x_train_raw
    sizes = {"val": n if n_val is None else n_val, "test": n}
    splits = {s: _split_data(run, s, sizes[s], seed + k) for k, s in enumerate(sizes)}
    rank = splits["val"]["x"].ndim - 2
    per_split: dict[str, dict[str, Any]] = {}
    for name, d in splits.items():
        probs = predict(d["x"])
        d["classes"] = probs.argmax(axis=1) if probs.shape[1] > 1 else (probs[:, 0] > 0.5) * 1
        base_maps = faithfulness.smooth_random_maps(len(d["x"]), d["x"].shape[1:-1], seed=seed)
        d["baseline"] = faithfulness.deletion_insertion(
            predict, d["x"], base_maps, d["classes"], reference, steps=steps, seed=seed
        )
        n_road = min(len(d["x"]), ROAD_SAMPLES[rank])
        per_split[name] = {
            "n": len(d["x"]),
            "removal_shift": float(np.mean(d["baseline"]["removal_shift"])),
            "removal_shift_abs": float(np.mean(np.abs(d["baseline"]["removal_shift"]))),
            "baseline": {
                "deletion_auc": float(np.mean(d["baseline"]["deletion_auc"])),
                "insertion_auc": float(np.mean(d["baseline"]["insertion_auc"])),
                "road": faithfulness.road_curves(
                    predict, d["x"][:n_road], base_maps[:n_road], d["classes"][:n_road]
                )
                if road and name == "test"
                else None,
            },
            "properties": properties.property_correlations(probs, d["x_raw"], flag),
            "accuracy": float(np.mean(d["classes"] == d["y"][:, 0])),
        }
    cands = []
    legacy: dict[str, Any] = {}
    for method, layer in candidates(model):
        if methods and method not in methods:
            continue
        cap = min(n, EXPENSIVE_SAMPLE_CAP.get(method, n))
        entry: dict[str, Any] = {"method": method, "layer": layer}
        for name, d in splits.items():
            t0 = time.perf_counter()
            x, cls = d["x"][:cap], d["classes"][:cap]
            fn = map_function(method, layer, cls)
            maps = fn(model, x)
            curves = faithfulness.deletion_insertion(
                predict, x, maps, cls, reference, steps=steps, seed=seed
            )
            base = {k: (v[:cap] if np.ndim(v) else v) for k, v in d["baseline"].items()}
            base["fractions"] = d["baseline"]["fractions"]
            summary = faithfulness.faithfulness_summary(curves, base)
            summary["baseline_deletion_curve"] = np.mean(base["deletion"], 0).round(4).tolist()
            n_road = min(cap, ROAD_SAMPLES[rank])
            n_sane = cap if name == "test" else min(cap, VAL_SANITY_SAMPLES)
            entry[name] = {
                "faithfulness": summary,
                "road": faithfulness.road_curves(predict, x[:n_road], maps[:n_road], cls[:n_road])
                if road and name == "test"
                else None,
                "sanity": sanity.randomization_test(
                    model, fn, x[:n_sane], seed=seed, trained_maps=maps[:n_sane]
                ),
                "anatomy": anatomy.anatomy_summary(maps, d["x_raw"][:cap], flag),
                "seconds": round(time.perf_counter() - t0, 1),
            }
            if name == "test" and method in ("gradcam", "gradcam++"):
                legacy[(method, layer)] = (entry, d["x_raw"][:cap], maps)
        say(f"{run.name} {method} {layer or '-'}: " + _one_line(entry))
        cands.append(entry)
    result: dict[str, Any] = {
        "run": run.name,
        "dataset": flag,
        "model": family,
        "split": "test",
        "reference": "empty volume"
        if flag in faithfulness.EMPTY_REFERENCE_FLAGS
        else "training mean image",
        "baseline": f"smooth random, {faithfulness.BASELINE_GRID}^{rank} grid upsampled",
        "steps": steps,
        "splits": per_split,
        "candidates": cands,
        "thresholds": {
            "max_deletion_ratio": select.MAX_DELETION_RATIO,
            "min_insertion_ratio": select.MIN_INSERTION_RATIO,
            "max_rank_correlation": select.MAX_RANK_CORRELATION,
            "rank_correlation": "mean |rho| over samples",
            "min_samples": select.MIN_SAMPLES,
        },
    }
    finalize(result)
    for method in ("gradcam", "gradcam++"):
        keys = [k for k in legacy if k[0] == method]
        if keys:
            key = (method, result["default_layer"])
            cand, x_raw, maps = legacy[key if key in legacy else keys[-1]]
            result[method] = _legacy_entry({**cand, **cand["test"]}, x_raw, maps, flag)
    registry.write_json_atomic(run / "explain.json", _jsonable(result))
    return result


def refresh_run(run: Path) -> dict[str, Any]:
    """Re-choose the default and rewrite the verdict of ``run/explain.json`` in place.

    Nothing is recomputed: the stored candidates' numbers go through :func:`finalize` again, so
    a change to :mod:`core.explain.select` reaches shipped runs in seconds.

    Raises:
        FileNotFoundError: The run has no explain.json (with the command that makes one).
    """
    path = Path(run) / "explain.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} does not exist. Next steps:\n"
            f"  1. Measure the run first: python -m core.explain {Path(run).name}\n"
            "  2. Then --refresh re-chooses from those numbers."
        )
    result = json.loads(path.read_text())
    result["thresholds"] = {
        **result.get("thresholds", {}),
        "max_rank_correlation": select.MAX_RANK_CORRELATION,
        "rank_correlation": "mean |rho| over samples",
    }
    finalize(result)
    registry.write_json_atomic(path, _jsonable(result))
    return result


# Below this mean score move from sample to reference, deletion/insertion curves cannot rank maps.
MIN_REMOVAL_SHIFT = 0.1


def finalize(result: dict[str, Any]) -> dict[str, Any]:
    """Choose the default from ``result["candidates"]`` and write the verdict (in place).

    Also used to refresh a stored explain.json after a change to the selection or the wording.
    """
    result.update(select.choose(result["candidates"]))
    shift = (result.get("splits", {}).get("test") or {}).get("removal_shift")
    if shift is not None and abs(shift) < MIN_REMOVAL_SHIFT:
        result["verdict"] += (
            f" Removing the whole input changes this model's score by only {abs(shift):.2f} on "
            "average, so the removal test can hardly tell good maps from bad ones here."
        )
    desc = properties.describe((result.get("splits", {}).get("test") or {}).get("properties"))
    if desc:
        result["verdict"] += " " + desc
    return result


def _one_line(entry: dict[str, Any]) -> str:
    parts = []
    for split in ("val", "test"):
        e = entry[split]
        f, rho = e["faithfulness"], e["sanity"]["rank_correlation"]
        parts.append(
            f"{split} del {f['deletion_ratio']:.2f} ins {f['insertion_ratio']:.2f} "
            f"rho {rho:.2f} ({e['seconds']:.0f}s)"
        )
    return " | ".join(parts)


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, float) and obj != obj:
        return None
    return obj
