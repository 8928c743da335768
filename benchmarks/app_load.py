"""Clinic-day load test: K users in one Chromium against a real ``streamlit run app/Home.py``.

Each user opens the Grad-CAM explorer (``/gradcam?run=RUN&split=test&index=N``) or, every third
user, the 3D viewer (``/volume?dataset=FLAG&size=28&index=N``) on a new sample, then changes
sample, heatmap opacity and method in turn. Reported per K: p50/p95 wall time of page loads
and of interactions (browser action until Streamlit reports the run finished), errors, server
RSS before / after / ``--cooldown`` seconds after every tab closed, and server CPU-seconds per
page. An interaction's wall time runs from the browser action until the server's
``script_finished`` for the run it asked for arrives on the page's websocket (``RunWatcher``);
an action that asked for no run is counted ("no rerun"), not timed. Then a soak of ``--soak``
interactions by ``--soak-users`` users with RSS sampled along the way, and a sequential
calibration (one user, nothing else running) of CPU-seconds per Grad-CAM page load, per
slider interaction and per 3D page load.

Server figures are read from ``/proc``: RSS of the server process; CPU = user + system time of
the server, of its finished children (the PyVista renderer runs in a child per scene) and of
its live descendants.

Usage (from the repository root; the shipped registry has the runs named below)::

    MEDMNIST_ROOT=/path/to/npz .venv/bin/python -m benchmarks.app_load \\
        [--users 1 4 8 12] [--soak 2000] [--soak-users 8] [--calibrate 8] [--cooldown 30] \\
        [--proxy [--gzip static|on|off]]

``--proxy`` serves the app as ``make serve-proxy`` does (``deploy/nginx.py``: nginx sends the
front-end bundle, Streamlit the rest); CPU figures are then Streamlit + nginx, with nginx's
share of each page load printed beside them.

The browser runs on the same machine, so wall times include its CPU use; server CPU and RSS
do not.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import re
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.app_probes import (
    FINISH_TIMEOUT_S,
    REQUEST_TIMEOUT_S,
    Proxied,
    RunWatcher,
    Server,
    browser_cpu_s,
    choose_option,
    keep_niced,
)


def _app_helpers():
    """tests/app_helpers.py (server start-up shared with the browser tests), loaded by path:
    ``tests`` is not a package here, and a site-packages ``tests`` package shadows the name."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "tests" / "app_helpers.py"
    spec = importlib.util.spec_from_file_location("app_helpers", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_helpers = _app_helpers()
CHROMIUM, CHROMIUM_ARGS, REPO = _helpers.CHROMIUM, _helpers.CHROMIUM_ARGS, _helpers.REPO
streamlit_server = _helpers.streamlit_server

# --------------------------------------------------------------------------------------------
# One user
# --------------------------------------------------------------------------------------------


@dataclass
class Tally:
    loads: list[float] = field(default_factory=list)
    actions: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    no_rerun: int = 0
    menu_retries: int = 0  # dropdown clicks repeated: the menu did not open (choose_option)
    interactions: int = 0
    by_action: dict[str, list[float]] = field(default_factory=dict)  # "sample", "opacity"...


class Samples:
    """Hands out sample indices no user has opened yet (wrapping after the whole split)."""

    def __init__(self, n: int, seed: int) -> None:
        self.order = random.Random(seed).sample(range(n), n)
        self.i = 0

    def next(self) -> int:
        self.i += 1
        return self.order[(self.i - 1) % len(self.order)]


@dataclass
class Kind:
    path: str  # URL path with {index}
    index_key: str
    alpha_key: str
    method_key: str
    methods: tuple[str, ...]
    ready_text: str  # shown once the page's heavy part is drawn
    samples: Samples


async def _rerun(watcher: RunWatcher, action) -> tuple[float, bool]:
    """Wall seconds from ``action`` until the run it asked for finished, and whether it asked
    for one at all (False: nothing changed; the time is then ``REQUEST_TIMEOUT_S``)."""
    since = watcher.mark()
    start = time.perf_counter()
    await action()
    ran = await watcher.settled(since)
    return time.perf_counter() - start, ran


async def _open(page, watcher: RunWatcher, url: str, ready_text: str) -> None:
    """Load ``url`` and wait for its first run to finish and ``ready_text`` to be drawn.

    Raises:
        TimeoutError: the page asked for no run, or it did not finish in time.
    """
    since = watcher.mark()
    await page.goto(url, wait_until="domcontentloaded")
    if not await watcher.settled(since):
        raise TimeoutError(f"the page asked for no script run within {REQUEST_TIMEOUT_S:.0f} s")
    await page.get_by_text(ready_text).first.wait_for(timeout=FINISH_TIMEOUT_S * 1000)


OOD_WARNING_START = "This does not look like"


async def _check_errors(page, tally: Tally, what: str) -> None:
    if await page.locator("[data-testid=stException]").count():
        tally.errors.append(f"{what}: exception shown")
    else:
        for text in await page.locator("[data-testid=stAlertContentError]").all_inner_texts():
            # the trust panel's out-of-distribution warning is a designed message, drawn as an
            # error alert on purpose (about 5 % of in-distribution test images get it too)
            if OOD_WARNING_START not in text:
                tally.errors.append(f"{what}: {text[:120]}")
                break


async def user(browser, url: str, kind: Kind, interactions: int, tally: Tally, done=None, ctx=None):
    """Open ``kind``'s page on a new sample, then cycle sample / opacity / method; in ``ctx``
    (a context that visited before: a returning reviewer) or a new context (a first visit)."""
    context = ctx or await browser.new_context(viewport={"width": 1400, "height": 1100})
    try:
        page = await context.new_page()
        # Under load a rerun can take longer than Playwright's 30 s default.
        page.set_default_timeout(120_000)
        watcher = RunWatcher(page)
        index = kind.samples.next()
        start = time.perf_counter()
        try:
            await _open(page, watcher, url + kind.path.format(index=index), kind.ready_text)
            tally.loads.append(time.perf_counter() - start)
        except Exception as exc:  # noqa: BLE001 - a load test counts failures, it does not stop
            tally.errors.append(f"load {kind.path}: {type(exc).__name__}: {str(exc)[:120]}")
            return
        await _check_errors(page, tally, "load")
        method = 0
        for i in range(interactions):
            step = i % 3
            try:
                if step == 0:
                    box = page.locator(f".st-key-{kind.index_key} input")
                    new = str(kind.samples.next())

                    async def act(box=box, new=new):
                        await box.fill(new)
                        await box.press("Enter")

                elif step == 1:
                    thumb = page.locator(f".st-key-{kind.alpha_key}").get_by_role("slider").first
                    key = "ArrowRight" if (i // 3) % 2 == 0 else "ArrowLeft"

                    async def act(thumb=thumb, key=key):
                        await thumb.focus()
                        await thumb.press(key)

                else:
                    method = (method + 1) % len(kind.methods)
                    box = page.locator(f".st-key-{kind.method_key}")
                    # the option's title, alone or followed by " · this model's default"
                    name = re.compile(rf"^{re.escape(kind.methods[method])}( ·|$)")

                    async def act(box=box, name=name):
                        await choose_option(page, box, name, tally)

                seconds, rerun = await _rerun(watcher, act)
                if rerun:  # else the time is the wait for a request that never came
                    tally.actions.append(seconds)
                    what = ("sample", "opacity", "method")[step]
                    tally.by_action.setdefault(what, []).append(seconds)
                tally.no_rerun += not rerun
                tally.interactions += 1
                if done is not None:
                    done()
            except Exception as exc:  # noqa: BLE001
                tally.errors.append(f"interaction {i}: {type(exc).__name__}: {str(exc)[:120]}")
                shot = REPO / "test-artifacts" / f"app-load-error-{time.time():.0f}.png"
                with contextlib.suppress(Exception):
                    await page.screenshot(path=str(shot), full_page=True)
                    tally.errors[-1] += f" (screenshot {shot.name})"
                return
        await _check_errors(page, tally, "interactions")
    finally:
        await context.close()


def _kinds(args, url_run: str) -> tuple[Kind, Kind]:
    from core import data

    n_2d = len(data.load_raw_split(args.dataset_2d, "test", 28)[1])
    n_3d = len(data.load_raw_split(args.dataset_3d, "test", 28)[1])
    gradcam = Kind(
        path=f"/gradcam?run={url_run}&split=test&index={{index}}",
        index_key="gradcam_index",
        alpha_key="gradcam_alpha",
        method_key="gradcam_method",
        methods=("Grad-CAM", "Grad-CAM++", "LayerCAM"),
        ready_text="ms server time",
        samples=Samples(n_2d, args.seed),
    )
    volume = Kind(
        path=f"/volume?dataset={args.dataset_3d}&size=28&index={{index}}",
        index_key="volume_index",
        alpha_key="volume_alpha",
        method_key="volume_method",
        methods=("Grad-CAM", "Grad-CAM++"),
        ready_text="Slice redraw:",
        samples=Samples(n_3d, args.seed + 1),
    )
    return gradcam, volume


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


# --------------------------------------------------------------------------------------------
# Phases
# --------------------------------------------------------------------------------------------


async def concurrent(
    browser, url, server, kinds, k: int, interactions: int, cooldown: float, returning=False
):
    """K users at once; every third one on the 3D viewer. ``returning``: each user's browser
    opened the app once before (one at a time, not timed), so the bundle comes from its cache."""
    contexts = [None] * k
    if returning:
        for u in range(k):
            contexts[u] = await browser.new_context(viewport={"width": 1400, "height": 1100})
            page, kind = await contexts[u].new_page(), kinds[1] if u % 3 == 2 else kinds[0]
            await _open(page, RunWatcher(page), url + kind.path.format(index=0), kind.ready_text)
            await page.close()
    tally = Tally()
    rss0, cpu0, browser0 = server.rss_mb(), server.cpu_s(), browser_cpu_s()
    start = time.perf_counter()
    await asyncio.gather(
        *(
            user(browser, url, kinds[1] if u % 3 == 2 else kinds[0], interactions, tally, None, c)
            for u, c in enumerate(contexts)
        )
    )
    wall = time.perf_counter() - start
    cpu, browser = server.cpu_s() - cpu0, browser_cpu_s() - browser0
    rss1 = server.rss_mb()
    await asyncio.sleep(cooldown)
    ops = len(tally.loads) + tally.interactions
    return {
        "users": k,
        "returning": returning,
        "loads": len(tally.loads),
        "load_p50_s": _pct(tally.loads, 50),
        "load_p95_s": _pct(tally.loads, 95),
        "action_p50_s": _pct(tally.actions, 50),
        "action_p95_s": _pct(tally.actions, 95),
        "interactions": tally.interactions,
        "no_rerun": tally.no_rerun,
        "menu_retries": tally.menu_retries,
        "action_p50_p95_s": {k: (_pct(v, 50), _pct(v, 95)) for k, v in tally.by_action.items()},
        "errors": tally.errors,
        "rss_before_mb": rss0,
        "rss_after_mb": rss1,
        "rss_closed_mb": server.rss_mb(),
        "server_cpu_s": cpu,
        "cpu_per_op_s": cpu / ops if ops else float("nan"),
        "browser_cpu_s": browser,
        "wall_s": wall,
    }


async def soak(browser, url, server, kinds, users: int, total: int, cooldown: float):
    """``total`` interactions spread over ``users`` users; RSS sampled every 2 s."""
    # Warm-up: every user kind once, so the baseline holds TensorFlow, models and traced
    # functions (the fixed cost), not the growth.
    await concurrent(browser, url, server, kinds, min(users, 3), 3, 0)
    baseline, count, samples = server.rss_mb(), [0], []

    async def sampler():
        while True:
            samples.append((count[0], server.rss_mb()))
            await asyncio.sleep(2)

    task = asyncio.create_task(sampler())
    tally = Tally()
    per_user = max(1, total // users)

    def done():
        count[0] += 1

    cpu0, start = server.cpu_s(), time.perf_counter()
    await asyncio.gather(
        *(
            user(browser, url, kinds[1] if u % 3 == 2 else kinds[0], per_user, tally, done)
            for u in range(users)
        )
    )
    task.cancel()
    wall, cpu = time.perf_counter() - start, server.cpu_s() - cpu0
    end = server.rss_mb()
    samples.append((count[0], end))
    await asyncio.sleep(cooldown)
    closed = server.rss_mb()
    half = [r for n, r in samples if n >= count[0] / 2]
    return {
        "users": users,
        "interactions": count[0],
        "no_rerun": tally.no_rerun,
        "action_p50_p95_s": {k: (_pct(v, 50), _pct(v, 95)) for k, v in tally.by_action.items()},
        "errors": tally.errors,
        "rss_baseline_mb": baseline,
        "rss_end_mb": end,
        "rss_closed_mb": closed,
        "rss_max_mb": max(r for _, r in samples),
        "growth_mb": end - baseline,
        "kb_per_interaction": 1000 * (end - baseline) / max(1, count[0]),
        "growth_second_half_mb": (half[-1] - half[0]) if half else float("nan"),
        "action_p50_s": _pct(tally.actions, 50),
        "action_p95_s": _pct(tally.actions, 95),
        "server_cpu_s": cpu,
        "wall_s": wall,
        "samples": samples,
    }


async def calibrate(browser, url, server, kinds, n: int):
    """CPU-seconds per page load and per interaction, one user at a time (no overlap).

    A page load is measured twice per round: in a new browser context (a first visit: the
    browser fetches Streamlit's ~90 frontend files from the server) and as a new tab of one
    long-lived context (a returning reviewer: those files come from the browser's cache).

    Returns:
        The figures per measure, and how many interactions asked for no rerun (fallbacks).
    """
    out: dict[str, list[float]] = {}
    fallbacks = 0
    nginx = getattr(server, "nginx", None)  # behind nginx: its share of each first visit

    def nginx_cpu() -> float:
        return nginx.cpu_s() if nginx else 0.0

    for name, kind in (("gradcam", kinds[0]), ("volume", kinds[1])):
        loads, cached, slider, sample, nginx_loads = [], [], [], [], []
        returning = await browser.new_context(viewport={"width": 1400, "height": 1100})
        for i in range(n + 1):  # the first round fills the caches (models, traced functions)
            tally = Tally()
            context = await browser.new_context(viewport={"width": 1400, "height": 1100})
            page = await context.new_page()
            watcher = RunWatcher(page)
            cpu0, nginx0 = server.cpu_s(), nginx_cpu()
            await _open(
                page, watcher, url + kind.path.format(index=kind.samples.next()), kind.ready_text
            )
            await page.wait_for_timeout(300)  # the session's last messages
            load, nginx_load = server.cpu_s() - cpu0, nginx_cpu() - nginx0
            thumb = page.locator(f".st-key-{kind.alpha_key}").get_by_role("slider").first

            async def move(thumb=thumb):
                await thumb.focus()
                await thumb.press("ArrowRight")

            cpu0 = server.cpu_s()
            _, ran = await _rerun(watcher, move)
            fallbacks += not ran
            slider_cpu = server.cpu_s() - cpu0
            box = page.locator(f".st-key-{kind.index_key} input")
            new = str(kind.samples.next())

            async def change(box=box, new=new):
                await box.fill(new)
                await box.press("Enter")

            cpu0 = server.cpu_s()
            _, ran = await _rerun(watcher, change)
            fallbacks += not ran
            sample_cpu = server.cpu_s() - cpu0
            await _check_errors(page, tally, name)
            await context.close()
            page = await returning.new_page()
            cpu0 = server.cpu_s()
            await _open(
                page,
                RunWatcher(page),
                url + kind.path.format(index=kind.samples.next()),
                kind.ready_text,
            )
            await page.wait_for_timeout(300)
            cached_load = server.cpu_s() - cpu0
            await _check_errors(page, tally, name)
            await page.close()
            if i:
                loads.append(load)
                nginx_loads.append(nginx_load)
                cached.append(cached_load)
                slider.append(slider_cpu)
                sample.append(sample_cpu)
            if tally.errors:
                raise RuntimeError(f"calibration {name}: {tally.errors}")
        await returning.close()
        out[f"{name}_page_load"] = loads
        out[f"{name}_page_load_cached"] = cached
        out[f"{name}_slider"] = slider
        out[f"{name}_new_sample"] = sample
        if nginx:
            out[f"{name}_page_load_nginx_share"] = nginx_loads
    return out, fallbacks


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------


def _print(report: dict) -> None:
    print(f"\nload average at start: {report['loadavg_start']}, at end: {report['loadavg_end']}")
    print(f"server RSS idle after start: {report['rss_idle_mb']:.0f} MB")
    rows = report["concurrency"]
    if rows:
        print(
            "\n  K | loads | load p50 / p95 s | action p50 / p95 s | no rerun | errors | RSS before"
            " → after → closed MB | server CPU-s per op"
        )
        for r in rows:
            print(
                f"{r['users']:3d} | {r['loads']:5d} | "
                f"{r['load_p50_s']:6.2f} / {r['load_p95_s']:6.2f}"
                f" | {r['action_p50_s']:6.2f} / {r['action_p95_s']:6.2f}   | {r['no_rerun']:8d}"
                f" | {len(r['errors']):6d}"
                f" | {r['rss_before_mb']:5.0f} → {r['rss_after_mb']:5.0f} → "
                f"{r['rss_closed_mb']:5.0f}        | {r['cpu_per_op_s']:.2f}"
            )
            for err in r["errors"][:5]:
                print(f"      error: {err}")
        print("\n  K | wall s | server CPU-s | Chromium CPU-s (same cores) | menu re-clicks")
        for r in rows:
            print(
                f"{r['users']:3d} | {r['wall_s']:6.1f} | {r['server_cpu_s']:12.1f} | "
                f"{r['browser_cpu_s']:26.1f} | {r['menu_retries']}"
            )
    cal = report.get("calibration")
    if cal:
        print("\nserver CPU-seconds, one user at a time (median / max):")
        for name, values in cal.items():
            med, top = statistics.median(values), max(values)
            print(f"  {name:22s} {med:6.3f} / {top:6.3f}  n={len(values)}")
        print(f"  interactions that asked for no rerun: {report['calibration_no_rerun']}")
    s = report.get("soak")
    if s:
        print(
            f"\nsoak: {s['interactions']} interactions by {s['users']} users in "
            f"{s['wall_s']:.0f} s,"
            f" {len(s['errors'])} errors, {s['no_rerun']} asked for no rerun;"
            f" action p50/p95 {s['action_p50_s']:.2f}/"
            f"{s['action_p95_s']:.2f} s; server CPU {s['server_cpu_s']:.0f} s"
        )
        print(
            f"  RSS baseline {s['rss_baseline_mb']:.0f} MB → end {s['rss_end_mb']:.0f} MB "
            f"(+{s['growth_mb']:.0f} MB, {s['kb_per_interaction']:.0f} kB/interaction; second "
            f"half +{s['growth_second_half_mb']:.0f} MB) → {s['rss_closed_mb']:.0f} MB after "
            f"closing; max {s['rss_max_mb']:.0f} MB"
        )
        print(
            "  per action p50/p95 s: "
            + ", ".join(f"{k} {a:.2f}/{b:.2f}" for k, (a, b) in s["action_p50_p95_s"].items())
        )
        points = s["samples"]
        step = max(1, len(points) // 10)
        print(
            "  RSS along the soak (interactions: MB): "
            + ", ".join(f"{n}: {r:.0f}" for n, r in points[::step] + [points[-1]])
        )
        for err in s["errors"][:5]:
            print(f"      error: {err}")


@contextlib.contextmanager
def _serving(args, env: dict[str, str], log: Path):
    """Yield ``(url, server)``: Streamlit alone, or behind nginx with ``--proxy``."""
    if not args.proxy:
        with streamlit_server(env, log) as url:
            yield url, Server.on_port(int(url.rsplit(":", 1)[1]))
        return
    from deploy import nginx

    with nginx.serve(port=0, gzip_mode=args.gzip, env=env, log_dir=log.parent) as proxy:
        yield proxy.url, Proxied(Server(proxy.streamlit_pid), Server(proxy.nginx_pid))


async def _main_async(args) -> dict:
    from playwright.async_api import async_playwright

    env = {
        "JOBS_WORKER_AUTOSTART": "0",
        "JOBS_DB": str(REPO / "var" / "bench_jobs.sqlite"),
        **({"MALLOC_ARENA_MAX": args.malloc_arena_max} if args.malloc_arena_max else {}),
    }
    log = REPO / "test-artifacts" / "app-load-server.log"
    report: dict = {"loadavg_start": os.getloadavg(), "args": vars(args)}
    with _serving(args, env, log) as (url, server):
        await asyncio.sleep(2)
        report["rss_idle_mb"] = server.rss_mb()
        kinds = _kinds(args, args.run)
        async with async_playwright() as p:
            browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            niced = asyncio.create_task(keep_niced())
            report["calibration"] = {}
            if args.calibrate:
                report["calibration"], report["calibration_no_rerun"] = await calibrate(
                    browser, url, server, kinds, args.calibrate
                )
            report["concurrency"] = []
            for k in args.users:
                row = await concurrent(
                    browser, url, server, kinds, k, 3, args.cooldown, args.returning
                )
                report["concurrency"].append(row)
                print(
                    f"K={k} done: {json.dumps({a: b for a, b in row.items() if a != 'errors'})}",
                    flush=True,
                )
            if args.soak:
                report["soak"] = await soak(
                    browser, url, server, kinds, args.soak_users, args.soak, args.cooldown
                )
            niced.cancel()
            await browser.close()
    report["loadavg_end"] = os.getloadavg()
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, nargs="*", default=[1, 4, 8, 12])
    parser.add_argument("--soak", type=int, default=0, help="soak interactions (0: no soak)")
    parser.add_argument("--soak-users", type=int, default=8)
    parser.add_argument("--calibrate", type=int, default=5, help="sequential rounds per page")
    parser.add_argument("--cooldown", type=float, default=30.0, help="seconds after closing")
    parser.add_argument("--run", default="cnn2d_noaug", help="registry run for the Grad-CAM page")
    parser.add_argument("--dataset-2d", default="retinamnist", help="that run's dataset")
    parser.add_argument("--dataset-3d", default="adrenalmnist3d")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--malloc-arena-max", default="", help="MALLOC_ARENA_MAX for the server")
    parser.add_argument("--json", type=Path, help="also write the full report here")
    parser.add_argument("--proxy", action="store_true", help="serve through nginx (deploy/)")
    parser.add_argument(
        "--returning", action="store_true", help="K users whose browsers visited before"
    )
    parser.add_argument(
        "--gzip", choices=("static", "on", "off"), default="static", help="nginx's compression"
    )
    args = parser.parse_args(argv)
    report = asyncio.run(_main_async(args))
    _print(report)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
