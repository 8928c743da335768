# ruff: noqa: N999 - Streamlit shows the entry file name; "Home" is the product's wording
"""Entry point: ``streamlit run app/Home.py`` from the repository root.

Sets up the page, wires the top-level ``pages/`` folder with ``st.navigation`` (Streamlit only
auto-discovers a ``pages/`` folder next to the entry script), starts the local training worker
once per server, and draws the home page. Drawing Home never imports TensorFlow: it reads the
registry's JSON files and the dataset folder only.
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

import streamlit as st  # noqa: E402

from app import widgets as w  # noqa: E402
from core import catalog, config, info  # noqa: E402

st.set_page_config(
    page_title="MedMNIST clinical review",
    page_icon=":material/biotech:",
    layout="wide",
    initial_sidebar_state="expanded",
)


@st.cache_resource(max_entries=1, show_spinner=False)  # no arguments: one entry per server
def _start_worker() -> str:
    """Start the local training worker once per server process (not per session)."""
    from core import jobs

    result = jobs.ensure_worker()
    return str(result) if result is not None else "started"


def _worker_status() -> None:
    try:
        _start_worker()
    except Exception as exc:  # noqa: BLE001 - Home must render whatever the worker does
        w.log.error("training worker did not start", exc_info=exc)
        st.sidebar.warning(
            "The background training worker did not start, so queued retraining jobs wait.\n\n"
            f"Reason: {exc}\n\n"
            "1. Check the server log.\n2. Restart the app; viewing pages is unaffected.",
            icon=":material/engineering:",
        )


def _score_metrics(flag: str, metrics: dict) -> None:
    """Test AUC/ACC as mean ± std over seeds, with the difference to the best published figure.

    One seed's score is not the configuration's score (RetinaMNIST seeds differ by up to 0.05
    AUC), so the mean leads and the opened model's own score follows in a caption.
    """
    best = info.best_published(flag)
    # one metric per row: "0.751 ± 0.029" in st.metric's large font does not fit half a card
    # (it was cut to "0.751 ±…")
    for metric in ("auc", "acc"):
        col = st.container()
        score = catalog.seed_summary(metrics, metric)
        name = metric.upper()
        if score is None:
            col.metric(f"Test {name}", "–")
            continue
        if score["n"] > 1:
            label = f"Test {name}, {score['n']} seeds"
            value = f"{score['mean']:.3f} ± {score['std']:.3f}"
        else:
            label, value = f"Test {name}, 1 seed", f"{score['mean']:.3f}"
        if best:
            ref, method = best[metric]
            col.metric(
                label,
                value,
                delta=f"{score['mean'] - ref:+.3f} vs {ref:.3f}",
                help=f"Mean over seeds minus the best published figure: {ref:.3f} ({method}), "
                "MedMNIST v2 / MedMNIST+.",
            )
        else:
            col.metric(label, value, help="MedMNIST publishes no benchmark for this dataset.")
    test = metrics.get("test") or {}
    seeds = metrics.get("seeds") or []
    if len(seeds) > 1 and all(isinstance(test.get(m), int | float) for m in ("auc", "acc")):
        rule = (metrics.get("summary") or {}).get("reference_rule", "")
        st.caption(
            f"The model this card opens is seed {metrics.get('seed', '?')}"
            + (f" ({rule})" if rule else "")
            + f": test AUC {test['auc']:.3f}, ACC {test['acc']:.3f}."
        )


def _model_card(run: dict, description: str) -> None:
    cfg, metrics = run["config"], run["metrics"]
    flag = w.run_dataset(run)
    reference = catalog.status(run) == catalog.REFERENCE
    badge = (
        ":green-badge[reference]"
        if reference
        else ":orange-badge[experimental: not promoted by a researcher]"
    )
    with st.container(border=True):
        st.markdown(f"**{w.dataset_title(flag)}** · `{cfg.get('model', '?')}` {badge}")
        st.caption(
            f"{description} · {w.size_title(flag, w.run_size(run))} images · "
            f"trained {str(metrics.get('created', '?'))[:16].replace('T', ' ')} · `{run['name']}`"
        )
        _score_metrics(flag, metrics)
        if flag == "chestmnist":
            st.caption(
                "ChestMNIST ACC is dominated by the label prior (a model that predicts no "
                "finding at all scores as high as the published methods): judge it by AUC."
            )
        if (Path(run["path"]) / "quantized" / "results.json").is_file():
            st.caption(":material/memory: quantized variants available")


def _models_section(all_runs: list[dict]) -> None:
    st.subheader("Models in the registry")
    if not all_runs:
        st.info(
            f"The model registry `{config.trained_models_dir()}` holds no trained model yet.\n\n"
            "1. Train one from the command line: "
            "`python -m core.train --dataset retinamnist --model cnn2d --output trained_models`,\n"
            "2. or, as a researcher, queue one on the **Retrain** page.\n"
            "3. Set `TRAINED_MODELS_DIR` if your models live elsewhere.",
            icon=":material/inventory_2:",
        )
        return
    flags = sorted({w.run_dataset(r) for r in all_runs})
    chosen = st.multiselect(
        "Show datasets",
        flags,
        default=flags,
        key="home_card_datasets",
        format_func=w.dataset_title,
    )
    shown = [r for r in all_runs if w.run_dataset(r) in chosen]
    st.caption(
        f"{len(shown)} of {len(all_runs)} runs: reference runs first (best validation AUC "
        "first), then experimental runs (Retrain jobs, `core.train`) until a researcher "
        "promotes them with `python -m core.catalog promote RUN`. Scores are the mean ± std "
        "over seeds; deltas compare that mean with the best published MedMNIST test figure "
        "for the dataset (hover for the method)."
    )
    descriptions = catalog.describe_runs(all_runs)
    cols = st.columns(3)
    for i, run in enumerate(shown):
        with cols[i % 3], w.guard(f"showing the card of {run['name']}"):
            _model_card(run, descriptions.get(run["name"], w.run_variant(run)))


def _download_section(rows: list[dict]) -> None:
    missing = [r for r in rows if not r["present"]]
    with st.expander("Download a dataset", icon=":material/download:"):
        if not missing:
            st.success("Every MedMNIST file is present.")
            return
        labels = {f"{r['flag']}|{r['size']}": r for r in missing}
        choice = st.selectbox(
            "Dataset file",
            list(labels),
            key="home_download_choice",
            format_func=lambda k: (
                f"{w.dataset_title(labels[k]['flag'])} · "
                f"{w.size_title(labels[k]['flag'], labels[k]['size'])} · "
                f"{info.file_name(labels[k]['flag'], labels[k]['size'])}"
            ),
        )
        st.caption(
            f"Files are saved to `{config.medmnist_root()}` after their MD5 checks out; "
            "the larger 64/128/224 files take hundreds of MB."
        )
        if st.button("Download", key="home_download", icon=":material/download:"):
            row = labels[choice]
            bar = st.progress(0.0, text="Connecting…")

            def progress(done: int, total: int) -> None:
                frac = min(1.0, done / total) if total else 0.0
                size = (
                    f"{done / 1e6:.1f} of {total / 1e6:.1f} MB" if total else f"{done / 1e6:.1f} MB"
                )
                bar.progress(
                    frac, text=f"Downloading {info.file_name(row['flag'], row['size'])}: {size}"
                )

            with w.guard("downloading the dataset") as g:
                from core import data

                data.ensure_file(row["flag"], row["size"], progress=progress)
            if not g.failed:
                bar.progress(1.0, text="Done: MD5 verified.")
                w.local_status.clear()
                st.success("Downloaded and verified. It now appears in the pages' dataset lists.")


def _datasets_section() -> None:
    st.subheader("Datasets on this machine")
    rows = w.local_status()
    present = [r for r in rows if r["present"]]
    st.caption(f"Folder: `{config.medmnist_root()}` (set `MEDMNIST_ROOT` to change it).")
    if present:
        st.dataframe(
            [
                {
                    "dataset": w.dataset_title(r["flag"]),
                    "size": w.size_title(r["flag"], r["size"]),
                    "task": r["task"],
                    "what the values are": info.modality_note(r["flag"]),
                    "file": Path(r["path"]).name,
                    "MB": round((r.get("bytes") or 0) / 1e6, 1),
                }
                for r in present
            ],
            hide_index=True,
            width="stretch",
            key="home_datasets_table",
        )
    else:
        st.info("No MedMNIST file is present yet: download one below.", icon=":material/dataset:")
    _download_section(rows)


def home(pages: dict) -> None:
    """The home page: registry model cards, local datasets, links to every page."""
    st.title("MedMNIST clinical review")
    st.markdown(
        "Review how our models classify MedMNIST images: browse samples and predictions, scrub "
        "through 3D volumes, see **where** a model looked (Grad-CAM), and compare experiments, "
        "quantized variants and the published MedMNIST benchmarks."
    )
    cols = st.columns(len(pages))
    for col, (title, (page, icon)) in zip(cols, pages.items(), strict=True):
        col.page_link(page, label=title, icon=icon)
    with w.guard("reading the model registry"):
        _models_section(w.runs())
    with w.guard("checking the local datasets"):
        _datasets_section()


def _sidebar() -> None:
    st.sidebar.caption(
        f"Registry: `{config.trained_models_dir()}`  \nData: `{config.medmnist_root()}`"
    )


_PAGES = ROOT / "pages"
_links = {
    "Sample browser": (
        st.Page(
            _PAGES / "samples.py",
            title="Sample browser",
            icon=":material/grid_view:",
            url_path="samples",
        ),
        ":material/grid_view:",
    ),
    "3D volumes": (
        st.Page(
            _PAGES / "volume.py",
            title="3D volumes",
            icon=":material/view_in_ar:",
            url_path="volume",
        ),
        ":material/view_in_ar:",
    ),
    "Grad-CAM": (
        st.Page(
            _PAGES / "gradcam.py",
            title="Grad-CAM explorer",
            icon=":material/visibility:",
            url_path="gradcam",
        ),
        ":material/visibility:",
    ),
    "Experiments": (
        st.Page(
            _PAGES / "experiments.py",
            title="Experiments",
            icon=":material/science:",
            url_path="experiments",
        ),
        ":material/science:",
    ),
    "Quantization": (
        st.Page(
            _PAGES / "quantization.py",
            title="Quantization",
            icon=":material/memory:",
            url_path="quantization",
        ),
        ":material/memory:",
    ),
}


def home_page() -> None:
    home(_links)


_review = [st.Page(home_page, title="Home", icon=":material/home:", default=True)]
_review += [page for page, _ in _links.values()]
_sections = {"Review": _review}
if (_PAGES / "retrain.py").is_file():
    _sections["Research"] = [
        st.Page(
            _PAGES / "retrain.py",
            title="Retrain",
            icon=":material/model_training:",
            url_path="retrain",
        )
    ]
navigation = st.navigation(_sections)
_sidebar()
_worker_status()
navigation.run()
