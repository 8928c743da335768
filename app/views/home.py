"""The home page: registry model cards, local datasets, a dataset download, links to every page.

Drawn by ``app/Home.py`` (the router) as its default page. Never imports TensorFlow: it reads
the registry's JSON files and the dataset folder only.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from app import cache, describe
from app import widgets as w
from core import catalog, config, info


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
    flag = describe.run_dataset(run)
    reference = catalog.status(run) == catalog.REFERENCE
    member_of = cache.ensemble_membership().get(run["name"])
    if reference:
        badge = ":green-badge[reference]"
    elif member_of:
        badge = f":blue-badge[ensemble member: {', '.join(member_of)}]"
    else:
        badge = ":orange-badge[experimental: not promoted by a researcher]"
    with st.container(border=True):
        st.markdown(f"**{describe.dataset_title(flag)}** · `{cfg.get('model', '?')}` {badge}")
        st.caption(
            f"{description} · {describe.size_title(flag, describe.run_size(run))} images · "
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


def _recommended_section(flags: list[str]) -> None:
    """Per dataset, the reference run or ensemble with the best validation AUC."""
    rows = []
    for flag in flags:
        best = cache.best_on_val(flag)
        if not best:
            continue
        m = best.get("metrics") or {}
        # The app predicts with the calibrated probabilities (``core.trust``), whose argmax can
        # differ from the raw one (class offsets): report the ACC of what the panels show.
        shown = (cache.run_file(best["path"], "calibration.json") or {}).get("metrics") or {}
        test = shown.get("test") or m.get("test") or {}
        rows.append(
            {
                "dataset": describe.dataset_title(flag),
                "recommended": best["name"],
                "kind": "ensemble" if best.get("kind") == "ensemble" else "single model",
                "val AUC": (m.get("val") or {}).get("auc"),
                "test AUC": test.get("auc"),
                "test ACC": test.get("acc"),
                "probabilities": "calibrated" if shown.get("test") else "raw",
            }
        )
    if rows:
        st.markdown(
            "**Recommended model per dataset**",
            help="Chosen on the validation images only (best validation AUC among the "
            "reference models and the ensembles); the test columns are reported, never used "
            "to choose. Prediction panels use an ensemble when it is the recommended model. "
            "Test AUC and ACC are those of the predictions the panels show: with calibrated "
            "probabilities when the model has them (its most likely class can then differ "
            "from the uncalibrated one, so this ACC can differ from the model's card below).",
        )
        st.dataframe(rows, hide_index=True, key="home_recommended")


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
    flags = sorted({describe.run_dataset(r) for r in all_runs})
    _recommended_section(flags)
    chosen = st.multiselect(
        "Show datasets",
        flags,
        default=flags,
        key="home_card_datasets",
        format_func=describe.dataset_title,
    )
    shown = [r for r in all_runs if describe.run_dataset(r) in chosen]
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
            _model_card(run, descriptions.get(run["name"], describe.run_variant(run)))


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
                f"{describe.dataset_title(labels[k]['flag'])} · "
                f"{describe.size_title(labels[k]['flag'], labels[k]['size'])} · "
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
                cache.local_status.clear()
                st.success("Downloaded and verified. It now appears in the pages' dataset lists.")


def _datasets_section() -> None:
    st.subheader("Datasets on this machine")
    rows = cache.local_status()
    present = [r for r in rows if r["present"]]
    st.caption(f"Folder: `{config.medmnist_root()}` (set `MEDMNIST_ROOT` to change it).")
    if present:
        st.dataframe(
            [
                {
                    "dataset": describe.dataset_title(r["flag"]),
                    "size": describe.size_title(r["flag"], r["size"]),
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


def draw(pages: dict) -> None:
    """The home page: registry model cards, local datasets, links to every page."""
    st.title("MedMNIST clinical review")
    st.markdown(
        "Review how our models classify MedMNIST images: browse samples and predictions, scrub "
        "through 3D volumes, see **where** a model looked and how far to trust that map "
        "(Explanations), and compare experiments, quantized variants and the published "
        "MedMNIST benchmarks."
    )
    cols = st.columns(len(pages))
    for col, (title, (page, icon)) in zip(cols, pages.items(), strict=True):
        col.page_link(page, label=title, icon=icon)
    with w.guard("reading the model registry"):
        _models_section(cache.runs())
    with w.guard("checking the local datasets"):
        _datasets_section()
