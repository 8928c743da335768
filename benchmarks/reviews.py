"""Review storage and export timings: ``python -m benchmarks.reviews [--rows N] [--writers K]``.

Prints, in a temporary folder: one verdict's save (median over single saves), K processes
saving at once (all rows must arrive), reading the current verdicts of N rows, the CSV export of
N rows, and one PDF case report (2D and 3D). The machine load (``os.getloadavg``) is printed
alongside: on a shared machine the figures are noisy.
"""

from __future__ import annotations

import argparse
import dataclasses
import multiprocessing
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from core.reviews import ReviewStore, Verdict, case_report_pdf, csv_bytes, report_panels

BASE = Verdict(
    reviewer="bench",
    run="bench_run",
    dataset="retinamnist",
    split="test",
    sample_index=0,
    predicted=1,
    probability=0.5,
    verdict="agree",
    note="=formula-like note",
)


def _writer(path: str, name: str, count: int) -> None:
    store = ReviewStore(path)
    for i in range(count):
        store.add(dataclasses.replace(BASE, reviewer=name, sample_index=i))


def main(argv: list[str] | None = None) -> int:
    """Run the timings and print them.

    Args:
        argv: ``--rows N`` (rows for the read/CSV timings), ``--writers K`` (processes).

    Returns:
        0; 1 when concurrent writers lost a row.
    """
    parser = argparse.ArgumentParser(prog="python -m benchmarks.reviews")
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--writers", type=int, default=4)
    parser.add_argument("--per-writer", type=int, default=200)
    args = parser.parse_args(argv)
    print(f"load average before: {os.getloadavg()}")
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "reviews.sqlite")
        store = ReviewStore(path)
        store.check()
        single = []
        for i in range(200):
            start = time.perf_counter()
            store.add(dataclasses.replace(BASE, sample_index=i))
            single.append((time.perf_counter() - start) * 1000)
        print(f"one save: median {statistics.median(single):.2f} ms, max {max(single):.2f} ms")

        ctx = multiprocessing.get_context("spawn")
        procs = [
            ctx.Process(target=_writer, args=(path, f"w{k}", args.per_writer))
            for k in range(args.writers)
        ]
        start = time.perf_counter()
        for proc in procs:
            proc.start()
        for proc in procs:
            proc.join()
        wall = time.perf_counter() - start
        got = sum(r.reviewer.startswith("w") for r in store.rows())
        want = args.writers * args.per_writer
        print(
            f"{args.writers} processes x {args.per_writer} saves at once: {got}/{want} rows "
            f"stored, {wall:.2f} s wall (incl. interpreter start-up)"
        )

        missing = args.rows - len(store.rows())
        _writer(path, "bulk", max(0, missing))
        start = time.perf_counter()
        current = store.latest(run="bench_run", split="test")
        latest_ms = (time.perf_counter() - start) * 1000
        start = time.perf_counter()
        rows = store.rows(run="bench_run")
        read_ms = (time.perf_counter() - start) * 1000
        print(
            f"current verdicts ({len(current)} of {len(rows)} rows, what a page rerun reads): "
            f"{latest_ms:.0f} ms; the whole trail (the CSV's input): {read_ms:.0f} ms"
        )
        start = time.perf_counter()
        data = csv_bytes(rows)
        print(
            f"CSV of {len(rows)} rows: {(time.perf_counter() - start) * 1000:.0f} ms, "
            f"{len(data) / 1024:.0f} kB"
        )
    rng = np.random.default_rng(0)
    for name, image, heat, three_d in (
        ("2D 28 px", rng.random((28, 28, 3)), rng.random((28, 28)), False),
        ("3D 28³", rng.random((28, 28, 28, 1)), rng.random((28, 28, 28)), True),
    ):
        verdict = dataclasses.replace(BASE, id=1, created_at="2026-01-01T00:00:00Z")
        case_report_pdf(report_panels(image, heat, three_d), verdict)  # warm-up (fonts)
        start = time.perf_counter()
        pdf = case_report_pdf(report_panels(image, heat, three_d), verdict)
        print(
            f"PDF report {name}: {(time.perf_counter() - start) * 1000:.0f} ms, "
            f"{len(pdf) / 1024:.0f} kB"
        )
    print(f"load average after: {os.getloadavg()}")
    return 0 if got == want else 1


if __name__ == "__main__":
    raise SystemExit(main())
