"""Experiments: configurations compared with each other and with the published MedMNIST table."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from app import cache, clinical_ui, describe, figures
from app import widgets as w
from core import info, registry
from core.results import acc_standard_error, group_runs, mean_std_text

st.title("Experiments")

all_runs = cache.runs()
if not all_runs:
    st.info(
        "No run in the registry yet: there is nothing to compare.\n\n"
        "1. Train runs with `python -m core.train ... --output trained_models` (repeat with "
        "`--seed 1`, `--seed 2` for error bars), or queue them on the **Retrain** page.\n"
        "2. Come back here.",
        icon=":material/science:",
    )
    st.stop()

side = st.sidebar
wanted = st.query_params.get("run")
# the dataset with the most runs first: that is where the comparisons are
counts = Counter(describe.run_dataset(r) for r in all_runs)
flags = sorted(counts, key=lambda f: (-counts[f], f))
# a link sets the dataset once, through Session State: ?run= implies its dataset, ?dataset= names it
w.seed_from_query({"experiments_dataset": ("dataset", str)})
if "experiments_dataset" not in st.session_state and wanted:
    for r in all_runs:
        if r["name"] == wanted:
            st.session_state["experiments_dataset"] = describe.run_dataset(r)
flag = side.selectbox(
    "Dataset", flags, key="experiments_dataset", format_func=describe.dataset_title
)
metric = side.radio(
    "Metric",
    ["auc", "acc"],
    key="experiments_metric",
    horizontal=True,
    format_func=str.upper,
)
if flag == "chestmnist" and metric == "acc":
    side.warning(
        "ChestMNIST ACC ≈ the label prior (predicting no finding at all scores as high as the "
        "published methods): use AUC."
    )

groups = group_runs(all_runs, flag)
st.caption(
    f"{describe.dataset_title(flag)}: {sum(g['n'] for g in groups)} seed result(s) in "
    f"{len(groups)} configuration(s). Error bars: standard deviation over seeds (none with a "
    f"single seed). With {info.n_samples(flag)['test']} test samples the binomial standard "
    f"error of an ACC is up to {acc_standard_error(flag):.3f}: smaller gaps are noise."
)

tabs = st.tabs(["Augmentation", "VGG16 frozen vs fine-tuned", "ResNet vs custom CNN", "All"])
comparisons = [
    (
        "Augmentation on vs off",
        lambda g: True,
        lambda gs: len({g["key"]["augment"] for g in gs}) > 1,
        "Train the same model with and without `--augment` to compare.",
    ),
    (
        "VGG16: frozen vs partially fine-tuned",
        lambda g: g["key"]["model"] == "vgg16",
        lambda gs: len({g["key"]["fine_tune_blocks"] for g in gs}) > 1,
        "Train VGG16 with `--fine-tune-blocks 0` and e.g. `2` to compare.",
    ),
    (
        "ResNet vs custom CNN",
        lambda g: g["key"]["model"] in ("resnet", "cnn2d", "cnn3d"),
        lambda gs: len({g["key"]["model"] == "resnet" for g in gs}) > 1,
        "Train `--model resnet` and the custom CNN (`cnn2d`/`cnn3d`) on this dataset to compare.",
    ),
    ("All configurations", lambda g: True, lambda gs: True, ""),
]
for tab, (title, keep, complete, hint) in zip(tabs, comparisons, strict=True):
    with tab:
        chosen = [g for g in groups if keep(g)]
        if not chosen:
            st.info(f"No run for this comparison on {flag} yet. {hint}")
            continue
        if not complete(chosen):
            st.caption(f"Only one side of this comparison exists so far. {hint}")
        st.plotly_chart(
            figures.comparison_chart(
                chosen, flag, metric, f"{title} · {describe.dataset_title(flag)}"
            ),
            key=f"experiments_chart_{title}",
        )
        st.dataframe(
            pd.DataFrame(
                [
                    {
                        "configuration": g["label"],
                        "seeds": g["n"],
                        "test AUC": mean_std_text(g, "auc"),
                        "test ACC": mean_std_text(g, "acc"),
                        "runs": ", ".join(g["runs"]),
                    }
                    for g in chosen
                ]
            ),
            hide_index=True,
            key=f"experiments_table_{title}",
        )
if info.PUBLISHED.get(flag):
    with st.expander("Published MedMNIST figures for this dataset"):
        st.dataframe(
            pd.DataFrame(info.PUBLISHED[flag]), hide_index=True, key="experiments_published"
        )
else:
    st.caption(f"Our published-benchmark table has no entry for {flag}.")

st.subheader("Single models and ensembles against the published table")
entries = [
    {
        "name": r["name"],
        "kind": "single model",
        "metrics": r["metrics"],
        "calibration": cache.run_file(r["path"], "calibration.json"),
    }
    for r in all_runs
    if describe.run_dataset(r) == flag and r.get("status") == "reference"
]
for ens in registry.ensemble_dirs():
    ens_cal = cache.run_file(str(ens), "calibration.json") or {}
    if ens_cal.get("dataset") == flag:
        entries.append(
            {
                "name": ens.name,
                "kind": "ensemble of " + ", ".join(ens_cal.get("members") or []),
                "metrics": cache.run_file(str(ens), "metrics.json"),
                "calibration": ens_cal,
            }
        )
st.dataframe(
    pd.DataFrame(clinical_ui.trust_rows(entries, flag)),
    hide_index=True,
    key="experiments_trust_table",
)
st.caption(
    "Sorted by validation AUC, the only column that chooses anything. ECE: the average gap "
    "between confidence and accuracy before and after calibration. Kept / accuracy on kept: "
    "the share of test cases the model grades itself at the refer threshold chosen on the "
    "validation images, and its accuracy on them (the rest go to a specialist)."
)

st.divider()
st.header("One run in detail")
run = w.run_picker_ui(all_runs, key="experiments_run", label="Run", dataset=flag)
if run is None:
    st.stop()
cfg, metrics = run["config"], run["metrics"]
st.caption(
    f"{describe.run_variant(run)} · {metrics.get('epochs_run', '?')} epochs (best "
    f"{metrics.get('best_epoch', '?')}) · {metrics.get('params', '?'):,} parameters · "
    f"{metrics.get('s_per_epoch', '?')} s/epoch · lr {cfg.get('learning_rate')} · "
    f"batch {cfg.get('batch_size')} · seed {cfg.get('seed')}"
    if isinstance(metrics.get("params"), int)
    else describe.run_variant(run)
)
w.metric_vs_published(flag, metrics.get("test") or {})

history = cache.run_file(run["path"], "history.json")
evaluation = cache.run_file(run["path"], "evaluation.json")
curves, roc_tab, confusion_tab, per_class_tab, trust_tab = st.tabs(
    ["Training curves", "ROC curves", "Confusion matrix", "Per-class metrics", "Trust & clinical"]
)
with curves, w.guard("drawing the training curves"):
    if not history:
        st.info("This run has no history.json.")
    else:
        series = [k for k, v in history.items() if isinstance(v, list) and v]
        shown = st.multiselect(
            "Curves",
            series,
            default=[s for s in series if s in ("loss", "val_auc", "val_acc")] or series[:2],
            key="experiments_curves",
        )
        fig = go.Figure()
        for name in shown:
            values = history[name]
            fig.add_scatter(
                x=list(range(1, len(values) + 1)),
                y=values,
                mode="lines+markers",
                name=name,
                yaxis="y2" if name in ("loss", "val_loss", "lr") else "y",
            )
        fig.update_layout(
            xaxis=dict(
                title="epoch",
                dtick=1 if max((len(history[s]) for s in shown), default=0) < 20 else None,
            ),
            yaxis=dict(title="AUC / ACC", range=[0, 1]),
            yaxis2=dict(title="loss / learning rate", overlaying="y", side="right"),
            height=420,
            margin=dict(l=10, r=10, t=30, b=10),
            legend=dict(orientation="h"),
        )
        if isinstance(metrics.get("best_epoch"), int):
            fig.add_vline(
                x=metrics["best_epoch"],
                line_dash="dot",
                annotation_text="best epoch (weights kept)",
            )
        st.plotly_chart(fig, key="experiments_history")

with roc_tab, w.guard("drawing the ROC curves"):
    rocs = (evaluation or {}).get("roc") or []
    if not rocs:
        st.info("This run has no ROC data in evaluation.json.")
    else:
        fig = go.Figure()
        fig.add_scatter(
            x=[0, 1], y=[0, 1], mode="lines", line=dict(dash="dash", color="grey"), name="chance"
        )
        for curve in rocs:
            fig.add_scatter(
                x=curve["fpr"],
                y=curve["tpr"],
                mode="lines",
                name=f"{info.display_label(flag, curve['label'])} (AUC {curve['auc']:.3f})",
            )
        fig.update_layout(
            xaxis_title="false-positive rate",
            yaxis_title="true-positive rate",
            height=460,
            margin=dict(l=10, r=10, t=30, b=10),
            title="Test ROC, one-vs-rest per class",
        )
        st.plotly_chart(fig, key="experiments_roc")

with confusion_tab, w.guard("drawing the confusion matrix"):
    matrix = (evaluation or {}).get("confusion")
    if not matrix:
        st.info("No confusion matrix (multi-label tasks have none; see per-class metrics).")
    else:
        stored = evaluation.get("labels") or info.label_names(flag)
        names = [info.display_label(flag, n) for n in stored][: len(matrix)]
        m = np.asarray(matrix, dtype=float)
        normalise = st.toggle("Normalise rows (recall per true class)", key="experiments_norm")
        shown = m / np.maximum(m.sum(axis=1, keepdims=True), 1) if normalise else m
        fig = go.Figure(
            go.Heatmap(
                z=shown,
                x=[f"pred {n}" for n in names],
                y=[f"true {n}" for n in names],
                colorscale="Blues",
                text=np.round(shown, 2 if normalise else 0),
                texttemplate="%{text}",
                hovertemplate="%{y} · %{x}: %{z}<extra></extra>",
            )
        )
        fig.update_layout(
            yaxis=dict(autorange="reversed"),
            height=420,
            margin=dict(l=10, r=10, t=30, b=10),
            title="Test confusion matrix",
        )
        st.plotly_chart(fig, key="experiments_confusion")

with per_class_tab, w.guard("showing per-class metrics"):
    rows = (evaluation or {}).get("per_class") or []
    if not rows:
        st.info("This run has no per-class metrics in evaluation.json.")
    else:
        named = [{**r, "label": info.display_label(flag, r.get("label", ""))} for r in rows]
        st.dataframe(pd.DataFrame(named), hide_index=True, key="experiments_per_class")

with trust_tab, w.guard("showing the trust and clinical metrics"):
    clinical_ui.clinical_summary_ui(evaluation, flag)
    clinical_ui.calibration_ui(cache.run_file(run["path"], "calibration.json"))
