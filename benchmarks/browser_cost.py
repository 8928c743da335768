"""Chromium's CPU per first visit: a bare Streamlit page beside the app's heavy pages.

Why: the load goal (issue 16) runs the browsers on the server's 2 cores, so each first visit
costs the machine the browser's work as well as the server's. This prints that share, and the
floor any Streamlit page has (a page with one title and one line of text), so a page's cost can
be judged against what Streamlit's own front end needs.

Usage (from the repository root)::

    MEDMNIST_ROOT=/path/to/npz .venv/bin/python -m benchmarks.browser_cost [--visits 4] [--burst 8]

Per page: the median and range over ``--visits`` first visits (each in a new browser context,
after one warm-up visit that fills the server's caches), of Chromium's CPU-seconds from the
navigation until 1.5 s after the page's last element is drawn, of the renderer main thread's
busy time (Chrome DevTools ``Performance.getMetrics`` TaskDuration) and of the wall time.
``--burst K``: then K first visits of the same page at once (as ``benchmarks.app_load``'s K
users open theirs), p50 / p95 wall time until drawn: the bare page's row is the floor any
Streamlit page has with K browsers on this machine.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.app_load import CHROMIUM, CHROMIUM_ARGS, streamlit_server
from benchmarks.app_probes import RunWatcher, browser_cpu_s

BARE_PAGE = 'import streamlit as st\nst.title("A bare page")\nst.write("ready")\n'
PAGES = {
    "bare Streamlit page": ("", "ready"),
    "Explanations (Grad-CAM)": ("/gradcam?run=cnn2d_noaug&split=test&index={i}", "ms server time"),
    "3D volumes": ("/volume?dataset=adrenalmnist3d&size=28&index={i}", "Slice redraw:"),
}


async def _visits(browser, url: str, path: str, ready: str, n: int) -> list[tuple]:
    out = []
    for i in range(n + 1):  # the first visit warms the server (models, traced functions)
        context = await browser.new_context(viewport={"width": 1400, "height": 1100})
        page = await context.new_page()
        cdp = await context.new_cdp_session(page)
        await cdp.send("Performance.enable")
        watcher = RunWatcher(page)
        cpu0, start, since = browser_cpu_s(), time.perf_counter(), watcher.mark()
        await page.goto(url + path.format(i=i + 10))
        await watcher.settled(since)
        await page.get_by_text(ready).first.wait_for(timeout=120_000)
        wall = time.perf_counter() - start
        await page.wait_for_timeout(1500)
        cpu = browser_cpu_s() - cpu0
        metrics = {
            m["name"]: m["value"] for m in (await cdp.send("Performance.getMetrics"))["metrics"]
        }
        if i:
            out.append((cpu, metrics["TaskDuration"], wall))
        await context.close()
    return out


async def _one(browser, url: str, ready: str) -> float:
    context = await browser.new_context(viewport={"width": 1400, "height": 1100})
    try:
        page = await context.new_page()
        watcher = RunWatcher(page)
        start, since = time.perf_counter(), watcher.mark()
        await page.goto(url)
        await watcher.settled(since)
        await page.get_by_text(ready).first.wait_for(timeout=180_000)
        return time.perf_counter() - start
    finally:
        await context.close()


async def _burst(browser, url: str, path: str, ready: str, k: int) -> list[float]:
    """K first visits at once (sample indices 30.., so the server has not drawn them)."""
    return list(
        await asyncio.gather(*(_one(browser, url + path.format(i=30 + u), ready) for u in range(k)))
    )


async def _main(visits: int, burst: int) -> dict[str, list[tuple]]:
    from playwright.async_api import async_playwright

    results: dict[str, list[tuple]] = {}
    env = {"JOBS_WORKER_AUTOSTART": "0"}
    with tempfile.TemporaryDirectory() as tmp:
        bare = Path(tmp) / "bare_page.py"
        bare.write_text(BARE_PAGE)
        env["JOBS_DB"] = str(Path(tmp) / "jobs.sqlite")
        async with async_playwright() as p:
            browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            for name, (path, ready) in PAGES.items():
                script = str(bare) if not path else "app/Home.py"
                with streamlit_server(env, Path(tmp) / "server.log", script=script) as url:
                    results[name] = await _visits(browser, url, path, ready, visits)
                    if burst:
                        walls = await _burst(browser, url, path, ready, burst)
                        results[f"{name}, {burst} at once"] = walls
            await browser.close()
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--visits", type=int, default=4)
    parser.add_argument("--burst", type=int, default=0, help="then K first visits at once")
    args = parser.parse_args(argv)
    results = asyncio.run(_main(args.visits, args.burst))
    bursts = {name: rows for name, rows in results.items() if name.endswith("at once")}
    print(f"\nChromium per first visit (median [min–max] of {args.visits}):")
    print(f"  {'page':26s} | Chromium CPU-s    | renderer main thread s | wall s")
    for name, rows in results.items():
        if name in bursts:
            continue
        cols = []
        for k in range(3):
            values = [r[k] for r in rows]
            cols.append(f"{statistics.median(values):.2f} [{min(values):.2f}–{max(values):.2f}]")
        print(f"  {name:26s} | {cols[0]:17s} | {cols[1]:22s} | {cols[2]}")
    if bursts:
        print("\nfirst visits at once, wall s until drawn (p50 / p95 / max):")
        for name, walls in bursts.items():
            q = statistics.quantiles(walls, n=100, method="inclusive")
            print(f"  {name:38s} | {q[49]:.2f} / {q[94]:.2f} / {max(walls):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
