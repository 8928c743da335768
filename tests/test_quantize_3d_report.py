"""The 3D quantization benchmark's table and its rendering in the report's quantization section."""

from __future__ import annotations

from benchmarks.quantize_3d import format_rows
from benchmarks.report.sections_shipped import _short_notes, section_quantization_3d


def _row(variant: str, size: int | None, ms: float, auc: float | None, **extra) -> dict:
    return {
        "variant": variant,
        "size_bytes": size,
        "smaller_than_float_tflite": 1_000_000 / size if size else None,
        "latency_ms": ms,
        "faster_than_keras": 3.0 / ms,
        "faster_than_float_tflite": 2.0 / ms,
        "test_auc": auc,
        "auc_delta": None if auc is None else auc - 0.87,
        "agreement": 0.99,
        **extra,
    }


BENCH = {
    "created": "2026-11-30T07:00:00",
    "cpus": 2,
    "load_before": "3.00 2.00 1.00",
    "load_after": "4.00 3.00 2.00",
    "run28": {
        "run": "cnn3d",
        "dataset": "adrenalmnist3d",
        "input_shape": [28, 28, 28, 1],
        "n_test": 298,
        "created": "2026-11-30T07:00:00",
        "load": "load average before 3.00 2.00 1.00, after 4.00 3.00 2.00",
        "onnx": {"ok": False, "error": "ImportError: no tf2onnx"},
        "rows": [
            _row("float Keras", None, 3.0, 0.87),
            _row("float32 TFLite", 1_000_000, 2.0, 0.87, float_ops={"CONV_3D": 3}),
            _row("int8, before (Conv3D as is)", 440_000, 2.5, 0.86, float_ops={"CONV_3D": 3}),
            _row("int8, after (Conv3D rewritten)", 250_000, 0.5, 0.869, float_ops={}),
        ],
    },
    "cnn3d_64": {
        "weights": "random (seed 0); not trained: size and latency only",
        "params": 4_300_000,
        "n_compared": 64,
        "rows": [_row("float Keras", None, 30.0, None), _row("int8", 4_000_000, 5.0, None)],
    },
}


def test_format_rows_prints_every_variant_and_its_float_ops():
    text = format_rows(BENCH["run28"]["rows"])
    lines = text.splitlines()
    assert len(lines) == 5 and "×smaller" in lines[0]
    after = next(line for line in lines if line.startswith("int8, after"))
    assert "250,000" in after and "4.00" in after and after.rstrip().endswith("none")
    assert "CONV_3D×3" in next(line for line in lines if line.startswith("int8, before"))


def test_section_quantization_3d_renders_both_tables_and_the_onnx_reason():
    text = "\n".join(section_quantization_3d(BENCH))
    assert "n=298; 2026-11-30T07:00:00, load average before 3.00 2.00 1.00" in text
    row = "| int8, after (Conv3D rewritten) | 244.1 KB | 4.00 | 0.50 | 6.00 | 4.00 | 0.8690 |"
    assert row + " -0.0010 | 0.990 | none |" in text
    assert "ONNX Runtime not measured: ImportError: no tf2onnx" in text
    assert "cnn3d at 64³ (random (seed 0)" in text and "4,300,000 parameters" in text


def test_short_notes_name_the_rewrite():
    note = "3 Conv3D layer(s) rewritten as Conv2D over depth-shifted views before conversion"
    entry = {"notes": [note], "ops": {"fully_integer": True, "float_ops": {}}}
    assert _short_notes("int8", entry) == "fully integer (Conv3D rewritten as Conv2D)"
    assert _short_notes("dynamic", entry).endswith("(Conv3D rewritten as Conv2D)")
    old = {"notes": [], "ops": {"fully_integer": False, "float_ops": {"CONV_3D": 3}}}
    assert _short_notes("int8", old).startswith("3 Conv3D op(s) stay float32")
