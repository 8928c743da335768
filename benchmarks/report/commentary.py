""" "What worked and what did not": prose built from the same numbers as the tables."""

from __future__ import annotations

from benchmarks.report.collect import Arm
from benchmarks.report.markdown import NOT_RUN
from benchmarks.report.sections import TARGET_3D_METHOD, Verdict
from benchmarks.report.sections_shipped import ALIGN_RATIO_BAND, DELETION_MARGIN, quant_results
from core.results import NOISE_Z, binomial_se


def commentary(
    arms: dict[str, Arm],
    verdicts_3d: list[Verdict],
    aug_results: list[tuple[Arm, Arm, dict]],
    vgg_verdict: Verdict | None,
    vgg_best: Arm | None,
    resnet_results: list[tuple[Arm, Arm, dict]],
) -> list[str]:
    ran = [a for a in arms.values() if a.ran]
    if not ran:
        return [f"No reference run has been promoted yet: every experiment is {NOT_RUN}.", ""]
    parts: list[str] = []
    missing = [a.name for a in arms.values() if not a.ran]
    if missing:
        parts.append(
            f"{len(ran)} of {len(arms)} arms have results; "
            f"{', '.join(f'`{m}`' for m in missing)} {'is' if len(missing) == 1 else 'are'} "
            f"{NOT_RUN}, so the conclusions below cover only what ran."
        )
    # 3D
    if verdicts_3d and verdicts_3d[0].status != NOT_RUN:
        target, *rest = verdicts_3d
        stretch = rest[0] if rest else None
        sentence = f"The 3D CNN's target against {TARGET_3D_METHOD} is {target.status}"
        if stretch is not None:
            sentence += f", and the stretch target is {stretch.status}"
        parts.append(sentence + " (means over seeds, see the 3D section for the margins).")
    # augmentation
    for aug, _plain, diffs in aug_results:
        d = diffs.get("auc")
        if d is None:
            continue
        direction = "raised" if d.diff > 0 else "lowered"
        if d.within_noise is None:
            noise = "the spread is unknown with a single seed"
        elif d.within_noise:
            noise = (
                f"which is within noise (|Δ| < {NOISE_Z:g} × the combined standard error "
                f"{d.se:.4f}), so this experiment does not show that augmentation helps"
            )
        else:
            noise = f"which is beyond noise ({abs(d.t or 0):.1f} combined standard errors)"
        parts.append(
            f"Augmentation {direction} the {aug.model} test AUC on {aug.dataset} by "
            f"{abs(d.diff):.4f}, {noise}."
        )
    # transfer
    if vgg_verdict is not None and vgg_best is not None and vgg_verdict.status != NOT_RUN:
        auc = vgg_best.metric("test", "auc")
        acc = vgg_best.metric("test", "acc")
        parts.append(
            f"The VGG16 variant picked on validation AUC is `{vgg_best.name}` "
            f"(test AUC {auc.fmt()}, ACC {acc.fmt()}); the VGG16 target is {vgg_verdict.status}."
        )
    # resnet
    for _res, cnn, diffs in resnet_results:
        d = diffs.get("auc")
        if d is None:
            continue
        better = "above" if d.diff > 0 else "below"
        noise = (
            ""
            if d.within_noise is None
            else (" (within noise)" if d.within_noise else " (beyond noise)")
        )
        parts.append(
            f"The ResNet trained from scratch scored {abs(d.diff):.4f} test AUC {better} the "
            f"custom CNN `{cnn.name}`{noise}."
        )
    # quantization
    qres = quant_results(arms)
    for arm, res in qres:
        modes = res.get("modes") or {}
        ok = {m: e for m, e in modes.items() if e.get("ok")}
        if not ok:
            continue
        worst_mode = max(ok, key=lambda m: abs(ok[m].get("auc_delta") or 0.0))
        smallest = max(ok, key=lambda m: ok[m].get("size_ratio") or 0.0)
        text = (
            f"Quantizing `{arm.name}`: {smallest} is the smallest "
            f"({ok[smallest]['size_ratio']:.1f}× smaller than float32 TFLite); the largest test "
            f"AUC change is "
            f"{ok[worst_mode]['auc_delta']:+.4f} ({worst_mode})."
        )
        integer = {m: e for m, e in ok.items() if m in ("int8", "qat")}
        if any("CONV_3D" in (e.get("ops") or {}).get("float_ops", {}) for e in integer.values()):
            text += (
                " Its Conv3D layers stay float32 in the int8 models, so it is only partly integer."
            )
        elif any(
            "Conv3D layer(s) rewritten" in n for e in integer.values() for n in e.get("notes") or []
        ):
            text += (
                " Its Conv3D layers are rewritten as Conv2D before conversion, so its int8 "
                "models are fully integer."
            )
        parts.append(text)
    # alignment
    for arm in ran:
        ex = arm.json("explain.json")
        s = ex.get("gradcam") if isinstance(ex, dict) else None
        if not isinstance(s, dict):
            continue
        e, area = s.get("energy_in_mask_mean"), s.get("mask_area_mean")
        sal, rnd = s.get("deletion_auc_salient_mean"), s.get("deletion_auc_random_mean")
        bits = []
        if e is not None and area:
            ratio = e / area
            if ratio >= ALIGN_RATIO_BAND[1]:
                judged = "concentrated on the anatomy"
            elif ratio > ALIGN_RATIO_BAND[0]:
                judged = "no more on the anatomy than a uniform map would be"
            else:
                judged = "less on the anatomy than a uniform map would be"
            bits.append(
                f"{100 * e:.0f}% of its Grad-CAM energy lies on the anatomy mask, which covers "
                f"{100 * area:.0f}% of the input ({ratio:.2f}× a uniform map: {judged})"
            )
        if sal is not None and rnd:
            rel_change = (sal - rnd) / rnd
            if rel_change <= -DELETION_MARGIN:
                faithful = "faster than"
            elif rel_change >= DELETION_MARGIN:
                faithful = "slower than"
            else:
                faithful = "about as fast as"
            bits.append(
                f"deleting its most salient pixels first lowers the class probability {faithful} "
                f"random deletion (area {sal:.3f} vs {rnd:.3f})"
            )
        if bits:
            parts.append(f"For `{arm.name}`, " + "; ".join(bits) + ".")
    # noise floor
    retina = [a for a in ran if a.dataset == "retinamnist"]
    if retina:
        a = retina[0]
        acc = a.metric("test", "acc")
        if acc and a.n_test:
            parts.append(
                f"Caveat: RetinaMNIST has {a.n_test} test images, so one accuracy figure near "
                f"{acc.mean:.2f} carries a binomial standard error of "
                f"{binomial_se(acc.mean, a.n_test):.3f}; differences to the published numbers "
                f"smaller than that are not meaningful, whatever their sign."
            )
    return [" ".join(parts), ""]
