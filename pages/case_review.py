"""Case review: a worklist where reviewers record Agree / Disagree / Unsure on a model's
predictions, with an append-only audit trail (core.reviews), agreement figures and exports."""

from __future__ import annotations

import streamlit as st

from app import cache, describe, figures, review_ui
from app import widgets as w
from core import info
from core.reviews import (
    ReviewStore,
    ReviewStoreError,
    Verdict,
    build_worklist,
    case_report_pdf,
    csv_bytes,
    model_vs_reviewers,
    report_panels,
    reviewer_pairs,
)

CMAP = "jet"
ALPHA = 0.45
VERDICT_WORDS = {"agree": "Agree", "disagree": "Disagree", "unsure": "Unsure"}


def _reviewable(run: dict) -> bool:
    """Single-label runs: a multi-label model has no one prediction to agree with."""
    try:
        return not info.is_multilabel(describe.run_dataset(run))
    except ValueError:
        return False


def _verdict_text(verdict: Verdict, labels: list[str]) -> str:
    text = VERDICT_WORDS[verdict.verdict]
    if verdict.corrected_label is not None:
        text += f" (correct label: {labels[verdict.corrected_label]})"
    when = (verdict.created_at or "").replace("T", " ")[:19]  # "2026-11-30 06:49:02"
    return f"{text} · {verdict.reviewer} · {when} UTC"


st.title("Case review")
st.caption(
    "Go through a model's predictions case by case and record whether you agree. Every "
    "verdict is kept (a new verdict on the same case is added, never overwritten), with your "
    "name and the time."
)
store = ReviewStore()
try:
    store.check()
except ReviewStoreError as exc:
    review_ui.store_error_ui(exc, "opening the review database")
    st.stop()

reviewer = review_ui.reviewer_ui()
if reviewer is None:
    st.stop()
researcher = review_ui.is_researcher()

side = st.sidebar
run = w.run_picker_ui([r for r in cache.runs() if _reviewable(r)], key="review_run", container=side)
if run is None:
    st.info(
        "No single-label model is in the registry yet, so there is nothing to review.\n\n"
        "1. Train one (`python -m core.train --dataset retinamnist --model cnn2d --output "
        "trained_models`) or queue one on the **Retrain** page.\n"
        "2. Come back here and pick it in the sidebar.",
        icon=":material/inventory_2:",
    )
    st.stop()
split = w.split_ui(key="review_split", container=side)
flag, size = describe.run_dataset(run), describe.run_size(run)
labels = info.label_names(flag)
three_d = info.is_3d(flag)
with w.guard("predicting the cases of this split") as g:
    xs, ys = cache.model_split(flag, split, size)
    # calibrated probabilities, uncertainty and refer flags (raw ones without calibration.json)
    scored = review_ui.split_trust(run["path"], flag, split, size)
if g.failed:
    st.stop()
review_ui.trust_note_ui(scored["calibrated"], run["name"])
show, predicted_class = review_ui.filters_ui(labels, side)
try:
    current = store.latest(run=run["name"], split=split)
except ReviewStoreError as exc:
    review_ui.store_error_ui(exc, "reading the reviews")
    st.stop()

# the ground truth orders the list (wrong predictions first) only for those allowed to see it
truth = ys[:, 0] if researcher else None
worklist = build_worklist(
    scored["proba"],
    split,
    reviewer,
    current,
    truth=truth,
    show=show,
    predicted_class=predicted_class,
    uncertainty=scored["uncertainty"],
    refer=scored["refer"],
)
st.progress(
    worklist.reviewed / max(1, worklist.total),
    text=f"{worklist.progress_text} ({describe.dataset_title(flag)}, {split} split)",
)
saved = st.session_state.pop(review_ui.SAVED_KEY, None)
if saved:
    st.success(saved, icon=":material/check_circle:")

item = review_ui.current_case(worklist, (run["name"], split))
if item is None:
    st.info(
        "No case matches this filter. Pick **All cases** under *Show* in the sidebar, or "
        "another predicted class.",
        icon=":material/filter_alt_off:",
    )
