"""Section 6: which explanation each shipped model gets by default, and how far it can be trusted.

Reads the ``explain.json`` that ``python -m core.explain RUN`` writes next to each run (issue
13 format: ``default_method``, ``candidates`` with val/test numbers, ``verdict``); a run
without it, or with only the older Grad-CAM-only file, says so.
"""

from __future__ import annotations

from typing import Any

from benchmarks.report.collect import Arm
from benchmarks.report.markdown import NOT_RUN, _f, md_table

INTRO = (
    "For every shipped run, `python -m core.explain RUN` rates each candidate explanation "
    "(method, layer) on a seeded subset of the validation and the test split. **Deletion / "
    "insertion** (RISE): positions are replaced in the map's order by a reference input that "
    "moves the model (the training split's mean image in 2D, an empty volume for the 3D "
    "masks) and the area under the class-probability curve is compared with a **smooth-random "
    "baseline** (random values on one fixed 4×4 / 4×4×4 grid, upsampled; the same maps for "
    "every method). Ratio = method / baseline: deletion ≤ 0.85 and insertion ≥ 1.15 are the "
    "goals. **Randomization** (Adebayo et al. 2018): Spearman rank correlation between the "
    "maps of the trained model and of copies with weights re-drawn from the top layer down "
    "(mean over samples of its absolute value |ρ|, cascade stages averaged; goal ≤ 0.4; the sign "
    "is ignored because a map that flips under scrambled weights still traces the image, and "
    "signed values of different samples could cancel). **ROAD** (noisy linear imputation; "
    "test split only; MoRF lower / LeRF higher = more faithful). The default is chosen on "
    "validation numbers only; the test columns decide whether it is called faithful."
)


def _explain(arm: Arm) -> dict[str, Any] | None:
    ex = arm.json("explain.json") if arm.ran else None
    return ex if isinstance(ex, dict) and "candidates" in ex else None


def _ratio(split: dict[str, Any] | None, key: str) -> str:
    f = (split or {}).get("faithfulness") or {}
    return _f(f.get(key), 2)


def _rho(split: dict[str, Any] | None) -> str:
    # the value the sanity gate reads: mean |rho| (core.explain.select.scrambling_correlation)
    from core.explain.select import scrambling_correlation

    return _f(scrambling_correlation(split), 2)


def _default(ex: dict[str, Any]) -> dict[str, Any] | None:
    for c in ex.get("candidates", []):
        if c.get("method") == ex.get("default_method") and c.get("layer") == ex.get(
            "default_layer"
        ):
            return c
    return None


def _label(c: dict[str, Any]) -> str:
    return f"{c.get('method')}" + (f" @ `{c['layer']}`" if c.get("layer") else "")


def section_explanations(arms: dict[str, Arm]) -> list[str]:
    """Markdown lines of section 6 (defaults, method × model table, anatomy, properties)."""
    lines = [INTRO, ""]
    loaded = {name: _explain(arm) for name, arm in arms.items()}
    rows = []
    for name, ex in loaded.items():
        if ex is None:
            rows.append([f"`{name}`", NOT_RUN, "", "", "", "", "", "", ""])
            continue
        d = _default(ex) or {}
        test = d.get("test")
        shift = ((ex.get("splits") or {}).get("test") or {}).get("removal_shift")
        rows.append(
            [
                f"`{name}`",
                _label(d) if d else "–",
                "yes" if ex.get("faithful") else "**no**",
                _ratio(test, "deletion_ratio"),
                _ratio(test, "insertion_ratio"),
                _rho(test),
                _f((test or {}).get("faithfulness", {}).get("n"), 0),
                _f(shift, 2),
                ex.get("verdict", "–").replace("|", "/"),
            ]
        )
    lines += ["### Chosen defaults (test numbers)", ""]
    lines += md_table(
        [
            "Run",
            "Default (chosen on val)",
            "Faithful",
            "Deletion ratio",
            "Insertion ratio",
            "Randomization ρ (abs.)",
            "Samples",
            "Score move, sample → reference",
            "Verdict",
        ],
        rows,
    )
    lines += [
        "Score move: mean drop of the explained class's probability from the sample to the "
        "fully removed input (the reference). A removal that does not move the score cannot "
        "rank maps.",
        "",
        "### Every candidate: method × model (val / test)",
        "",
    ]
    rows = []
    for name, ex in loaded.items():
        if ex is None:
            continue
        for c in ex["candidates"]:
            road = (c.get("test") or {}).get("road") or {}
            rows.append(
                [
                    f"`{name}`",
                    _label(c),
                    f"{_ratio(c.get('val'), 'deletion_ratio')} / "
                    f"{_ratio(c.get('test'), 'deletion_ratio')}",
                    f"{_ratio(c.get('val'), 'insertion_ratio')} / "
                    f"{_ratio(c.get('test'), 'insertion_ratio')}",
                    f"{_rho(c.get('val'))} / {_rho(c.get('test'))}",
                    f"{_f(road.get('morf_auc'), 3)} / {_f(road.get('lerf_auc'), 3)}",
                    "default" if c is _default(ex) else "",
                ]
            )
    lines += md_table(
        [
            "Run",
            "Candidate",
            "Deletion ratio",
            "Insertion ratio",
            "Randomization ρ (abs.)",
            "ROAD MoRF / LeRF (test)",
            "",
        ],
        rows,
    )
    lines += _anatomy(loaded) + _properties(loaded)
    return lines


