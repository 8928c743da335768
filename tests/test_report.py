"""benchmarks.report on a tiny synthetic registry: numbers, verdicts, missing pieces, figures.

The registry is written as JSON only (no TensorFlow, no training), with seed metrics chosen so
that every mean, standard deviation and verdict in the report can be checked by hand.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from benchmarks import report
from core.experiments import ARMS

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _write(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


def make_run(
    root: Path,
    arm: str,
    test_auc: list[float],
    test_acc: list[float],
    val_auc: list[float] | None = None,
    reference: int = 1,
    wall: list[float] | None = None,
    history: bool = True,
) -> Path:
    """Write a promoted reference run of ``arm`` with one seed per list entry."""
    spec = ARMS[arm]
    cfg = dict(spec["config"])
    n = len(test_auc)
    val_auc = val_auc or [0.70 + 0.01 * i for i in range(n)]
    wall = wall or [100.0 + 10 * i for i in range(n)]
    seeds = [
        {
            "seed": i,
            "val": {"auc": val_auc[i], "acc": 0.5},
            "test": {"auc": test_auc[i], "acc": test_acc[i]},
            "run": f"{arm}-s{i}",
            "epochs_run": 20 + i,
            "best_epoch": 10 + i,
            "wall_time_s": wall[i],
            "s_per_epoch": wall[i] / (20 + i),
        }
        for i in range(n)
    ]
    ref = seeds[reference]
    run = root / arm
    labels = ["normal", "hyperplasia"] if cfg["dataset"] == "adrenalmnist3d" else list("01234")
    _write(
        run / "config.json",
        {
            **cfg,
            "seed": reference,
            "size": 28,
            "name": arm,
            "arm": arm,
            "experiment": spec["experiment"],
            "variant": spec["label"],
            "labels": labels,
            "task": "binary-class" if len(labels) == 2 else "ordinal-regression",
        },
    )
    _write(
        run / "metrics.json",
        {
            "val": ref["val"],
            "test": ref["test"],
            "seed": reference,
            "epochs_run": 21,
            "best_epoch": 11,
            "wall_time_s": ref["wall_time_s"],
            "s_per_epoch": 5.0,
            "params": 12345,
            "trainable_params": 12000,
            "versions": {"tensorflow": "2.21.0"},
            "seeds": seeds,
            "summary": {"n_seeds": n, "reference_seed": reference},
        },
    )
    if history:
        _write(
            run / "history.json",
            {
                "loss": [1.0, 0.8, 0.7],
                "val_auc": [0.6, 0.7, 0.68],
                "val_acc": [0.4, 0.5, 0.5],
                "lr": [1e-3] * 3,
            },
        )
    roc = [
        {"label": lab, "fpr": [0.0, 0.5, 1.0], "tpr": [0.0, 0.8, 1.0], "auc": 0.8}
        for lab in labels[-2:]
    ]
    _write(
        run / "evaluation.json",
        {
            "auc": ref["test"]["auc"],
            "acc": ref["test"]["acc"],
            "n": 400 if len(labels) > 2 else 298,
            "roc": roc,
        },
    )
    return run


def quant_results(auc: float = 0.80) -> dict[str, Any]:
    def mode(size: int, delta: float, ok: bool = True, conv3d: int = 0) -> dict[str, Any]:
        if not ok:
            return {"ok": False, "error": "RuntimeError: converter exploded"}
        return {
            "ok": True,
            "size_bytes": size,
            "size_ratio": 400_000 / size,
            "test": {"auc": auc + delta, "acc": 0.7},
            "auc_delta": delta,
            "acc_delta": 0.0,
            "latency_ms": 0.5,
            "speedup": 2.0,
            "agreement": 0.97,
            "file": "quantized/x.tflite",
            "notes": [],
            "ops": {
                "float_ops": {"CONV_3D": conv3d} if conv3d else {},
                "fully_integer": not conv3d,
            },
        }

    return {
        "task": "binary-class",
        "n_test": 298,
        "float": {
            "size_bytes": 400_000,
            "keras_size_bytes": 500_000,
            "test": {"auc": auc, "acc": 0.7},
            "latency_ms": 1.0,
        },
        "modes": {
            "dynamic": mode(120_000, -0.001),
            "int8": mode(110_000, -0.0123, conv3d=3),
            "qat": mode(0, 0, ok=False),
        },
    }


def explain_results() -> dict[str, Any]:
    summary = {
        "n": 100,
        "energy_in_mask_mean": 0.6,
        "mask_area_mean": 0.2,
        "energy_over_area": 3.0,
        "deletion_auc_salient_mean": 0.31,
        "deletion_auc_random_mean": 0.52,
        "zero_maps": 0,
    }
    return {
        "run": "cnn3d",
        "gradcam": summary,
        "gradcam++": {**summary, "energy_in_mask_mean": 0.5},
    }


@pytest.fixture
def fake_registry(tmp_path: Path) -> Path:
    root = tmp_path / "trained_models"
    # 3D: means 0.85 / 0.80 clear the ResNet-50+3D target (0.828 / 0.745) but not the stretch
    # ACC (0.802).
    make_run(root, "cnn3d", [0.84, 0.85, 0.86], [0.79, 0.80, 0.81])
    _write(root / "cnn3d" / "quantized" / "results.json", quant_results(0.85))
    _write(root / "cnn3d" / "explain.json", explain_results())
    # augmentation: 0.72 ± 0.02 vs 0.70 ± 0.02 → Δ 0.02, SE sqrt(2·0.0004/3) = 0.01633: within noise
    make_run(root, "cnn2d_aug", [0.70, 0.72, 0.74], [0.50, 0.52, 0.54])
    # no augmentation: lower test scores but the higher validation AUC, so it is the cnn2d family's
    # best model (selection never looks at the test split)
    make_run(root, "cnn2d_noaug", [0.68, 0.70, 0.72], [0.48, 0.50, 0.52], val_auc=[0.76] * 3)
    # VGG16: ft1 has the better validation AUC and reaches 0.76 / 0.55 ≥ 0.755 / 0.545;
    # ft2 has a higher test AUC but a lower validation AUC and must not be chosen.
    make_run(root, "vgg16_frozen", [0.70, 0.71, 0.72], [0.50, 0.51, 0.52], val_auc=[0.7] * 3)
    make_run(root, "vgg16_ft1", [0.75, 0.76, 0.77], [0.54, 0.55, 0.56], val_auc=[0.80] * 3)
    make_run(root, "vgg16_ft2", [0.79, 0.80, 0.81], [0.57, 0.58, 0.59], val_auc=[0.75] * 3)
    # resnet is deliberately missing: "not run yet"
    # an ad-hoc run that belongs to no experiment
    _write(root / "adhoc" / "config.json", {"dataset": "retinamnist", "model": "cnn2d"})
    _write(
        root / "adhoc" / "metrics.json",
        {"val": {"auc": 0.5, "acc": 0.5}, "test": {"auc": 0.5, "acc": 0.5}},
    )
    return root


def _build(root: Path, tmp_path: Path) -> tuple[str, Path]:
    out = tmp_path / "docs" / "RESULTS.md"
    text = report.build_report(root, out, overlays=False)
    assert out.read_text() == text
    return text, out


def _line_with(text: str, *needles: str) -> str:
    for line in text.splitlines():
        if all(n in line for n in needles):
            return line
    raise AssertionError(f"no line contains {needles}")


def test_stat_and_difference_numbers() -> None:
    s = report.stat([0.70, 0.72, 0.74])
    assert s.mean == pytest.approx(0.72)
    assert s.std == pytest.approx(0.02)  # sample std, ddof=1
    assert s.fmt() == "0.7200 ± 0.0200"
    assert report.stat([0.5]).fmt() == "0.5000 (1 seed)"
    assert report.stat([]) is None
    d = report.difference(s, report.stat([0.68, 0.70, 0.72]))
    assert d.diff == pytest.approx(0.02)
    assert d.se == pytest.approx(math.sqrt(2 * 0.02**2 / 3))
    assert d.within_noise is True
    big = report.difference(report.stat([0.80, 0.81, 0.82]), s)
    assert big.within_noise is False and big.t > 2
    assert report.difference(report.stat([0.8]), s).within_noise is None
    assert report.binomial_se(0.5, 400) == pytest.approx(0.025)


def test_report_tables_and_verdicts(fake_registry: Path, tmp_path: Path) -> None:
    text, _ = _build(fake_registry, tmp_path)
    assert "the **median seed by validation AUC**" in text and "3 seeds per arm" in text
    # mean ± std over seeds, with the shipped (reference) seed's own numbers beside them
    row = _line_with(text, "`cnn2d_aug`", "ours")
    assert "0.7200 ± 0.0200" in row and "0.5200 ± 0.0200" in row and "seed 1" in row
    assert "0.7200 / 0.5200" in row
    row = _line_with(text, "`cnn3d`", "ours")
    assert "0.8500 ± 0.0100" in row and "0.8000 ± 0.0100" in row
    # published baselines from core.info.PUBLISHED beside ours
    assert "ResNet-50 + 3D" in text and "0.8280" in text and "0.7450" in text
    assert "Google AutoML Vision" in text and "0.7500" in text
    # 3D verdicts: target met, stretch only partly (ACC 0.800 < 0.802)
    assert "**Target (beat ResNet-50 + 3D: 0.828 AUC / 0.745 ACC): met**" in text
    stretch = _line_with(text, "**Stretch (beat the best published figures: 0.839 AUC by ResNet-18")
    assert "0.802 ACC by auto-sklearn" in stretch and "partly met (AUC only)" in stretch
    # augmentation difference and its spread
    diff = _line_with(text, "test AUC", "+0.0200 ± 0.0163")
    assert "within noise" in diff
    # VGG16: selection by validation AUC picks ft1, which reaches the target
    assert "Best variant chosen by mean validation AUC: `vgg16_ft1`" in text
    assert "Target (best VGG16 variant ≥ 0.755 AUC and ≥ 0.545 ACC): met** with `vgg16_ft1`" in text
    assert "`vgg16_ft2`" in _line_with(text, "not selected")
    # missing arm and ad-hoc run
    assert "not run yet" in _line_with(text, "`resnet`", "retinamnist")
    assert "1 other run(s)" in text
    # wall time: sum of the seeds' wall_time_s (100 + 110 + 120 = 330 s)
    assert "5 min 30 s" in _line_with(text, "`cnn3d`", "20, 21, 22")
    # commentary numbers are computed, not typed
    assert "Augmentation raised the cnn2d test AUC on retinamnist by 0.0200" in text
    missing = re.search(r"arms have results; (.*?) (?:is|are) not run yet", text)
    assert missing is not None
    assert "`resnet`" in missing.group(1) and "`cnn3d`" not in missing.group(1)
    assert "binomial standard error of 0.025" in text


def test_a_seed_run_inside_an_ensemble_is_named_not_counted_as_unexplained(
    fake_registry: Path, tmp_path: Path
) -> None:
    """cnn3d_s1 ships only inside ensembles: the headline names it and its ensembles; a truly
    loose run is still counted apart."""
    seed_run = fake_registry / "cnn3d_s1"
    _write(seed_run / "config.json", {"dataset": "adrenalmnist3d", "model": "cnn3d"})
    _write(seed_run / "metrics.json", {"val": {"auc": 0.8, "acc": 0.8}})
    for name in ("ens_a", "ens_b"):
        _write(
            fake_registry / name / "ensemble.json",
            {"dataset": "adrenalmnist3d", "kind": "ensemble", "members": ["cnn3d", "cnn3d_s1"]},
        )
        _write(fake_registry / name / "metrics.json", {"val": {"auc": 0.8}, "test": {"auc": 0.8}})
    text, _ = _build(fake_registry, tmp_path)
    line = _line_with(text, "ship as ensemble members only")
    assert line.startswith("1 further run(s)") and "cnn3d_s1 in ens_a, ens_b" in line
    assert "adhoc" not in line
    assert "1 other run(s) in the registry belong to no experiment" in text  # adhoc


def test_quantization_and_alignment_sections(fake_registry: Path, tmp_path: Path) -> None:
    text, out = _build(fake_registry, tmp_path)
    int8 = _line_with(text, "| int8 |")
    assert "107.4 KB" in int8 and "3.64" in int8 and "0.8377" in int8 and "-0.0123" in int8
    assert "3 Conv3D op(s) stay float32" in int8
    assert "failed" in _line_with(text, "| qat |") and "converter exploded" in text
    # families whose best run has no quantized results yet
    assert "quantization not run yet" in _line_with(text, "`vgg16_ft1` (best vgg16)")
    assert "quantization not run yet" in _line_with(text, "`cnn2d_noaug` (best cnn2d)")
    # alignment table: values from explain.json, missing runs say so
    assert "3.00" in _line_with(text, "`cnn3d`", "| gradcam |")
    assert "not run yet" in _line_with(text, "`vgg16_frozen`", "| – |")
    assert "60% of its Grad-CAM energy" in text and "3.00× a uniform map" in text
    assert "skipped (report generated with --no-overlays)" in text
    assert "int8 is the smallest (3.6× smaller" in text


def test_figures_are_small_pngs(fake_registry: Path, tmp_path: Path) -> None:
    text, out = _build(fake_registry, tmp_path)
    fig_dir = out.parent / "results"
    names = sorted(p.name for p in fig_dir.iterdir())
    assert names == ["quantization.png", "roc_curves.png", "training_curves.png"]
    for path in fig_dir.iterdir():
        assert path.read_bytes()[:8] == PNG_MAGIC
        assert path.stat().st_size < 400_000
        assert f"](results/{path.name})" in text
    assert sum(p.stat().st_size for p in fig_dir.iterdir()) < 2_000_000


def test_empty_registry_renders_not_run(tmp_path: Path) -> None:
    text, out = _build(tmp_path / "nothing_here", tmp_path)
    assert "0 of" in text
    for arm in ARMS:
        assert "not run yet" in _line_with(text, f"`{arm}`")
    assert "Training curves: not run yet" in text
    assert "Quantization: not run yet" in text
    assert "every experiment is not run yet" in text
    assert not list((out.parent / "results").glob("*.png"))


def test_stale_figures_removed_and_missing_history(fake_registry: Path, tmp_path: Path) -> None:
    out = tmp_path / "docs" / "RESULTS.md"
    stale = out.parent / "results" / "gradcam_examples.png"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(PNG_MAGIC)
    for arm in ARMS:
        (fake_registry / arm / "history.json").unlink(missing_ok=True)
    (fake_registry / "cnn3d" / "quantized" / "results.json").write_text("{not json")
    text = report.build_report(fake_registry, out, overlays=False)
    assert not stale.exists()
    assert "Training curves: not run yet" in text
    assert "`cnn3d` (best cnn3d): quantization not run yet" in text


def test_single_seed_arm_has_no_spread(tmp_path: Path) -> None:
    root = tmp_path / "tm"
    make_run(root, "cnn2d_aug", [0.75], [0.55], reference=0)
    make_run(root, "cnn2d_noaug", [0.70], [0.50], reference=0)
    text, _ = _build(root, tmp_path)
    assert "0.7500 (1 seed)" in text
    assert "spread unknown" in _line_with(text, "test AUC", "+0.0500")


def test_cli_writes_report(fake_registry: Path, tmp_path: Path) -> None:
    out = tmp_path / "r" / "RESULTS.md"
    assert report.main(["--registry", str(fake_registry), "--out", str(out), "--no-overlays"]) == 0
    assert out.is_file() and (out.parent / "results" / "roc_curves.png").is_file()


@pytest.mark.slow
def test_gradcam_examples_from_real_models(
    synthetic_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Grad-CAM overlays come from models saved in the registry (random weights, no training)."""
    from core import info, registry
    from core.models import build_model, input_shape_for

    root = tmp_path / "trained_models"
    for arm, val in (("cnn3d", 0.8), ("cnn2d_aug", 0.7)):
        cfg = ARMS[arm]["config"]
        flag = cfg["dataset"]
        model = build_model(
            cfg["model"],
            input_shape_for(cfg["model"], flag),
            info.num_classes(flag),
            info.task(flag),
        )
        seeds = [
            {
                "seed": 0,
                "val": {"auc": val, "acc": 0.5},
                "test": {"auc": 0.6, "acc": 0.5},
                "wall_time_s": 1.0,
                "epochs_run": 1,
            }
        ]
        registry.save_run(
            model,
            {**cfg, "arm": arm, "experiment": ARMS[arm]["experiment"], "seed": 0},
            {"loss": [1.0], "val_auc": [val], "val_acc": [0.5]},
            {"val": seeds[0]["val"], "test": seeds[0]["test"], "seed": 0, "seeds": seeds},
            root=root,
            name=arm,
        )
    out = tmp_path / "docs" / "RESULTS.md"
    text = report.build_report(root, out, samples=2)
    png = out.parent / "results" / "gradcam_examples.png"
    assert png.read_bytes()[:8] == PNG_MAGIC, text
    assert "](results/gradcam_examples.png)" in text
    assert "middle axial slice" in text
    # the two rows really are different models: cnn3d (3D) and cnn2d_aug (2D)
    import matplotlib.image as mpimg

    assert np.asarray(mpimg.imread(png)).shape[0] > 200


