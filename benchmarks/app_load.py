"""Clinic-day load test: K users in one Chromium against a real ``streamlit run app/Home.py``.

Each user opens the Grad-CAM explorer (``/gradcam?run=RUN&split=test&index=N``) or, every third
user, the 3D viewer (``/volume?dataset=FLAG&size=28&index=N``) on a new sample, then changes
sample, heatmap opacity and method in turn. Reported per K: p50/p95 wall time of page loads
and of interactions (browser action until Streamlit reports the run finished), errors, server
RSS before / after / ``--cooldown`` seconds after every tab closed, and server CPU-seconds per
page. Then a soak of ``--soak`` interactions by ``--soak-users`` users with RSS sampled along
the way, and a sequential calibration (one user, nothing else running) of CPU-seconds per
Grad-CAM page load, per slider interaction and per 3D page load.

Server figures are read from ``/proc``: RSS of the server process; CPU = user + system time of
the server, of its finished children (the PyVista renderer runs in a child per scene) and of
its live descendants.

Usage (from the repository root; the shipped registry has the runs named below)::

    MEDMNIST_ROOT=/path/to/npz .venv/bin/python -m benchmarks.app_load \\
        [--users 1 4 8 12] [--soak 2000] [--soak-users 8] [--calibrate 8] [--cooldown 30]

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

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")

# Records every change of Streamlit's script state with the page's clock, so a rerun that
# starts and ends between two polls is still seen (the harness waits for "running" after the
# action, then "notRunning").
OBSERVER_JS = """
window.__states = [];
new MutationObserver((muts) => {
  for (const m of muts) {
    window.__states.push([m.target.getAttribute('data-test-script-state'), performance.now()]);
  }
}).observe(document, {attributes: true, subtree: true,
                      attributeFilter: ['data-test-script-state']});
"""
RERUN_DONE_JS = """
(t0) => {
  const s = window.__states;
  let ran = false;
  for (const [state, t] of s) {
    if (t < t0) continue;
    if (state === 'running') ran = true;
    else if (ran && state === 'notRunning') return true;
  }
  const app = document.querySelector('[data-testid=stApp]');
  // No rerun seen within 60 s (the action changed nothing): count it as done, flagged. Under
  // heavy load a rerun can start seconds after the action, so this must not be short.
  return performance.now() - t0 > 60000 && app &&
         app.getAttribute('data-test-script-state') === 'notRunning' ? 'none' : false;
}
"""


# --------------------------------------------------------------------------------------------
# The server process, from /proc
# --------------------------------------------------------------------------------------------


def _stat(pid: int) -> list[str]:
    text = Path(f"/proc/{pid}/stat").read_text()
    return text[text.rindex(")") + 2 :].split()  # fields from 3 (state) on


def _children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int(_stat(int(entry.name))[1]) == pid:
                    out.append(int(entry.name))
            except (OSError, ValueError, IndexError):
                continue
    return out


@dataclass
class Server:
    """The ``streamlit run`` process serving ``url``."""

    pid: int

    @classmethod
    def on_port(cls, port: int) -> Server:
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                argv = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"streamlit" in b" ".join(argv) and str(port).encode() in argv:
                return cls(int(entry.name))
        raise RuntimeError(f"no streamlit process serves port {port}")

    def rss_mb(self) -> float:
        return int(Path(f"/proc/{self.pid}/statm").read_text().split()[1]) * PAGE / 1e6

    def cpu_s(self) -> float:
        """User + system seconds of the server, its reaped children and live descendants."""
        fields = _stat(self.pid)
        ticks = sum(int(v) for v in fields[11:15])  # utime stime cutime cstime
        todo = _children(self.pid)
        while todo:
            child = todo.pop()
            try:
                ticks += sum(int(v) for v in _stat(child)[11:13])
                todo += _children(child)
            except (OSError, ValueError, IndexError):
                continue
        return ticks / CLK_TCK


# --------------------------------------------------------------------------------------------
# One user
# --------------------------------------------------------------------------------------------


@dataclass
class Tally:
    loads: list[float] = field(default_factory=list)
    actions: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    no_rerun: int = 0
    interactions: int = 0


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


async def _rerun(page, action) -> tuple[float, bool]:
    t0 = await page.evaluate("performance.now()")
    start = time.perf_counter()
    await action()
    handle = await page.wait_for_function(RERUN_DONE_JS, arg=t0, timeout=180_000, polling=50)
    return time.perf_counter() - start, (await handle.json_value()) is True


async def _check_errors(page, tally: Tally, what: str) -> None:
    if await page.locator("[data-testid=stException]").count():
        tally.errors.append(f"{what}: exception shown")
    elif await page.locator("[data-testid=stAlertContentError]").count():
        text = await page.locator("[data-testid=stAlertContentError]").first.inner_text()
        tally.errors.append(f"{what}: {text[:120]}")


async def user(browser, url: str, kind: Kind, interactions: int, tally: Tally, done=None):
    """Open ``kind``'s page on a new sample, then cycle sample / opacity / method."""
    context = await browser.new_context(viewport={"width": 1400, "height": 1100})
    try:
        page = await context.new_page()
        # Under load a rerun can take longer than Playwright's 30 s default.
        page.set_default_timeout(120_000)
        await page.add_init_script(OBSERVER_JS)
        index = kind.samples.next()
        start = time.perf_counter()
        try:
            await page.goto(url + kind.path.format(index=index), wait_until="domcontentloaded")
            await page.get_by_text(kind.ready_text).first.wait_for(timeout=180_000)
            await page.wait_for_selector(
                "[data-testid=stApp][data-test-script-state=notRunning]", timeout=180_000
            )
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
                        await box.click()
                        await page.get_by_role("option", name=name).first.click()

                seconds, rerun = await _rerun(page, act)
                tally.actions.append(seconds)
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