def _anatomy(loaded: dict[str, dict[str, Any] | None]) -> list[str]:
    rows3, rows2 = [], []
    for name, ex in loaded.items():
        if ex is None:
            continue
        for c in ex["candidates"]:
            a = (c.get("test") or {}).get("anatomy")
            # the default beside Grad-CAM (the pre-issue-13 map); every candidate is in the JSON
            if not a or (c is not _default(ex) and c.get("method") != "gradcam"):
                continue
            tag = " (default)" if c is _default(ex) else ""
            if "inside" in a:
                rows3.append(
                    [
                        f"`{name}`",
                        _label(c) + tag,
                        f"{_f(a.get('inside'), 3)} ({_f(a.get('area_inside'), 3)})",
                        f"{_f(a.get('band'), 3)} ({_f(a.get('area_band'), 3)})",
                        f"{_f(a.get('outside'), 3)} ({_f(a.get('area_outside'), 3)})",
                        _f(a.get("pointing_hit"), 2),
                    ]
                )
            elif "disk" in a:
                rows2.append(
                    [
                        f"`{name}`",
                        _label(c) + tag,
                        f"{_f(a.get('disk'), 3)} ({_f(a.get('area_disk'), 3)})",
                        f"{_f(a.get('disc_energy'), 3)} ({_f(a.get('area_disc'), 3)})",
                        _f(a.get("disc_pointing_hit"), 2),
                        _f(a.get("disc_found"), 2),
                    ]
                )
    lines = [
        "### Where the heat falls (test; area share = what a uniform map scores)",
        "",
        "The default and Grad-CAM; every candidate's numbers are in each run's explain.json.",
        "",
    ]
    if rows3:
        lines += md_table(
            [
                "Run",
                "Candidate",
                "Inside gland (area)",
                "2-voxel band (area)",
                "Outside (area)",
                "Peak on gland or band",
            ],
            rows3,
        )
    if rows2:
        lines += md_table(
            [
                "Run",
                "Candidate",
                "Fundus disk (area)",
                "Optic disc (area)",
                "Peak on optic disc",
                "Optic disc found",
            ],
            rows2,
        )
        lines += [
            "Optic disc: the brightest spot of the grey, Gaussian-smoothed (σ = 1 px) image "
            "inside the fundus disk (eroded 2 px), counted as found when it stands 2 standard "
            "deviations above the disk's mean brightness; disc numbers cover those images only.",
            "",
        ]
    return lines


def _properties(loaded: dict[str, dict[str, Any] | None]) -> list[str]:
    rows = []
    for name, ex in loaded.items():
        props = (((ex or {}).get("splits") or {}).get("test") or {}).get("properties")
        if not props:
            continue
        corr = props.get("correlations", {})
        rows.append(
            [f"`{name}`", props.get("score", "–"), props.get("n", "–")]
            + [f"{k.replace('_', ' ')} {_f(v, 2)}" for k, v in corr.items()]
        )
    if not rows:
        return []
    width = max(len(r) for r in rows)
    rows = [r + [""] * (width - len(r)) for r in rows]
    return [
        "### What the score tracks (test, Spearman ρ)",
        "",
        *md_table(["Run", "Score", "Samples"] + ["Property ρ"] * (width - 3), rows),
    ]