def test_reproduce_selects_by_validation_auc(fake_registry: Path) -> None:
    from benchmarks import reproduce

    # best of each family by mean validation AUC: cnn2d_noaug (not the better-testing cnn2d_aug),
    # vgg16_ft1 (not the better-testing vgg16_ft2); resnet was never run
    names = [p.name for p in reproduce.quantize_targets(fake_registry)]
    assert names == ["cnn2d_noaug", "cnn3d", "vgg16_ft1"]
    # a partial rerun still picks the family's best among all its arms
    assert [p.name for p in reproduce.quantize_targets(fake_registry, ["vgg16_frozen"])] == [
        "vgg16_ft1"
    ]
    runs = [p.name for p in reproduce.reference_runs(fake_registry)]
    assert runs == ["cnn3d", "cnn2d_aug", "cnn2d_noaug", "vgg16_frozen", "vgg16_ft1", "vgg16_ft2"]
    assert [p.name for p in reproduce.reference_runs(fake_registry, ["resnet", "cnn3d"])] == [
        "cnn3d"
    ]


def test_reproduce_skips_finished_steps(fake_registry: Path, capsys: pytest.CaptureFixture) -> None:
    from benchmarks import reproduce

    # cnn3d already has dynamic and int8 but its qat failed: only a complete set is skipped
    assert reproduce._has_results(fake_registry / "cnn3d", ["dynamic", "int8"])
    assert not reproduce._has_results(fake_registry / "cnn3d", ["dynamic", "int8", "qat"])
    assert not reproduce._has_results(fake_registry / "vgg16_ft1", ["dynamic"])
    assert reproduce.step_align(fake_registry, ["cnn3d"]) == []  # explain.json exists
    assert "skip align cnn3d" in capsys.readouterr().out


