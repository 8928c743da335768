"""Quantization: size, accuracy, latency and explanation agreement of the TFLite variants."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from app import cache, describe
from app import widgets as w

st.title("Quantization")

quantized_runs = [r for r in cache.runs() if cache.quantized_results(r)]
if not quantized_runs:
    st.info(
        "No run has quantized variants yet (`<run>/quantized/results.json`).\n\n"
        "1. Quantize a trained run: `python -m core.quantize trained_models/<run>`.\n"
        "2. Reload this page.",
        icon=":material/memory:",
    )
    st.stop()

# open on a run whose variants all work; a collapsed variant is still one click away
quantized_runs.sort(
    key=lambda r: any("collapsed" in str(x.get("notes")) for x in cache.quantized_results(r))
)
run = w.run_picker_ui(quantized_runs, key="quant_run", container=st.sidebar)
rows = cache.quantized_results(run)
table = pd.DataFrame(rows)
collapsed = [r["mode"] for r in rows if "collapsed" in str(r.get("notes"))]
if collapsed:
    st.warning(
        f"The {', '.join(collapsed)} variant(s) of this model give the same output for every "
        "image: int8 activation scales erase features the float model relies on. Do not deploy "
        "them; the float16 variant or another model is the deployable choice.",
        icon=":material/warning:",
    )
st.caption(
    f"`{run['name']}` · {describe.dataset_title(describe.run_dataset(run))} · "
    f"{describe.run_variant(run)}. "
    "Row *float* = the Keras model converted to TFLite without quantization. Latency: one "
    "sample per call on this machine's CPU."
)

left, right = st.columns(2)
with left, w.guard("drawing the size vs accuracy chart"):
    metric = st.radio(
        "Metric", ["auc", "acc"], key="quant_metric", horizontal=True, format_func=str.upper
    )
    # Modes of nearly equal size and score (dynamic vs int8: 14.93 vs 14.98 MB) would print
    # their names on top of each other, so each mode gets its own marker and a legend entry.
    fig = go.Figure()
    symbols = ("circle", "square", "diamond", "triangle-up", "x", "star", "cross", "hexagon")
    for i, row in enumerate(rows):
        if row.get(metric) is None or row.get("size_bytes") is None:
            continue
        fig.add_scatter(
            x=[row["size_bytes"] / 1e6],
            y=[row[metric]],
            mode="markers",
            # translucent: a marker on top (int8) must not hide one below it (dynamic)
            marker=dict(size=14, symbol=symbols[i % len(symbols)], opacity=0.7, line=dict(width=1)),
            name=row["mode"],
            hovertemplate=f"<b>{row['mode']}</b><br>%{{x:.2f}} MB<br>{metric.upper()} "
            "%{y:.4f}<extra></extra>",
        )
    points = [r for r in rows if r.get(metric) is not None and r.get("size_bytes") is not None]
    if points:
        # a fixed margin around the values: a 0.001 gap must not fill the whole chart
        low = min(r[metric] for r in points)
        high = max(r[metric] for r in points)
        fig.update_yaxes(range=[max(0.0, low - 0.05), min(1.0, high + 0.05)])
        fig.update_xaxes(range=[0, 1.25 * max(r["size_bytes"] for r in points) / 1e6])
    fig.update_layout(
        title=f"Model size vs test {metric.upper()}",
        xaxis_title="size (MB)",
        yaxis_title=f"test {metric.upper()}",
        height=400,
        showlegend=True,
        legend=dict(orientation="h", y=-0.2, title_text="mode"),
        margin=dict(l=10, r=10, t=50, b=10),
    )
    st.plotly_chart(fig, key="quant_scatter")

with right, w.guard("drawing the latency chart"):
    float_latency = next(
        (r["float_latency_ms"] for r in rows if r.get("float_latency_ms") is not None), None
    )
    bars = [("Keras float", float_latency, "#b0bec5")] if float_latency is not None else []
    bars += [
        (r["mode"], r["latency_ms"], "#1565c0")
        for r in rows
        if r["mode"] != "float" and r.get("latency_ms") is not None
    ]
    fig = go.Figure(
        go.Bar(
            x=[b[0] for b in bars],
            y=[b[1] for b in bars],
            marker_color=[b[2] for b in bars],
            text=[f"{b[1]:.2f} ms" for b in bars],
            textposition="outside",
        )
    )
    fig.update_layout(
        title="Latency per sample (batch of 1, CPU)",
        yaxis_title="ms",
        barmode="group",
        height=400,
        margin=dict(l=10, r=10, t=50, b=10),
        legend=dict(orientation="h"),
    )
    st.plotly_chart(fig, key="quant_latency")

st.subheader("Per-mode table")
table["size_mb"] = table["size_bytes"].astype(float) / 1e6  # 59401768 → 59.40 MB
columns = {
    "mode": "mode",
    "size_mb": "size (MB)",
    "auc": "test AUC",
    "acc": "test ACC",
    "latency_ms": "latency (ms)",
    "float_latency_ms": "float latency (ms)",
    "agreement": "prediction agreement with float",
    "occlusion_corr": "occlusion-map correlation with float",
}
shown = table[[c for c in columns if c in table.columns]].rename(columns=columns)
st.dataframe(
    shown,
    hide_index=True,
    key="quant_table",
    column_config={
        "size (MB)": st.column_config.NumberColumn(format="%.2f MB"),
        "prediction agreement with float": st.column_config.ProgressColumn(
            format="percent", min_value=0.0, max_value=1.0
        ),
    },
)
# Notes are sentences (conversion details, failures); a table cell would cut them off. A note
# every quantized mode shares (the head BatchNorm fold) is said once.
raw = run.get("quantized") or cache.run_file(run["path"], "quantized/results.json") or {}
raw_modes = raw.get("modes") if isinstance(raw, dict) and isinstance(raw.get("modes"), dict) else {}


def _note_items(row: dict) -> list[str]:
    """A mode's notes as results.json lists them (one note may itself contain "; ")."""
    entry = raw_modes.get(row["mode"]) if row["mode"] != "float" else None
    if isinstance(entry, dict) and isinstance(entry.get("notes"), list):
        items = [str(n) for n in entry["notes"] if str(n).strip()]
        return ([f"failed: {entry['error']}"] if entry.get("error") else []) + items
    text = str(row.get("notes") or "").strip()
    return [text] if text else []