async def concurrent(browser, url, server, kinds, k: int, interactions: int, cooldown: float):
    """K users at once; every third one on the 3D viewer."""
    tally = Tally()
    rss0, cpu0 = server.rss_mb(), server.cpu_s()
    start = time.perf_counter()
    await asyncio.gather(
        *(
            user(browser, url, kinds[1] if u % 3 == 2 else kinds[0], interactions, tally)
            for u in range(k)
        )
    )
    wall = time.perf_counter() - start
    cpu = server.cpu_s() - cpu0
    rss1 = server.rss_mb()
    await asyncio.sleep(cooldown)
    ops = len(tally.loads) + tally.interactions
    return {
        "users": k,
        "loads": len(tally.loads),
        "load_p50_s": _pct(tally.loads, 50),
        "load_p95_s": _pct(tally.loads, 95),
        "action_p50_s": _pct(tally.actions, 50),
        "action_p95_s": _pct(tally.actions, 95),
        "interactions": tally.interactions,
        "no_rerun": tally.no_rerun,
        "errors": tally.errors,
        "rss_before_mb": rss0,
        "rss_after_mb": rss1,
        "rss_closed_mb": server.rss_mb(),
        "server_cpu_s": cpu,
        "cpu_per_op_s": cpu / ops if ops else float("nan"),
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
    """CPU-seconds per page load and per interaction, one user at a time (no overlap)."""
    out: dict[str, list[float]] = {}
    for name, kind in (("gradcam", kinds[0]), ("volume", kinds[1])):
        loads, slider, sample = [], [], []
        for i in range(n + 1):  # the first round fills the caches (models, traced functions)
            tally = Tally()
            context = await browser.new_context(viewport={"width": 1400, "height": 1100})
            page = await context.new_page()
            await page.add_init_script(OBSERVER_JS)
            cpu0 = server.cpu_s()
            await page.goto(
                url + kind.path.format(index=kind.samples.next()), wait_until="domcontentloaded"
            )
            await page.get_by_text(kind.ready_text).first.wait_for(timeout=180_000)
            await page.wait_for_selector(
                "[data-testid=stApp][data-test-script-state=notRunning]", timeout=180_000
            )
            await page.wait_for_timeout(300)  # the session's last messages
            load = server.cpu_s() - cpu0
            thumb = page.locator(f".st-key-{kind.alpha_key}").get_by_role("slider").first

            async def move(thumb=thumb):
                await thumb.focus()
                await thumb.press("ArrowRight")

            cpu0 = server.cpu_s()
            await _rerun(page, move)
            slider_cpu = server.cpu_s() - cpu0
            box = page.locator(f".st-key-{kind.index_key} input")
            new = str(kind.samples.next())

            async def change(box=box, new=new):
                await box.fill(new)
                await box.press("Enter")

            cpu0 = server.cpu_s()
            await _rerun(page, change)
            sample_cpu = server.cpu_s() - cpu0
            await _check_errors(page, tally, name)
            await context.close()
            if i:
                loads.append(load)
                slider.append(slider_cpu)
                sample.append(sample_cpu)
            if tally.errors:
                raise RuntimeError(f"calibration {name}: {tally.errors}")
        out[f"{name}_page_load"] = loads
        out[f"{name}_slider"] = slider
        out[f"{name}_new_sample"] = sample
    return out


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------


def _print(report: dict) -> None:
    print(f"\nload average at start: {report['loadavg_start']}, at end: {report['loadavg_end']}")
    print(f"server RSS idle after start: {report['rss_idle_mb']:.0f} MB")
    rows = report["concurrency"]
    if rows:
        print(
            "\n  K | loads | load p50 / p95 s | action p50 / p95 s | errors | RSS before → after "
            "→ closed MB | server CPU-s per op"
        )
        for r in rows:
            print(
                f"{r['users']:3d} | {r['loads']:5d} | "
                f"{r['load_p50_s']:6.2f} / {r['load_p95_s']:6.2f}"
                f" | {r['action_p50_s']:6.2f} / {r['action_p95_s']:6.2f}   | {len(r['errors']):6d}"
                f" | {r['rss_before_mb']:5.0f} → {r['rss_after_mb']:5.0f} → "
                f"{r['rss_closed_mb']:5.0f}        | {r['cpu_per_op_s']:.2f}"
            )
            for err in r["errors"][:5]:
                print(f"      error: {err}")
    cal = report.get("calibration")
    if cal:
        print("\nserver CPU-seconds, one user at a time (median / max):")
        for name, values in cal.items():
            med, top = statistics.median(values), max(values)
            print(f"  {name:22s} {med:6.3f} / {top:6.3f}  n={len(values)}")
    s = report.get("soak")
    if s:
        print(
            f"\nsoak: {s['interactions']} interactions by {s['users']} users in "
            f"{s['wall_s']:.0f} s,"
            f" {len(s['errors'])} errors; action p50/p95 {s['action_p50_s']:.2f}/"
            f"{s['action_p95_s']:.2f} s; server CPU {s['server_cpu_s']:.0f} s"
        )
        print(
            f"  RSS baseline {s['rss_baseline_mb']:.0f} MB → end {s['rss_end_mb']:.0f} MB "
            f"(+{s['growth_mb']:.0f} MB, {s['kb_per_interaction']:.0f} kB/interaction; second "
            f"half +{s['growth_second_half_mb']:.0f} MB) → {s['rss_closed_mb']:.0f} MB after "
            f"closing; max {s['rss_max_mb']:.0f} MB"
        )
        points = s["samples"]
        step = max(1, len(points) // 10)
        print(
            "  RSS along the soak (interactions: MB): "
            + ", ".join(f"{n}: {r:.0f}" for n, r in points[::step] + [points[-1]])
        )
        for err in s["errors"][:5]:
            print(f"      error: {err}")


async def _main_async(args) -> dict:
    from playwright.async_api import async_playwright

    env = {
        "JOBS_WORKER_AUTOSTART": "0",
        "JOBS_DB": str(REPO / "var" / "bench_jobs.sqlite"),
        **({"MALLOC_ARENA_MAX": args.malloc_arena_max} if args.malloc_arena_max else {}),
    }
    log = REPO / "test-artifacts" / "app-load-server.log"
    report: dict = {"loadavg_start": os.getloadavg(), "args": vars(args)}
    with streamlit_server(env, log) as url:
        server = Server.on_port(int(url.rsplit(":", 1)[1]))
        await asyncio.sleep(2)
        report["rss_idle_mb"] = server.rss_mb()
        kinds = _kinds(args, args.run)
        async with async_playwright() as p:
            browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            report["calibration"] = {}
            if args.calibrate:
                report["calibration"] = await calibrate(browser, url, server, kinds, args.calibrate)
            report["concurrency"] = []
            for k in args.users:
                row = await concurrent(browser, url, server, kinds, k, 3, args.cooldown)
                report["concurrency"].append(row)
                print(
                    f"K={k} done: {json.dumps({a: b for a, b in row.items() if a != 'errors'})}",
                    flush=True,
                )
            if args.soak:
                report["soak"] = await soak(
                    browser, url, server, kinds, args.soak_users, args.soak, args.cooldown
                )
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
    args = parser.parse_args(argv)
    report = asyncio.run(_main_async(args))
    _print(report)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