@pytest.mark.slow
def test_reproduce_train_promote_report_smoke(synthetic_root: Path, tmp_path: Path) -> None:
    """The pipeline's train → promote → report steps on synthetic data, one epoch per seed."""
    from benchmarks import reproduce

    root = tmp_path / "tm"
    out = tmp_path / "docs" / "RESULTS.md"
    argv = [
        "--registry",
        str(root),
        "--experiment",
        "cnn2d_aug",
        "cnn2d_noaug",
        "--seeds",
        "0",
        "1",
        "--epochs",
        "1",
        "--only",
        "train",
        "promote",
        "report",
        "--no-overlays",
        "--out",
        str(out),
    ]
    assert reproduce.main(argv) == 0
    assert sorted(p.name for p in (root / ".staging").iterdir()) == [
        "cnn2d_aug-s0",
        "cnn2d_aug-s1",
        "cnn2d_noaug-s0",
        "cnn2d_noaug-s1",
    ]
    metrics = json.loads((root / "cnn2d_aug" / "metrics.json").read_text())
    assert len(metrics["seeds"]) == 2 and metrics["summary"]["n_seeds"] == 2
    text = out.read_text()
    mean = np.mean([s["test"]["auc"] for s in metrics["seeds"]])
    assert f"{mean:.4f} ± " in _line_with(text, "`cnn2d_aug`", "ours")
    assert "Difference `cnn2d_aug` − `cnn2d_noaug`" in text
    assert "not run yet" in _line_with(text, "`cnn3d`", "adrenalmnist3d")


