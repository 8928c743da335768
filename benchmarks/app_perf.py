"""App performance measured in a real browser against a real ``streamlit run app/Home.py``.

Budgets (issue #4): Home first paint <= 2 s after the server is healthy; switching pages with a
cached model <= 1 s; a slice-slider move redraws in <= 150 ms server time; a Grad-CAM recompute
for a 2D sample <= 100 ms server time.

Server times are the figures the pages themselves print ("Slice redraw: N ms server time",
"Grad-CAM: N ms server time"), measured around the work in the script thread; wall times are
measured here, from the browser action until Streamlit reports the run finished.

Usage (from the repository root; needs a registry with a 2D and a 3D run and their data)::

    MEDMNIST_ROOT=/path/to/npz TRAINED_MODELS_DIR=trained_models \\
        .venv/bin/python benchmarks/app_perf.py [--repeats 10]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _load_app_helpers():
    """tests/app_helpers.py (the browser tests' server and Chromium helpers), by its path.

    tests/ is not a package, and a dependency (tf-keras-vis) installs an unrelated top-level
    ``tests`` package, so ``import tests.app_helpers`` would find the wrong one.
    """
    spec = importlib.util.spec_from_file_location("app_helpers", REPO / "tests" / "app_helpers.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_helpers = _load_app_helpers()
CHROMIUM, CHROMIUM_ARGS = _helpers.CHROMIUM, _helpers.CHROMIUM_ARGS
streamlit_server, wait_idle = _helpers.streamlit_server, _helpers.wait_idle

BUDGETS_MS = {"home_first_paint": 2000, "page_switch": 1000, "slice_redraw": 150, "gradcam": 100}


def _done(page) -> None:
    page.wait_for_selector("[data-testid=stApp][data-test-script-state=notRunning]")


def _server_ms(page, pattern: str) -> float:
    match = re.search(pattern, page.inner_text("body"))
    if not match:
        raise RuntimeError(f"the page shows no {pattern!r}")
    return float(match.group(1))


def _pick_runs() -> tuple[str, str]:
    from core import info, registry

    runs = registry.list_runs()
    two_d = [r for r in runs if not info.is_3d(r["config"]["dataset"])]
    three_d = [r for r in runs if info.is_3d(r["config"]["dataset"])]
    if not two_d or not three_d:
        raise SystemExit(
            "The registry needs a 2D and a 3D run (set TRAINED_MODELS_DIR), e.g.\n"
            "  python -m core.train --dataset retinamnist --model cnn2d --epochs 2\n"
            "  python -m core.train --dataset adrenalmnist3d --model cnn3d --epochs 2"
        )
    return two_d[0]["name"], three_d[0]["name"]


def _summary(values: list[float]) -> str:
    return (
        f"median {statistics.median(values):7.1f} ms   max {max(values):7.1f} ms   n={len(values)}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args(argv)
    from playwright.sync_api import sync_playwright

    run_2d, run_3d = _pick_runs()
    env = {
        "JOBS_WORKER_AUTOSTART": "0",
        "JOBS_DB": os.environ.get("JOBS_DB", str(REPO / "var" / "bench_jobs.sqlite")),
    }
    log = REPO / "test-artifacts" / "benchmark-server.log"
    results: dict[str, list[float]] = {}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1500, "height": 1200})
        with streamlit_server(env, log) as url:
            # 1. Home first paint, timed from the moment /_stcore/health answered "ok".
            start = time.perf_counter()
            page.goto(url, wait_until="domcontentloaded")
            page.get_by_role("heading", name="MedMNIST clinical review").wait_for()
            results["home_first_paint"] = [(time.perf_counter() - start) * 1000]
            wait_idle(page)
            results["home_script_done"] = [(time.perf_counter() - start) * 1000]

            # 2. Page switches by the sidebar links, once the model is cached.
            page.goto(f"{url}/gradcam?run={run_2d}", wait_until="domcontentloaded")
            page.get_by_role("heading", name="Grad-CAM explorer").wait_for(timeout=120_000)
            wait_idle(page)
            switches, switch_done = [], []
            pairs = (
                ("Sample browser", "Sample browser"),
                ("Grad-CAM explorer", "Grad-CAM explorer"),
            )
            for rep in range(max(2, args.repeats // 2) + 1):
                for link, title in pairs:
                    start = time.perf_counter()
                    page.locator("[data-testid=stSidebarNav]").get_by_text(link).click()
                    page.get_by_role("heading", name=title).wait_for()
                    painted = (time.perf_counter() - start) * 1000
                    _done(page)  # the new page's heading exists, so this is its run finishing
                    done = (time.perf_counter() - start) * 1000
                    wait_idle(page)
                    if rep:  # the first round fills the caches (predictions of the split)
                        switches.append(painted)
                        switch_done.append(done)
            results["page_switch"] = switches
            results["page_switch_script_done"] = switch_done

            # 3. Grad-CAM recompute on new 2D samples (never a cache hit).
            cams, cam_walls = [], []
            number = page.locator(".st-key-gradcam_index input")
            for i in range(1, args.repeats + 2):
                start = time.perf_counter()
                number.fill(str(10 + i))
                number.press("Enter")
                page.get_by_text(f"sample #{10 + i} ").first.wait_for()
                _done(page)
                cam_walls.append((time.perf_counter() - start) * 1000)
                wait_idle(page)
                cams.append(_server_ms(page, r"Grad-CAM: (\d+) ms server time"))
            results["gradcam"] = cams[1:]  # the first traces the tf.function
            results["gradcam_wall"] = cam_walls[1:]

            # 4. Slice slider on the 3D viewer (fragment rerun only).
            page.goto(f"{url}/volume?run={run_3d}", wait_until="domcontentloaded")
            page.get_by_role("heading", name="3D volume viewer").wait_for(timeout=120_000)
            wait_idle(page)
            slider = page.locator(".st-key-volume_slice_0 input[type=range]").first
            redraws = []
            for i in range(args.repeats):
                slider.focus()
                start = time.perf_counter()
                slider.press("ArrowLeft" if i % 2 else "ArrowRight")
                page.wait_for_timeout(700)  # the slider commits after a debounce
                wait_idle(page)
                redraws.append(_server_ms(page, r"Slice redraw: (\d+) ms server time"))
            results["slice_redraw"] = redraws
        browser.close()

    print(f"registry runs: 2D {run_2d}, 3D {run_3d}")
    for name, values in results.items():
        budget = BUDGETS_MS.get(name)
        verdict = ""
        if budget is not None:
            verdict = "  OK" if max(values) <= budget else f"  OVER BUDGET ({budget} ms)"
            verdict = f"  budget {budget} ms" + verdict
        print(f"{name:28s} {_summary(values)}{verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