notes = {r["mode"]: _note_items(r) for r in rows}
quantized_notes = [set(items) for mode, items in notes.items() if mode != "float"]
shared = set.intersection(*quantized_notes) if len(quantized_notes) > 1 else set()
if any(notes.values()):
    lines = ["**Notes per mode**", ""]
    if shared:
        lines.append("- **every quantized mode**")
        lines += [f"  - {n}" for n in sorted(shared)]
    for mode, items in notes.items():
        own = [n for n in items if mode == "float" or n not in shared]
        if own:
            lines.append(f"- **{mode}**")
            lines += [f"  - {n}" for n in own]
    st.markdown("\n".join(lines))
st.caption(
    "Prediction agreement: share of test samples where the quantized model predicts the same "
    "class as the float model. Occlusion-map correlation: Pearson correlation of the two "
    "models' occlusion sensitivity maps (do they rely on the same regions?)."
)

with st.expander("Which operations run in integer arithmetic"):
    for row in rows:
        summary = row.get("op_summary")
        if summary:
            st.markdown(f"**{row['mode']}**")
            st.json(summary, expanded=False)
    if not any(r.get("op_summary") for r in rows):
        st.caption("results.json has no op_summary.")
st.page_link(
    "../pages/gradcam.py",
    label="Compare float vs quantized heatmaps on one sample",
    icon=":material/visibility:",
    query_params={"run": run["name"]},
)