def test_vgg_sweep_table_in_transfer_section(fake_registry: Path, tmp_path: Path) -> None:
    def seed(s: int, val_auc: float, test_auc: float) -> dict[str, Any]:
        return {
            "seed": s,
            "val": {"auc": val_auc, "acc": 0.5},
            "test": {"auc": test_auc, "acc": 0.55},
            "epochs_run": 10,
            "wall_time_s": 60.0,
        }

    sweep = {
        "ft5_lr3e-5": {
            "changes": {"fine_tune_blocks": 5, "learning_rate": 3e-5},
            "seeds": [seed(0, 0.80, 0.75), seed(1, 0.82, 0.76), seed(2, 0.84, 0.77)],
        },
        "ft2_ema": {
            "changes": {"weight_ema": 0.99},
            "seeds": [seed(0, 0.70, 0.74), seed(1, 0.70, 0.75), seed(2, 0.70, 0.76)],
        },
    }
    fig_dir = tmp_path / "docs" / "results"
    fig_dir.mkdir(parents=True)
    (fig_dir / "vgg_sweep.json").write_text(json.dumps(sweep))
    text, _ = _build(fake_registry, tmp_path)
    row = _line_with(text, "`ft5_lr3e-5`")
    assert "fine_tune_blocks=5, learning_rate=3e-05" in row
    assert "0.8200 ± 0.0200" in row and "0.7600 ± 0.0100" in row and "| 3 |" in row
    assert "chosen on the val columns only" in text
    # vgg16_ft2's val AUC is 0.75 in the fake registry; 0.82 is above it. Only ft5 (test ACC
    # 0.55, AUC 0.76) reaches 0.755 / 0.545; ft2_ema's test AUC 0.75 does not.
    assert (
        "Highest mean val AUC in the sweep: `ft5_lr3e-5` (0.8200), above the `vgg16_ft2` arm's "
        "0.7500. Variants that reach the VGG16 target on test: `ft5_lr3e-5`." in text
    )
    below = "\n".join(report.section_sweep({"ft2_ema": sweep["ft2_ema"]}, arm_val_auc=0.9))
    assert "`ft2_ema` (0.7000), not above the `vgg16_ft2` arm's 0.9000, so the arm's" in below
    assert "reach the VGG16 target on test: none." in below


