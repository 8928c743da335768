"""Speed of every explanation method, batch 1, against tf-keras-vis where it has the method.

    python -m benchmarks.explain_speed [--models cnn2d_noaug cnn3d] [--methods gradcam scorecam]
                                       [--runs 10] [--peer-runs 3] [--output FILE.json]

For each shipped model (loaded with ``core.registry.load_model``) and method, the median time
of ``core.explain.attribution`` on the first real test input after warm-up, the same for
tf-keras-vis (Gradcam, GradcamPlusPlus, Layercam, Scorecam, Saliency with ``smooth_samples``)
and the per-sample Pearson correlation of the two maps on the layer grid (pixel grid for
SmoothGrad). The machine's load average is printed before and after: on the shared 2-core
machine the figures move with it, so read them with it.

Goals (issue 13): gradient CAMs <= 10 ms 2D / <= 15 ms 3D; Score-CAM <= 250 ms 2D; Integrated
Gradients (32 steps) <= 60 ms 2D / <= 300 ms 3D; each >= 3x faster than tf-keras-vis.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

MODELS = ("cnn2d_noaug", "vgg16_ft2_ema", "resnet", "cnn3d")
GRADIENT_CAMS = ("gradcam", "gradcam++", "hirescam", "layercam", "layercam_fused")
# (goal 2D, goal 3D) in ms at batch 1; None = no goal
GOALS: dict[str, tuple[float | None, float | None]] = {
    **{m: (10.0, 15.0) for m in GRADIENT_CAMS},
    "scorecam": (250.0, None),
    "integrated_gradients": (60.0, 300.0),
}
PEER = {
    "gradcam": "Gradcam",
    "gradcam++": "GradcamPlusPlus",
    "layercam": "Layercam",
    "scorecam": "Scorecam",
    "smoothgrad": "Saliency",
}
SMOOTH_SAMPLES = 16  # our default; tf-keras-vis is run with the same count


def _median_ms(fn: Callable[[], Any], runs: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times) * 1000.0)


def _corr(a: np.ndarray, b: np.ndarray) -> float | None:
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    if a.shape != b.shape or a.std() == 0 or b.std() == 0:
        return None
    return float(np.corrcoef(a, b)[0, 1])


def _first_test_input(run_dir: Path) -> np.ndarray:
    from core import data
    from core.models import prepare_input

    cfg = json.loads((run_dir / "config.json").read_text())
    x, _ = data.load_split(cfg["dataset"], "test", int(cfg.get("size", 28)))
    return prepare_input(cfg["model"], x[:1])


def _peer(method: str, model, x: np.ndarray, cls: int, layer: str | None) -> Callable:
    """A call of tf-keras-vis' implementation of ``method``, returning its map on the grid."""
    import tf_keras_vis.gradcam
    import tf_keras_vis.layercam
    import tf_keras_vis.saliency
    import tf_keras_vis.scorecam
    from tf_keras_vis.utils.model_modifiers import ReplaceToLinear
    from tf_keras_vis.utils.scores import CategoricalScore

    name = PEER[method]
    module = {
        "Gradcam": tf_keras_vis.gradcam,
        "GradcamPlusPlus": tf_keras_vis.gradcam,
        "Layercam": tf_keras_vis.layercam,
        "Scorecam": tf_keras_vis.scorecam,
        "Saliency": tf_keras_vis.saliency,
    }[name]
    # ReplaceToLinear: score the logits as we do (Score-CAM re-applies the softmax itself)
    vis = getattr(module, name)(model, model_modifier=ReplaceToLinear(), clone=True)
    score = CategoricalScore([cls])
    if name == "Saliency":
        return lambda: vis(score, x, smooth_samples=SMOOTH_SAMPLES, smooth_noise=0.2)
    return lambda: vis(
        score, x, penultimate_layer=layer, seek_penultimate_conv_layer=False, expand_cam=False
    )


