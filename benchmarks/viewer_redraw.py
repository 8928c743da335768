"""Server time of a linked-crosshair redraw in the 3D viewer, at 28³ and 64³.

    python -m benchmarks.viewer_redraw [--repeats 60] [--output FILE.json]

One redraw is what the page's slice fragment does after a click on a view: map the click to
a voxel (``core.viewer.click_to_voxel``), draw the three views at that voxel with window/level,
crosshair and orientation letters (``core.viewer.render_view``), and encode each picture as
the click component does (PNG, zlib level 1, base64). Measured with and without a heatmap
overlay. Volumes are the first AdrenalMNIST3D test volume at each size (``MEDMNIST_ROOT``),
or a synthetic sphere when the file is missing (said in the output). The heatmap is a smooth
random field: its values, not a model, are what the drawing costs.

The machine's load average is printed before and after: on the shared 2-core machine the
figures move with it. Goal (issue 11): <= 150 ms server time per redraw.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import time
from pathlib import Path

import numpy as np

from core import viewer as cv

GOAL_MS = 150.0


def _volume(size: int) -> tuple[np.ndarray, str]:
    from core import info

    root = Path(
        os.environ.get("MEDMNIST_ROOT", Path(__file__).resolve().parents[2] / "shared/data")
    )
    path = root / info.file_name("adrenalmnist3d", size)
    if path.is_file():
        with np.load(path) as npz:
            return npz["test_images"][0].astype(np.float32) / 255.0, f"{path.name} test #0"
    grid = np.indices((size,) * 3).astype(np.float32)
    dist = np.sqrt(((grid - size / 2) ** 2).sum(0))
    return (dist < size / 3).astype(np.float32), "synthetic sphere (no data file)"


def _heatmap(size: int, rng: np.random.Generator) -> np.ndarray:
    coarse = rng.random((4, 4, 4)).astype(np.float32)
    reps = -(-size // 4)
    return np.kron(coarse, np.ones((reps, reps, reps), np.float32))[:size, :size, :size]


def _png_b64(picture: np.ndarray) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(picture).save(buf, format="PNG", compress_level=1)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def redraw(
    volume: np.ndarray,
    cam: np.ndarray | None,
    click: tuple[float, float],
    window: cv.Window,
    display: float = 303.0,
) -> int:
    """One click on the axial view, then the three views redrawn and encoded.

    Returns:
        Bytes of base64 PNG sent to the browser (a sanity figure for the output).
    """
    shape = volume.shape
    axial = cv.plane_view(0)
    voxel = cv.click_to_voxel(axial, shape, shape[0] // 2, click[0], click[1], display, display)
    sent = 0
    for plane in cv.PLANES:
        view = cv.plane_view(plane.axis)
        picture = cv.render_view(volume, view, voxel, window=window, cam=cam)
        sent += len(_png_b64(picture))
    return sent


def measure(size: int, repeats: int, with_cam: bool, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    volume, source = _volume(size)
    cam = _heatmap(size, rng) if with_cam else None
    window = cv.WINDOW_PRESETS["Soft tissue"]
    clicks = rng.uniform(0, 303, size=(repeats + 3, 2))
    for c in clicks[:3]:  # warm-up: font loading, colormap tables
        redraw(volume, cam, tuple(c), window)
    times, sent = [], 0
    for c in clicks[3:]:
        start = time.perf_counter()
        sent = redraw(volume, cam, tuple(c), window)
        times.append((time.perf_counter() - start) * 1000.0)
    return {
        "size": size,
        "heatmap": with_cam,
        "source": source,
        "median_ms": round(float(np.median(times)), 1),
        "p95_ms": round(float(np.percentile(times, 95)), 1),
        "max_ms": round(float(np.max(times)), 1),
        "sent_kb": round(sent / 1024, 1),
        "goal_ms": GOAL_MS,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=60, help="redraws per case")
    parser.add_argument("--output", type=Path, help="also write the rows as JSON here")
    args = parser.parse_args(argv)
    print(f"load average before: {os.getloadavg()}")
    rows = [
        measure(size, args.repeats, with_cam) for size in (28, 64) for with_cam in (False, True)
    ]
    print(f"load average after:  {os.getloadavg()}")
    print("| size | heatmap | median ms | p95 ms | max ms | sent KB | within 150 ms (p95) |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        ok = "yes" if r["p95_ms"] <= GOAL_MS else "NO"
        print(
            f"| {r['size']}³ | {'yes' if r['heatmap'] else 'no'} | {r['median_ms']} | "
            f"{r['p95_ms']} | {r['max_ms']} | {r['sent_kb']} | {ok} |"
        )
    print(f"volumes: {sorted({r['source'] for r in rows})}")
    if args.output:
        args.output.write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