def _candidate(method: str, layer: str | None, d: float, i: float, rho: float) -> dict[str, Any]:
    split = {
        "faithfulness": {"deletion_ratio": d, "insertion_ratio": i, "n": 64},
        "sanity": {"rank_correlation": rho, "n": 64},
        "road": {"morf_auc": 0.41, "lerf_auc": 0.62},
        "anatomy": {
            "inside": 0.3,
            "area_inside": 0.04,
            "band": 0.2,
            "area_band": 0.05,
            "outside": 0.5,
            "area_outside": 0.91,
            "pointing_hit": 0.75,
        },
    }
    return {"method": method, "layer": layer, "val": split, "test": split}


def test_explanations_section_reads_issue13_explain_json(fake_registry: Path, tmp_path: Path):
    ex = {
        **explain_results(),
        "default_method": "hirescam",
        "default_layer": "relu2",
        "faithful": False,
        "verdict": "No explanation method was faithful for this model. Numbers | here.",
        "candidates": [
            _candidate("gradcam", "relu3", 0.97, 1.01, 0.12),
            _candidate("hirescam", "relu2", 0.812, 1.234, 0.271),
        ],
        "splits": {
            "test": {
                "removal_shift": 0.37,
                "properties": {
                    "score": "P(class 1)",
                    "n": 64,
                    "correlations": {"volume": 0.66, "elongation": -0.1},
                },
            }
        },
    }
    _write(fake_registry / "cnn3d" / "explain.json", ex)
    text, _ = _build(fake_registry, tmp_path)
    row = _line_with(text, "`cnn3d`", "hirescam @ `relu2`", "**no**")
    assert "0.81" in row and "1.23" in row and "0.27" in row and "0.37" in row
    assert "Numbers / here" in row  # a verdict's pipe cannot break the table
    assert "0.97 / 0.97" in _line_with(text, "`cnn3d`", "gradcam @ `relu3`")
    assert "0.410 / 0.620" in _line_with(text, "`cnn3d`", "gradcam @ `relu3`")
    assert "0.300 (0.040)" in _line_with(text, "`cnn3d`", "hirescam @ `relu2` (default)")
    assert "volume 0.66" in _line_with(text, "`cnn3d`", "P(class 1)")
    assert "not run yet" in _line_with(text, "`vgg16_frozen`", "| not run yet |")
    # the older Grad-CAM alignment table is still there
    assert "3.00" in _line_with(text, "`cnn3d`", "| gradcam |")