else:
    review_ui.navigation_ui(worklist, item)
    idx = item.index
    x = cache.prepare(run, xs[idx : idx + 1])[0]
    with w.guard("explaining the prediction") as g:
        cam = cache.heatmap(run["path"], x, "gradcam", item.predicted)
    if g.failed:
        st.stop()
    st.subheader(f"{split.capitalize()} sample #{idx}")
    left, right = st.columns([3, 2])
    with left:
        if three_d:
            st.caption("3D volume: the three middle slices, without and with the explanation.")
            for column, (caption, image, heat) in zip(
                st.columns(3), report_panels(xs[idx], cam, True), strict=True
            ):
                column.image(
                    cache.png(figures.upscale(image, 168)), caption=caption, output_format="PNG"
                )
                pic = figures.cam_pictures(image, heat, ALPHA, CMAP, side=168)["overlay"]
                column.image(cache.png(pic), caption=f"{caption}, Grad-CAM", output_format="PNG")
        else:
            pics = figures.cam_pictures(xs[idx], cam, ALPHA, CMAP)
            cols = st.columns(2)
            # PNG bytes shown as they are (with "auto" Streamlit re-encodes them as JPEG each run)
            cols[0].image(cache.png(pics["original"]), caption="Image", output_format="PNG")
            cols[1].image(
                cache.png(pics["overlay"]), caption="Grad-CAM overlay", output_format="PNG"
            )
        st.image(
            review_ui.colour_bar(CMAP),
            caption="Grad-CAM colour scale: blue = little influence on the prediction, "
            "red = most influence",
            width=256,
            output_format="PNG",
        )
    with right:
        st.metric(
            "Model prediction",
            labels[item.predicted],
            f"{'calibrated' if scored['calibrated'] else 'raw'} probability {item.probability:.1%}",
            delta_color="off",
            delta_arrow="off",
            help=review_ui.HELP_PROBABILITY[scored["calibrated"]],
        )
        if scored["refer"] is not None and scored["refer"][idx]:
            st.warning(review_ui.HELP_REFER, icon=":material/flag:")
        if researcher and item.truth is not None:
            right_or_wrong = "correct" if item.truth == item.predicted else "wrong"
            st.markdown(
                f"**Ground truth** (researchers only): {labels[item.truth]} · the model is "
                f"**{right_or_wrong}**"
            )
        if item.mine is not None:
            st.markdown("**Your current verdict**")
            st.text(_verdict_text(item.mine, labels))
            if item.mine.note:
                st.text(item.mine.note)  # plain text: a note is never rendered as Markdown
            st.download_button(
                "Download case report (PDF)",
                data=lambda: case_report_pdf(
                    report_panels(xs[idx], cam, three_d),
                    item.mine,
                    labels=labels,
                    title=f"Case review: {describe.dataset_title(flag)}",
                    cmap=CMAP,
                    alpha=ALPHA,
                ),
                file_name=f"review_{run['name']}_{split}{idx}_{item.mine.id}.pdf",
                mime="application/pdf",
                key="review_pdf",
                icon=":material/picture_as_pdf:",
                help="One page for the patient file or a colleague: the image, the explanation "
                "with its colour scale, the prediction and its probability, your verdict, the "
                "time and your note.",
                on_click="ignore",
            )
        if researcher and item.others:
            st.markdown(f"**Other reviewers** ({len(item.others)})")
            for verdict in item.others:
                st.text(_verdict_text(verdict, labels))
        entered = review_ui.verdict_form_ui(
            item, labels, f"review_form_{run['name']}_{split}_{idx}"
        )
    if entered is not None:
        following = worklist.neighbour(idx, +1)  # before saving: the filter may drop this case
        try:
            row_id = store.add(
                Verdict(
                    reviewer=reviewer,
                    run=run["name"],
                    dataset=flag,
                    split=split,
                    sample_index=idx,
                    predicted=item.predicted,
                    probability=item.probability,
                    verdict=entered.verdict,
                    corrected_label=entered.corrected_label,
                    note=entered.note,
                )
            )
        except ReviewStoreError as exc:
            review_ui.store_error_ui(exc, "saving the verdict")
        except ValueError as exc:
            w.show_error(exc, "saving the verdict")
        else:
            st.session_state[review_ui.SAVED_KEY] = (
                f"Saved **{VERDICT_WORDS[entered.verdict]}** on {split} sample #{idx} "
                f"(record #{row_id})" + ("; showing the next case." if following else ".")
            )
            if following is not None:
                st.session_state[review_ui.CASE_KEY] = following
            st.rerun()

st.divider()
st.subheader(f"Agreement on the {split} split")
review_ui.agreement_ui(model_vs_reviewers(current), reviewer_pairs(current))
st.download_button(
    "Download reviews (CSV)",
    data=lambda: csv_bytes(store.rows(run=run["name"]), labels),
    file_name=f"reviews_{run['name']}.csv",
    mime="text/csv",
    key="review_csv",
    icon=":material/download:",
    on_click="ignore",
    help="Every verdict ever recorded on this model (all splits and reviewers), oldest first; "
    "is_current = 1 marks each reviewer's latest verdict on a case.",
)
st.caption(f"{len(current)} current verdicts on this split (latest per reviewer and case).")
if researcher:
    review_ui.retrain_ui(run, store, reviewer)
