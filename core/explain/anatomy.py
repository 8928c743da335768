"""Where does the heat fall? Gland / surface band / outside for the 3D masks; fundus and optic disc.

AdrenalMNIST3D and VesselMNIST3D inputs are the organ mask itself, so the anatomy is known
exactly: heat energy is split into inside the gland, a band of ``band`` voxels just outside its
surface, and the rest of the (empty) volume. RetinaMNIST fundus photographs get the fundus
disk (bright region on a black background, :func:`core.explain.alignment.anatomy_mask`) and the
optic disc, located from the image (:func:`locate_optic_disc`).

The energy-based pointing game (Wang et al. 2020, Score-CAM) is the share of the map's energy
inside the target; the classic pointing game is whether the map's peak falls inside it.
Quantus' ``PointingGame`` and ``RelevanceMassAccuracy`` ran on our 2D and 3D maps (measured)
but are one line each here and would add a dependency (see core.explain.faithfulness).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from core.explain.alignment import anatomy_mask

SHAPE_MASK_FLAGS = ("adrenalmnist3d", "vesselmnist3d")


def gland_regions(volume: np.ndarray, band: int = 2) -> dict[str, np.ndarray]:
    """Inside / surface band / outside masks of one shape-mask volume.

    Args:
        volume: ``(D, H, W)`` or ``(D, H, W, 1)`` mask in [0, 1] (gland > 0.5).
        band: Band width in voxels, outside the surface.

    Returns:
        ``{"inside", "band", "outside"}`` disjoint boolean masks covering the volume.
    """
    from scipy import ndimage

    arr = np.asarray(volume, np.float32)
    if arr.ndim == 4:
        arr = arr[..., 0]
    if arr.ndim != 3:
        raise ValueError(f"expected one (D, H, W[, 1]) volume; got shape {np.shape(volume)}")
    inside = arr > 0.5
    grown = ndimage.binary_dilation(inside, iterations=band) if inside.any() else inside
    shell = grown & ~inside
    return {"inside": inside, "band": shell, "outside": ~grown}


def energy_shares(heat: np.ndarray, regions: dict[str, np.ndarray]) -> dict[str, float]:
    """Share of a map's (non-negative) energy in each region; NaN for an all-zero map."""
    h = np.clip(np.asarray(heat, np.float64), 0.0, None)
    total = h.sum()
    return {k: float(h[m].sum() / total) if total > 0 else float("nan") for k, m in regions.items()}


