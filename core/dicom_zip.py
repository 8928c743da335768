"""A DICOM series uploaded as one ``.zip`` of slice files, read in memory with pydicom.

:func:`read_dicom_zip` checks the archive from its directory before inflating anything (member
count, declared sizes), reads each slice's header first, keeps one series, sorts the slices
along the slice normal (``ImagePositionPatient`` projected on the cross product of
``ImageOrientationPatient``; ``InstanceNumber`` when positions are missing), applies
``RescaleSlope``/``RescaleIntercept`` (CT: Hounsfield units) and returns the volume with its
spacing. Every problem is a :class:`DicomSeriesError` with numbered steps; the caller
(``core.volume_uploads``) turns it into its own upload error.
"""

from __future__ import annotations

import io
import zipfile

import numpy as np

MAX_SLICES = 1024
_STEPS = (
    "1. Export the series again from the viewer or PACS as uncompressed DICOM files, one "
    "file per slice, and zip them (or export a NIfTI `.nii.gz`).\n2. Upload that file."
)


class DicomSeriesError(ValueError):
    """A DICOM zip that cannot be used; the message is for the person who uploaded it."""


def looks_like_dicom(head: bytes) -> bool:
    """A DICOM Part 10 file: 128 bytes of preamble, then ``DICM``."""
    return len(head) >= 132 and head[128:132] == b"DICM"


def _members(archive: zipfile.ZipFile, max_bytes: int) -> list[zipfile.ZipInfo]:
    files = [m for m in archive.infolist() if not m.is_dir()]
    files = [m for m in files if not m.filename.split("/")[-1].startswith(".")]  # macOS junk
    if not files:
        raise DicomSeriesError(f"The zip archive is empty.\n{_STEPS}")
    if len(files) > MAX_SLICES:
        raise DicomSeriesError(
            f"The zip holds {len(files):,} files; at most {MAX_SLICES:,} slices are accepted.\n"
            f"{_STEPS}"
        )
    total = sum(m.file_size for m in files)
    if total > max_bytes:
        raise DicomSeriesError(
            f"The zip expands to {total / 2**20:.1f} MB (from its directory, checked before "
            f"decompressing); at most {max_bytes / 2**20:.1f} MB is accepted.\n"
            "1. Crop or downsample the series.\n2. Upload it again."
        )
    return files


def _read_slices(archive: zipfile.ZipFile, files: list[zipfile.ZipInfo]) -> list:
    import pydicom
    from pydicom.errors import InvalidDicomError

    slices = []
    for member in files:
        with archive.open(member) as stream:  # zipfile stops at the declared size
            raw = stream.read()
        if not looks_like_dicom(raw[:132]):
            raise DicomSeriesError(
                f"`{member.filename}` in the zip is not a DICOM file (no DICM marker). Only "
                f"DICOM slices may be in the archive.\n{_STEPS}"
            )
        try:
            slices.append(pydicom.dcmread(io.BytesIO(raw)))
        except (InvalidDicomError, ValueError, OSError, EOFError) as exc:
            raise DicomSeriesError(
                f"`{member.filename}` could not be read as DICOM ({exc}).\n{_STEPS}"
            ) from exc
    return slices


def _normal(ds) -> np.ndarray | None:
    orientation = getattr(ds, "ImageOrientationPatient", None)
    if orientation is None or len(orientation) != 6:
        return None
    row, col = np.asarray(orientation[:3], float), np.asarray(orientation[3:], float)
    normal = np.cross(row, col)
    return normal if np.linalg.norm(normal) > 0.5 else None


