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


def test_vgg_sweep_configs_are_valid_and_table_is_computed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    from benchmarks import vgg_sweep
    from core import registry, training

    for variant in vgg_sweep.VARIANTS:  # every variant is a valid TrainConfig
        assert vgg_sweep._config(variant, 0).model == "vgg16"
    monkeypatch.setenv("TRAINED_MODELS_DIR", str(tmp_path / "tm"))
    monkeypatch.setattr(vgg_sweep, "OUT", tmp_path / "sweep.json")
    trained = []

    def fake_run(cfg, output_root):  # stands in for a real training run
        trained.append(cfg.name)
        run = Path(output_root) / cfg.name
        run.mkdir(parents=True)
        auc = 0.70 + 0.01 * cfg.seed
        metrics = {"seed": cfg.seed, "epochs_run": 3, "wall_time_s": 1.0}
        metrics |= {"val": {"auc": auc, "acc": 0.5}, "test": {"auc": auc, "acc": 0.5}}
        registry.write_json_atomic(run / "metrics.json", metrics)
        return run

    monkeypatch.setattr(training, "run", fake_run)
    assert vgg_sweep.main(["--variants", "ft3", "--seeds", "0", "1", "2"]) == 0
    assert trained == ["ft3-s0", "ft3-s1", "ft3-s2"]
    assert "| ft3 | 0.7100 ± 0.0100 | 0.5000 ± 0.0000 |" in capsys.readouterr().out
    saved = json.loads((tmp_path / "sweep.json").read_text())
    assert saved["ft3"]["changes"] == {"fine_tune_blocks": 3}
    # a second call resumes: nothing is retrained
    assert vgg_sweep.main(["--variants", "ft3", "--seeds", "0", "1", "2"]) == 0
    assert len(trained) == 3


def test_vgg_sweep_adopt_copies_matching_runs_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    from benchmarks import vgg_sweep
    from core import registry

    monkeypatch.setenv("TRAINED_MODELS_DIR", str(tmp_path / "tm"))
    # "same" has the vgg16_ft2 arm's config; "ft3" differs in fine_tune_blocks
    monkeypatch.setitem(vgg_sweep.VARIANTS, "same", {})
    sweep = tmp_path / "tm" / ".staging" / "sweep"
    for variant in ("same", "ft3"):
        for seed in (0, 1):
            run = sweep / f"{variant}-s{seed}"
            run.mkdir(parents=True)
            cfg = vgg_sweep._config(variant, seed).to_dict()
            registry.write_json_atomic(run / "config.json", cfg)
            registry.write_json_atomic(run / "metrics.json", {"seed": seed})
    stage = tmp_path / "tm" / ".staging"
    assert vgg_sweep.main(["--adopt", "ft3", "vgg16_ft2", "--seeds", "0", "1"]) == 2
    assert "fine_tune_blocks': (3, 2)" in capsys.readouterr().err
    assert not (stage / "vgg16_ft2-s0").exists()
    assert vgg_sweep.main(["--adopt", "same", "vgg16_ft2", "--seeds", "0", "1", "2"]) == 2
    assert "same-s2 has no finished run" in capsys.readouterr().err
    assert not (stage / "vgg16_ft2-s0").exists()  # nothing copied when one seed is missing
    assert vgg_sweep.main(["--adopt", "same", "vgg16_ft2", "--seeds", "0", "1"]) == 0
    cfg = registry.read_json(stage / "vgg16_ft2-s1", "config.json")
    assert cfg["name"] == "vgg16_ft2-s1" and cfg["adopted_from"] == "sweep/same-s1"
    assert registry.read_json(stage / "vgg16_ft2-s1", "metrics.json") == {"seed": 1}
    assert vgg_sweep.main(["--adopt", "same", "vgg16_ft2", "--seeds", "0"]) == 2
    assert "exists" in capsys.readouterr().err
