"""Generate docs/RESULTS.md (and its PNG figures) from the model registry.

Every number in the report is read from the registry's JSON files (``metrics.json`` with its
``seeds`` list, ``history.json``, ``evaluation.json``, ``quantized/results.json``,
``explain.json``) or from ``core.info.PUBLISHED``; nothing is typed by hand. Arms that have not
been trained, and quantization or alignment results that do not exist yet, render as
"not run yet" instead of failing, so the report can be regenerated at any stage.

    python -m benchmarks.report [--registry DIR] [--out docs/RESULTS.md] [--no-overlays]

Only the Grad-CAM example figure needs TensorFlow, the models and the real test data; the
tables and the other figures need nothing but the JSON files.

The package, in reading order: ``collect`` (registry → arms), ``markdown`` (tables, number
formats), ``sections`` (the four experiments and the headline), ``sections_shipped``
(quantization, alignment, wall time), ``commentary`` (the closing prose), ``figures`` (PNGs),
``build`` (assembles the file; ``main`` is the CLI behind ``__main__``). The statistics (mean ±
std over seeds, Welch differences) live in ``core.results``, shared with the app.

    >>> from benchmarks.report import build_report
    >>> text = build_report("trained_models", "/tmp/RESULTS.md", overlays=False)  # doctest: +SKIP
"""

from benchmarks.report.build import DEFAULT_OUT, build_report, main
from benchmarks.report.collect import (
    EXPERIMENT_ORDER,
    Arm,
    best_by_val,
    best_per_family,
    collect,
    experiments,
)
from benchmarks.report.commentary import commentary
from benchmarks.report.figures import (
    FIGURE_DPI,
    FIGURES,
    plot_gradcam,
    plot_quantization,
    plot_roc,
    plot_training_curves,
)
from benchmarks.report.markdown import NOT_RUN, fmt_bytes, fmt_duration, md_table
from benchmarks.report.sections import (
    TARGET_3D_METHOD,
    VGG16_TARGET,
    Verdict,
    comparison_table,
    counterpart,
    diff_rows,
    section_3d,
    section_augmentation,
    section_headline,
    section_resnet,
    section_sweep,
    section_transfer,
    target_verdict,
)
from benchmarks.report.sections_shipped import (
    ALIGN_METHODS,
    ALIGN_RATIO_BAND,
    DELETION_MARGIN,
    EXPECTED_QUANT_MODES,
    quant_results,
    section_alignment,
    section_quantization,
    section_wall_time,
)
from core.results import NOISE_Z, Difference, Stat, binomial_se, difference, stat

__all__ = [
    "ALIGN_METHODS",
    "ALIGN_RATIO_BAND",
    "DEFAULT_OUT",
    "DELETION_MARGIN",
    "EXPECTED_QUANT_MODES",
    "EXPERIMENT_ORDER",
    "FIGURES",
    "FIGURE_DPI",
    "NOISE_Z",
    "NOT_RUN",
    "TARGET_3D_METHOD",
    "VGG16_TARGET",
    "Arm",
    "Difference",
    "Stat",
    "Verdict",
    "best_by_val",
    "best_per_family",
    "binomial_se",
    "build_report",
    "collect",
    "commentary",
    "comparison_table",
    "counterpart",
    "diff_rows",
    "difference",
    "experiments",
    "fmt_bytes",
    "fmt_duration",
    "main",
    "md_table",
    "plot_gradcam",
    "plot_quantization",
    "plot_roc",
    "plot_training_curves",
    "quant_results",
    "section_3d",
    "section_alignment",
    "section_augmentation",
    "section_headline",
    "section_quantization",
    "section_resnet",
    "section_sweep",
    "section_transfer",
    "section_wall_time",
    "stat",
    "target_verdict",
]