def _sorted_with_spacing(slices: list) -> tuple[list, float, str]:
    normal = _normal(slices[0])
    positions = [getattr(ds, "ImagePositionPatient", None) for ds in slices]
    if normal is not None and all(p is not None and len(p) == 3 for p in positions):
        depth = [float(np.dot(normal, np.asarray(p, float))) for p in positions]
        order = np.argsort(depth)
        steps = np.diff(np.asarray(depth)[order])
        if len(steps) and np.any(steps < 1e-6):
            raise DicomSeriesError(
                "Two slices of the series lie at the same position: it holds duplicates or "
                f"several acquisitions.\n{_STEPS}"
            )
        spacing = float(np.median(steps)) if len(steps) else 1.0
        return [slices[i] for i in order], spacing, "sorted along the slice normal"
    numbers = [getattr(ds, "InstanceNumber", None) for ds in slices]
    if any(n is None for n in numbers):
        raise DicomSeriesError(
            "The slices carry neither positions (ImagePositionPatient) nor instance numbers, "
            f"so their order is unknown.\n{_STEPS}"
        )
    order = np.argsort([int(n) for n in numbers])
    thickness = float(getattr(slices[0], "SliceThickness", 0) or 0)
    return [slices[i] for i in order], thickness or 1.0, "sorted by InstanceNumber"


def read_dicom_zip(
    data: bytes, max_bytes: int, max_voxels: int
) -> tuple[np.ndarray, tuple[float, float, float], list[str]]:
    """Read a zipped DICOM series into a ``(D, H, W)`` float32 volume.

    Args:
        data: the zip file's bytes.
        max_bytes: largest total uncompressed size (from the zip directory).
        max_voxels: largest volume, checked from the slice headers before stacking.

    Returns:
        ``(volume, spacing in mm along (D, H, W), notes)``.

    Raises:
        DicomSeriesError: anything wrong with the archive or the series.
    """
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, OSError) as exc:
        raise DicomSeriesError(f"The zip archive cannot be read ({exc}).\n{_STEPS}") from exc
    slices = _read_slices(archive, _members(archive, max_bytes))
    series = {str(getattr(ds, "SeriesInstanceUID", "")) for ds in slices}
    if len(series) > 1:
        raise DicomSeriesError(
            f"The zip holds {len(series)} series; pick one series (one folder of the export) "
            f"and zip only its files.\n{_STEPS}"
        )
    shapes = {(int(getattr(ds, "Rows", 0)), int(getattr(ds, "Columns", 0))) for ds in slices}
    if len(shapes) != 1:
        raise DicomSeriesError(
            f"The slices differ in size ({sorted(shapes)}), so they are not one series.\n{_STEPS}"
        )
    rows, cols = shapes.pop()
    if len(slices) * rows * cols > max_voxels:
        raise DicomSeriesError(
            f"The series is {len(slices)} × {rows} × {cols} voxels; at most {max_voxels:,} are "
            "accepted.\n1. Crop or downsample the series.\n2. Upload it again."
        )
    if len(slices) < 2:
        raise DicomSeriesError(f"The zip holds a single slice: a 2D image, not a volume.\n{_STEPS}")
    ordered, slice_spacing, how = _sorted_with_spacing(slices)
    planes = []
    for ds in ordered:
        try:
            pixels = ds.pixel_array
        except Exception as exc:  # noqa: BLE001 - pydicom raises many kinds (missing codecs)
            syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "unknown")
            raise DicomSeriesError(
                f"The pixel data cannot be decoded (transfer syntax {syntax}: {exc}). "
                f"Compressed DICOM needs codecs that are not installed here.\n{_STEPS}"
            ) from exc
        if pixels.ndim != 2:
            raise DicomSeriesError(
                f"A slice holds {pixels.ndim}-dimensional pixel data (colour or multi-frame), "
                f"not one grey plane.\n{_STEPS}"
            )
        slope = float(getattr(ds, "RescaleSlope", 1) or 1)
        intercept = float(getattr(ds, "RescaleIntercept", 0) or 0)
        planes.append(pixels.astype(np.float32) * slope + intercept)
    volume = np.stack(planes)
    pixel = getattr(ordered[0], "PixelSpacing", None) or (1.0, 1.0)
    spacing = (abs(slice_spacing), float(pixel[0]), float(pixel[1]))
    notes = [f"DICOM series of {len(planes)} slices, {how}", "rescale slope/intercept applied"]
    return volume, spacing, notes