def bench_model(run_dir: Path, methods: Sequence[str], runs: int, peer_runs: int) -> list[dict]:
    """Timings (and peer agreement) of ``methods`` on one shipped model at batch 1."""
    from core import explain, registry

    model = registry.load_model(run_dir)
    x = _first_test_input(run_dir)
    rank = len(model.input_shape) - 2
    rows = []
    for method in methods:
        cls = int(explain.attribution(model, x, method, return_classes=True)[1][0])
        layers = explain.resolve_layers(model, method)
        ms = _median_ms(lambda m=method, c=cls: explain.attribution(model, x, m, c), runs)
        row = {
            "model": run_dir.name,
            "rank": rank,
            "method": method,
            "layers": explain.describe_layers(model, layers),
            "ms": ms,
            "goal_ms": GOALS.get(method, (None, None))[rank == 3],
        }
        if method in PEER and peer_runs > 0:
            peer = _peer(method, model, x, cls, layers[0] if layers else None)

            def call(peer=peer):
                # Score-CAM's model.predict draws a progress bar per call: keep the table clean
                with contextlib.redirect_stdout(io.StringIO()):
                    return peer()

            row["peer_ms"] = _median_ms(call, peer_runs, warmup=1)
            row["speedup"] = row["peer_ms"] / ms
            opts = {} if method == "smoothgrad" else {"upsample": False}
            if method == "scorecam":
                opts["mask_upsample"] = "align_corners"  # tf-keras-vis' scipy zoom
            # SmoothGrad's noise differs (random draws), so its maps agree only roughly
            row["corr_grid"] = _corr(explain.attribution(model, x, method, cls, **opts), call())
        rows.append(row)
    return rows


def _fmt(value: Any, spec: str = ".1f") -> str:
    return "–" if value is None else format(value, spec)


def format_table(rows: list[dict], load: dict[str, list[float]]) -> str:
    """A markdown table with the goals, and the load average around the measurement."""
    lines = [
        f"load average (1, 5, 15 min) at start {load['start']}, at end {load['end']} "
        f"on {os.cpu_count()} cores",
        "",
        "| model | method | layer(s) | ms | goal ms | tf-keras-vis ms | speed-up | r (grid) |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        goal = r["goal_ms"]
        mark = "" if goal is None else (" ✓" if r["ms"] <= goal else " ✗")
        speed = r.get("speedup")
        smark = "" if speed is None else (" ✓" if speed >= 3 else " ✗")
        lines.append(
            f"| {r['model']} | {r['method']} | {r['layers'] or 'input'} | {_fmt(r['ms'])}{mark} "
            f"| {_fmt(goal, '.0f')} | {_fmt(r.get('peer_ms'))} | "
            f"{'–' if speed is None else f'{speed:.1f}x'}{smark} "
            f"| {_fmt(r.get('corr_grid'), '.4f')} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Time every method on the shipped models; print a table (and write JSON if asked)."""
    from core import explain
    from core.config import trained_models_dir

    parser = argparse.ArgumentParser(prog="python -m benchmarks.explain_speed", description=__doc__)
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--methods", nargs="+", default=list(explain.METHODS))
    parser.add_argument("--runs", type=int, default=10, help="timed calls per method (median)")
    parser.add_argument("--peer-runs", type=int, default=3, help="tf-keras-vis calls; 0 = skip")
    parser.add_argument("--output", type=Path, default=None, help="also write the rows as JSON")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.methods) - set(explain.METHODS))
    if unknown:
        parser.error(f"unknown method(s) {unknown}; choose from {explain.METHODS}")
    load = {"start": [round(v, 2) for v in os.getloadavg()]}
    rows = []
    for name in args.models:
        rows += bench_model(
            Path(trained_models_dir()) / name, args.methods, args.runs, args.peer_runs
        )
    load["end"] = [round(v, 2) for v in os.getloadavg()]
    print(format_table(rows, load))
    if args.output:
        args.output.write_text(json.dumps({"load_avg": load, "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