def _shift_run(run: str, t_val: float, t_test: float, inside: bool, met: bool) -> dict[str, Any]:
    return {
        "run": run,
        "t_val": t_val,
        "t_test": t_test,
        "t_val_interval": [t_val - 0.14, t_val + 0.14],
        "t_test_inside": inside,
        "same_direction": (t_val - 1) * (t_test - 1) > 0,
        "accuracy": {"val": 0.558, "test": 0.512},
        "confidence": {"val": 0.512, "test": 0.531},
        "test_ece": {"raw": 0.066, "t_val": 0.085, "shipped": 0.085, "t_test": 0.065},
        "test_ece_bound_95": 0.067,
        "goal_met": met,
    }


def test_calibration_shift_section_renders_the_study_and_not_run_without_it() -> None:
    from benchmarks.report.sections_trust import section_calibration_shift

    missing = "\n".join(section_calibration_shift(None))
    assert "diagnosis not run yet: `python -m benchmarks.calibration_shift`" in missing
    study = {
        "command": "python -m benchmarks.calibration_shift",
        "date": "2026-11-30 23:55 UTC",
        "load_average": [1.5, 1.0, 0.5],
        "resamples": 1000,
        "runs": [
            _shift_run("cnn2d_aug", 0.71, 1.24, inside=False, met=False),
            _shift_run("vgg16_frozen", 1.66, 1.70, inside=True, met=True),
        ],
    }
    text = "\n".join(section_calibration_shift(study))
    assert "2026-11-30 23:55 UTC, load 1.50, 1.00, 0.50" in text
    assert "missed by 1 of 2 predictors (`cnn2d_aug`)" in text
    assert "for 1 the two temperatures even point in opposite directions" in text
    assert "For 1 of the 1, T (test) lies outside the 90 % interval" in text
    assert "nothing in this table chooses anything" in text
    row = _line_with(text, "| `cnn2d_aug` |")
    assert "0.71 [0.57, 0.85] | 1.24 | **no** |" in row
    assert "0.066 → 0.085 → 0.085 | 0.065 | 0.067 | **no** |" in row
    assert "1.66 [1.52, 1.80] | 1.70 | yes |" in _line_with(text, "| `vgg16_frozen` |")