def locate_optic_disc(image: np.ndarray, min_z: float = 2.0) -> tuple[tuple[int, int], bool]:
    """Find the optic disc as the brightest compact spot inside the fundus disk.

    The optic disc is the brightest structure of a fundus photograph. The image is turned grey,
    smoothed (Gaussian, sigma = 1 px, so one hot pixel does not win), and the peak inside the
    fundus disk (eroded by 2 px, away from the rim) is taken. It counts as *found* when the
    peak stands ``min_z`` standard deviations above the disk's mean brightness; a flat or dark
    photo has no such spot.

    Args:
        image: ``(H, W, C)`` fundus photo in [0, 1].
        min_z: Required peak prominence in disk standard deviations.

    Returns:
        ``((row, col), found)``.
    """
    from scipy import ndimage

    img = np.asarray(image, np.float32)
    grey = img.mean(axis=-1) if img.ndim == 3 else img
    disk = anatomy_mask(img if img.ndim == 3 else img[..., None].repeat(3, -1), "retinamnist")
    core_disk = ndimage.binary_erosion(disk, iterations=2)
    if not core_disk.any():
        return (grey.shape[0] // 2, grey.shape[1] // 2), False
    smooth = ndimage.gaussian_filter(grey, 1.0)
    masked = np.where(core_disk, smooth, -np.inf)
    peak = np.unravel_index(int(np.argmax(masked)), grey.shape)
    vals = smooth[disk]
    found = bool(vals.std() > 0 and smooth[peak] >= vals.mean() + min_z * vals.std())
    return (int(peak[0]), int(peak[1])), found


def _disc_mask(shape: tuple[int, int], centre: tuple[int, int]) -> np.ndarray:
    # The optic disc spans about a sixth of the fundus diameter (~ the image width here).
    radius = max(2.0, shape[0] / 12.0)
    rr, cc = np.ogrid[: shape[0], : shape[1]]
    return (rr - centre[0]) ** 2 + (cc - centre[1]) ** 2 <= radius**2


def _peak_in(heat: np.ndarray, mask: np.ndarray) -> bool:
    return bool(mask.ravel()[int(np.argmax(heat))])


def anatomy_summary(maps: np.ndarray, x_raw: np.ndarray, flag: str) -> dict[str, Any] | None:
    """Anatomy numbers for a batch of maps, or ``None`` for a dataset without anatomy.

    Args:
        maps: ``(N, *spatial)`` maps of the samples.
        x_raw: The samples as stored ``(N, *spatial, C)`` (masks / fundus photos, [0, 1]).
        flag: MedMNIST dataset flag.

    Returns:
        3D masks: mean energy shares ``inside``/``band``/``outside``, their area shares (what a
        uniform map scores), ``pointing_hit`` (peak inside gland or band) and
        ``pointing_energy`` (energy in gland + band). RetinaMNIST: the same for ``disk`` /
        ``background`` and the optic disc (``disc_found`` = share of images where it was found;
        disc numbers over those images only).
    """
    flag = flag.lower()
    heat = np.asarray(maps, np.float64)
    x = np.asarray(x_raw, np.float32)
    if heat.shape != x.shape[:-1]:
        raise ValueError(f"maps {heat.shape} do not match samples {x.shape}")
    if flag in SHAPE_MASK_FLAGS:
        energy, area, hits = [], [], []
        for h, v in zip(heat, x, strict=True):
            regions = gland_regions(v)
            energy.append(energy_shares(h, regions))
            area.append({k: float(m.mean()) for k, m in regions.items()})
            hits.append(_peak_in(h, regions["inside"] | regions["band"]))
        out = {k: _mean([e[k] for e in energy]) for k in ("inside", "band", "outside")}
        out.update(
            {f"area_{k}": _mean([a[k] for a in area]) for k in ("inside", "band", "outside")}
        )
        out["pointing_hit"] = float(np.mean(hits))
        out["pointing_energy"] = _sum_or_none(out["inside"], out["band"])
        out["n"] = len(heat)
        return out
    if flag == "retinamnist":
        disk = anatomy_mask(x, flag)
        e_disk, a_disk, e_disc, a_disc, hit_disc, found = [], [], [], [], [], []
        for h, img, d in zip(heat, x, disk, strict=True):
            e_disk.append(energy_shares(h, {"disk": d})["disk"])
            a_disk.append(float(d.mean()))
            centre, ok = locate_optic_disc(img)
            found.append(ok)
            if ok:
                m = _disc_mask(h.shape, centre)
                e_disc.append(energy_shares(h, {"disc": m})["disc"])
                a_disc.append(float(m.mean()))
                hit_disc.append(_peak_in(h, m))
        return {
            "n": len(heat),
            "disk": _mean(e_disk),
            "background": None if _mean(e_disk) is None else 1.0 - _mean(e_disk),
            "area_disk": _mean(a_disk),
            "disc_found": float(np.mean(found)),
            "disc_energy": _mean(e_disc),
            "area_disc": _mean(a_disc),
            "disc_pointing_hit": float(np.mean(hit_disc)) if hit_disc else None,
        }
    return None


def _mean(values: list[float]) -> float | None:
    arr = np.asarray(values, np.float64)
    arr = arr[np.isfinite(arr)]
    return float(arr.mean()) if arr.size else None


def _sum_or_none(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a + b
