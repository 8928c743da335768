"""Smoke test of the benchmark entry point: it runs, writes its JSON and prints the table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import run as bench


@pytest.mark.slow
def test_gradcam_benchmark_smoke(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "latest.json"
    args = ["--quick", "--runs", "2", "--sections", "gradcam", "--families", "cnn2d", "cnn3d"]
    assert bench.main([*args, "--output", str(out)]) == 0
    results = json.loads(out.read_text())
    for name in ("cnn2d", "cnn3d"):
        r = results["gradcam"][name]
        assert r["compiled_ms"] > 0 and r["tf_keras_vis_ms"] > 0
        # the same Grad-CAM as tf-keras-vis: equal on the grid and, with its resize, upsampled
        assert r["corr_grid"] > 0.999 and r["corr_aligned"] > 0.99, r
    printed = capsys.readouterr().out
    assert "r (same resize)" in printed and "| cnn3d |" in printed
