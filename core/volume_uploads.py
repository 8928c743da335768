"""A user's own 3D volume: NIfTI (``.nii``, ``.nii.gz``), NumPy ``.npy``/``.npz`` and a DICOM
series as a ``.zip`` of slices (``core.dicom_zip``), in memory.

Like the 2D uploads (``core.uploads``), a file is judged by its content, never its name, and
nothing is written to disk. Sizes are checked before anything large is allocated: the byte
count of the upload, the voxel count from the file's *header* (NIfTI header, ``.npy`` header,
the zip directory of an ``.npz``) before the data is read, and gzip output is decompressed
with a cap, so a small file that would expand to gigabytes (a gzip bomb) is refused after at
most the cap has been produced.

Then the content: 3D only (a 4D file with several volumes gets "pick one volume" and its
shape), finite values (no NaN/inf), not constant, and a plausible voxel spacing. The volume is
resampled to the model's cube (28³ or 64³) *keeping its physical aspect* (the spacing from the
NIfTI header; ``.npy``/``.npz`` have none, so 1 mm isotropic is assumed and said), padded to the
cube and scaled to [0, 1]. Whether it is a binary mask or an intensity image is reported, so a
page can warn when it does not match the model's dataset (:func:`modality_warning`).

Every failure is a :class:`VolumeUploadError` whose message says what is wrong and what to do
in numbered steps; no other exception leaves :func:`prepare_volume`.

Measured: nibabel reads NIfTI-1/2 from bytes (``Nifti1Image.from_bytes``) but has no size cap
for ``.nii.gz`` (it decompresses everything it is given), hence the capped gzip step here.
"""

from __future__ import annotations

import io
import zipfile
import zlib
from dataclasses import dataclass, field

import numpy as np

from core import info
from core.dicom_zip import DicomSeriesError, looks_like_dicom, read_dicom_zip

MAX_BYTES = 5 * 1024 * 1024
"""Largest upload (matches ``server.maxUploadSize = 5`` in .streamlit/config.toml)."""
MAX_VOXELS = 256**3
"""Largest volume (16.8 M voxels, 67 MB as float32): far above the models' 64³ grid."""
MAX_RAW_BYTES = MAX_VOXELS * 8 + 64 * 1024
"""Largest decompressed content (float64 voxels plus a header): the gzip/zip output cap."""
MIN_SIDE = 4
MAX_SPACING_MM = 50.0  # thicker "slices" than 5 cm are a unit mistake (metres? cm?), not a scan
MIN_SPACING_MM = 0.01  # 10 µm; a header written in metres gives 0.001
MAX_ANISOTROPY = 50.0  # a 0.5 mm x 0.5 mm x 25 mm scan is already extreme

_GZIP = b"\x1f\x8b"
_NPY = b"\x93NUMPY"
_ZIP = b"PK\x03\x04"
_STEPS = (
    "1. Export the volume again as NIfTI (`.nii` or `.nii.gz`), as a NumPy `.npy` file "
    "holding one 3D array, or as a zip of the series' DICOM files.\n2. Upload that file."
)


class VolumeUploadError(ValueError):
    """A volume upload that cannot be used; the message is for the person who uploaded it."""


@dataclass(frozen=True)
class PreparedVolume:
    """An uploaded volume, as loaded and as the model sees it.

    Attributes:
        array: float32 ``(S, S, S, 1)`` in [0, 1], ``S`` the model's grid side.
        original: float32 ``(D, H, W)`` as uploaded (NIfTI: reoriented to RAS, then z, y, x).
        spacing: voxel size in mm along ``(D, H, W)`` of ``original``.
        format: "NIfTI-1", "NIfTI-2", "NumPy .npy", "NumPy .npz" or "DICOM series (zip)".
        is_mask: only two distinct values (a binary shape mask, like AdrenalMNIST3D).
        notes: what was done to the volume, in order, for the page to list.
    """

    array: np.ndarray
    original: np.ndarray
    spacing: tuple[float, float, float]
    format: str
    is_mask: bool
    notes: list[str] = field(default_factory=list)


def _mb(n: int) -> str:
    return f"{n / (1024 * 1024):.1f} MB"


def _gunzip_capped(data: bytes, cap: int) -> bytes:
    """Decompress gzip data, refusing as soon as the output would pass ``cap`` bytes."""
    inflater = zlib.decompressobj(wbits=31)
    try:
        out = inflater.decompress(data, cap + 1)
    except zlib.error as exc:
        raise VolumeUploadError(
            f"The file starts like a gzip archive but cannot be decompressed ({exc}); it is "
            f"probably truncated or damaged.\n{_STEPS}"
        ) from exc
    if len(out) <= cap and not inflater.eof:
        raise VolumeUploadError(
            "The gzip archive ends early: the file is truncated or damaged (an interrupted "
            f"download or copy?).\n{_STEPS}"
        )
    if len(out) > cap:
        raise VolumeUploadError(
            f"The compressed file expands to more than {_mb(cap)} (a {_mb(len(data))} "
            "upload): refused before decompressing the rest, as a safeguard against "
            f"decompression bombs. Volumes up to {MAX_VOXELS:,} voxels are accepted.\n"
            "1. Crop or downsample the volume (the models look at 28³ or 64³ voxels).\n"
            "2. Upload it again."
        )
    return out


def _check_voxels(shape: tuple[int, ...], where: str) -> None:
    count = int(np.prod([int(s) for s in shape], dtype=np.float64)) if shape else 0
    if count > MAX_VOXELS:
        raise VolumeUploadError(
            f"The volume is {' × '.join(str(s) for s in shape)} = {count:,} voxels ({where}); "
            f"at most {MAX_VOXELS:,} are accepted, checked before reading the data.\n"
            "1. Crop or downsample the volume (the models look at 28³ or 64³ voxels).\n"
            "2. Upload it again."
        )


def _read_nifti(data: bytes) -> tuple[np.ndarray, tuple[float, ...], str, list[str]]:
    import nibabel as nib

    notes: list[str] = []
    for image_class, name in ((nib.Nifti1Image, "NIfTI-1"), (nib.Nifti2Image, "NIfTI-2")):
        header_class = image_class.header_class
        try:
            # check=False: nibabel would silently "fix" a zero spacing to 1 before we see it
            header = header_class.from_fileobj(io.BytesIO(data), check=False)
        except Exception:  # noqa: BLE001 - nibabel raises several kinds for "not this format"
            continue
        if header["magic"].item() not in (b"n+1", b"n+2"):
            raise VolumeUploadError(
                f"This is a {name} header without its image data (a `.hdr` of a `.hdr`/`.img` "
                f"pair); only single-file NIfTI is accepted.\n{_STEPS}"
            )
        _check_voxels(tuple(int(s) for s in header.get_data_shape()), "from the NIfTI header")
        # before reorienting: a zero spacing makes nibabel's affine maths fail obscurely
        # (the raw pixdim: nibabel's get_zooms silently turns a 0 into 1)
        _check_spacing(tuple(abs(float(z)) for z in header["pixdim"][1:4]))
        try:
            image = image_class.from_bytes(data)
            image = nib.as_closest_canonical(image)
            array = np.asanyarray(image.dataobj)
        except Exception as exc:  # noqa: BLE001 - a boundary: any read failure is the file's
            raise VolumeUploadError(
                f"The {name} file could not be read ({type(exc).__name__}: {exc}); it is "
                f"probably truncated or damaged.\n{_STEPS}"
            ) from exc
        zooms = tuple(float(z) for z in image.header.get_zooms()[:3])
        notes.append(f"{name} file, reoriented to RAS (nibabel's closest canonical orientation)")
        return array, zooms, name, notes
    raise VolumeUploadError(f"The file is not a NIfTI image.\n{_STEPS}")


def _read_npy_stream(stream, where: str) -> np.ndarray:
    try:
        version = np.lib.format.read_magic(stream)
        read_header = (
            np.lib.format.read_array_header_1_0
            if version == (1, 0)
            else np.lib.format.read_array_header_2_0
        )
        shape, fortran, dtype = read_header(stream)
    except (ValueError, OSError) as exc:
        raise VolumeUploadError(
            f"The NumPy array header cannot be read ({exc}).\n{_STEPS}"
        ) from exc
    if dtype.hasobject:
        raise VolumeUploadError(
            "The array holds Python objects (pickled data), which are never loaded from an "
            f"upload for safety.\n{_STEPS}"
        )
    _check_voxels(tuple(shape), f"from the {where} header")
    count = int(np.prod(shape, dtype=np.int64))
    raw = stream.read(count * dtype.itemsize)  # bounded: the voxel count was checked above
    if len(raw) != count * dtype.itemsize:
        raise VolumeUploadError(
            f"The {where} holds {len(raw):,} bytes of data where its header promises "
            f"{count * dtype.itemsize:,}: the file is truncated.\n{_STEPS}"
        )
    return np.frombuffer(raw, dtype=dtype).reshape(shape, order="F" if fortran else "C")


def _read_npz(data: bytes) -> np.ndarray:
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        members = [m for m in archive.infolist() if not m.is_dir()]
    except (zipfile.BadZipFile, OSError) as exc:
        raise VolumeUploadError(f"The zip archive cannot be read ({exc}).\n{_STEPS}") from exc
    arrays = [m for m in members if m.filename.endswith(".npy")]
    if len(arrays) != 1 or len(members) != 1:
        names = ", ".join(m.filename.removesuffix(".npy") for m in members[:8]) or "none"
        raise VolumeUploadError(
            f"An `.npz` upload must hold exactly one array; this one holds {len(members)} "
            f"({names}).\n1. Save the one volume you want: `np.save('volume.npy', arr)` or "
            "`np.savez('volume.npz', arr)`.\n2. Upload that file."
        )
    member = arrays[0]
    if member.file_size > MAX_RAW_BYTES:  # the zip directory's size, before inflating
        raise VolumeUploadError(
            f"The array inside the `.npz` is {_mb(member.file_size)} uncompressed; at most "
            f"{_mb(MAX_RAW_BYTES)} is accepted, checked before decompressing.\n"
            "1. Crop or downsample the volume.\n2. Upload it again."
        )
    with archive.open(member) as stream:  # zipfile stops at the declared size
        return _read_npy_stream(stream, "`.npz` array")


def _is_dicom_zip(data: bytes) -> bool:
    """A zip whose first file is a DICOM file (an ``.npz`` holds ``.npy`` members)."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        first = next((m for m in archive.infolist() if not m.is_dir()), None)
        if first is None or first.filename.endswith(".npy"):
            return False
        with archive.open(first) as stream:
            return looks_like_dicom(stream.read(132))
    except (zipfile.BadZipFile, OSError, zlib.error):
        return False


def _sniff(data: bytes) -> str:
    if data.startswith(_NPY):
        return "npy"
    if data.startswith(_ZIP):
        return "npz"
    if len(data) >= 348:
        import struct

        for order in "<>":
            size = struct.unpack(order + "i", data[:4])[0]
            if size in (348, 540):
                return "nifti"
    if looks_like_dicom(data[:132]):
        raise VolumeUploadError(
            "This is a single DICOM file, one slice of a series.\n"
            "1. Put all the series' DICOM files into one zip archive.\n2. Upload the zip."
        )
    raise VolumeUploadError(
        "The file is not a NIfTI (`.nii`, `.nii.gz`), NumPy (`.npy`, `.npz`) or zipped DICOM "
        f"volume (judged by its content, not its name).\n{_STEPS}"
    )


def read_volume(data: bytes) -> tuple[np.ndarray, tuple[float, float, float], str, list[str]]:
    """Parse an upload's bytes into a 3D array ``(D, H, W)`` and its spacing in mm.

    Returns:
        ``(array, spacing, format, notes)``.

    Raises:
        VolumeUploadError: an unknown or damaged file, too large, not 3D.
    """
    if not isinstance(data, bytes | bytearray) or not data:
        raise VolumeUploadError(f"The file is empty.\n{_STEPS}")
    if len(data) > MAX_BYTES:
        raise VolumeUploadError(
            f"The file is {_mb(len(data))}; at most {_mb(MAX_BYTES)} is accepted.\n"
            "1. Compress it (`.nii.gz`) or crop/downsample the volume.\n2. Upload it again."
        )
    data = bytes(data)
    notes: list[str] = []
    if data.startswith(_GZIP):
        data = _gunzip_capped(data, MAX_RAW_BYTES)
        notes.append("gzip-compressed")
    kind = _sniff(data)
    if kind == "nifti":
        array, zooms, fmt, more = _read_nifti(data)
        notes += more
    elif kind == "npy":
        array, zooms, fmt = _read_npy_stream(io.BytesIO(data), "`.npy`"), None, "NumPy .npy"
    elif not _is_dicom_zip(data):
        array, zooms, fmt = _read_npz(data), None, "NumPy .npz"
    else:
        try:
            array, spacing, more = read_dicom_zip(data, MAX_RAW_BYTES, MAX_VOXELS)
        except DicomSeriesError as exc:
            raise VolumeUploadError(str(exc)) from exc
        array = _as_3d(array, notes + more)
        return array, _check_spacing(spacing), "DICOM series (zip)", notes + more
    array = _as_3d(np.asarray(array), notes)
    if zooms is None:
        spacing = (1.0, 1.0, 1.0)
        notes.append("no voxel spacing in a NumPy file: 1 mm isotropic assumed")
    else:
        # NIfTI arrays are (x, y, z); the models' volumes are (depth, height, width) = (z, y, x)
        array = np.ascontiguousarray(np.transpose(array, (2, 1, 0)))
        spacing = (zooms[2], zooms[1], zooms[0])
    return array, _check_spacing(spacing), fmt, notes


def _as_3d(array: np.ndarray, notes: list[str]) -> np.ndarray:
    shape = " × ".join(str(s) for s in array.shape)
    if array.ndim == 4 and array.shape[-1] == 1:
        notes.append("a trailing axis of length 1 was dropped")
        array = array[..., 0]
    if array.ndim == 4:
        raise VolumeUploadError(
            f"This file holds {array.shape[-1]} volumes (shape {shape}); pick one volume.\n"
            "1. Save one of them alone, e.g. `nib.save(img.slicer[..., 0], 'one.nii.gz')` or "
            "`np.save('one.npy', arr[..., 0])`.\n2. Upload that file."
        )
    if array.ndim != 3:
        what = "a 2D image" if array.ndim == 2 else f"a {array.ndim}-dimensional array"
        raise VolumeUploadError(
            f"This is {what} (shape {shape or 'scalar'}), not a 3D volume.\n"
            "1. For a 2D image use the Grad-CAM page's upload.\n"
            "2. For a volume, upload a file holding one 3D array."
        )
    if min(array.shape) < MIN_SIDE:
        raise VolumeUploadError(
            f"The volume is only {shape} voxels; each side needs at least {MIN_SIDE}.\n{_STEPS}"
        )
    if array.dtype.kind not in "biuf":
        raise VolumeUploadError(
            f"The voxels are of type {array.dtype}, not numbers (integers or floats).\n{_STEPS}"
        )
    return array


def _check_spacing(spacing: tuple[float, ...]) -> tuple[float, float, float]:
    values = tuple(float(s) for s in spacing)
    text = " × ".join(f"{s:g}" for s in values)
    ok = all(np.isfinite(s) and MIN_SPACING_MM <= s <= MAX_SPACING_MM for s in values)
    if not ok or max(values) / min(values) > MAX_ANISOTROPY:
        raise VolumeUploadError(
            f"The voxel spacing in the file's header is {text} mm, which no scan has "
            f"(expected {MIN_SPACING_MM:g}–{MAX_SPACING_MM:g} mm per axis, at most "
            f"{MAX_ANISOTROPY:g}× thicker along one axis).\n"
            "1. Check the header's pixdim (e.g. `nib.load(f).header.get_zooms()`): it may be "
            "in metres or left at 0.\n2. Fix it (`img.header.set_zooms(...)`) and upload again."
        )
    return values  # type: ignore[return-value]


def _check_values(array: np.ndarray) -> np.ndarray:
    values = array.astype(np.float32, copy=False)
    bad = ~np.isfinite(values)
    if bad.any():
        n_nan = int(np.isnan(values).sum())
        raise VolumeUploadError(
            f"The volume holds {n_nan:,} NaN and {int(bad.sum()) - n_nan:,} infinite values.\n"
            "1. Replace them (e.g. `np.nan_to_num(arr)`) or mask them out.\n"
            "2. Upload the cleaned volume."
        )
    if float(values.min()) == float(values.max()):
        raise VolumeUploadError(
            f"Every voxel has the same value ({float(values.min()):g}): the volume is empty.\n"
            "1. Check that the right file was exported (not a blank mask).\n2. Upload it again."
        )
    return values


def resample_to_grid(
    volume: np.ndarray, spacing: tuple[float, float, float], side: int, mask: bool
) -> tuple[np.ndarray, list[str]]:
    """Fit a volume into a ``side``³ cube keeping its physical aspect, centred, zero-padded.

    Args:
        volume: ``(D, H, W)`` float32 in [0, 1].
        spacing: mm per voxel along ``(D, H, W)``.
        side: the model's grid (28 or 64).
        mask: nearest-neighbour interpolation (a mask stays binary) instead of linear.

    Returns:
        ``((side, side, side) float32, notes)``.
    """
    from scipy import ndimage

    extent = np.asarray(volume.shape, float) * np.asarray(spacing, float)
    voxel = extent.max() / side  # one isotropic voxel size: the longest axis fills the cube
    target = np.maximum(1, np.round(extent / voxel).astype(int))
    target = np.minimum(target, side)
    zoom = target / np.asarray(volume.shape, float)
    out = ndimage.zoom(volume, zoom, order=0 if mask else 1, grid_mode=True, mode="nearest")
    out = np.clip(out[: target[0], : target[1], : target[2]], 0.0, 1.0)
    cube = np.zeros((side, side, side), np.float32)
    start = [(side - s) // 2 for s in out.shape]
    cube[tuple(slice(b, b + s) for b, s in zip(start, out.shape, strict=True))] = out
    notes = [
        f"resampled to {side}³ voxels of {voxel:.2f} mm keeping the aspect "
        f"({' × '.join(str(t) for t in out.shape)} voxels of the cube hold the volume)"
    ]
    return cube, notes


def prepare_volume(data: bytes, side: int) -> PreparedVolume:
    """Validate an uploaded volume and convert it to the model's ``side``³ input.

    Args:
        data: the uploaded file's bytes (kept in memory only).
        side: the model's grid side (28 or 64).

    Returns:
        The :class:`PreparedVolume`.

    Raises:
        VolumeUploadError: anything wrong with the file; the message has numbered steps.
    """
    try:
        array, spacing, fmt, notes = read_volume(data)
        values = _check_values(array)
        low, high = float(values.min()), float(values.max())
        is_mask = bool(np.all((values == low) | (values == high)))  # two values only
        scaled = (values - low) / (high - low)
        notes.append(
            "binary mask (two values), scaled to 0/1"
            if is_mask
            else f"intensities {low:g}…{high:g} scaled to 0…1"
        )
        cube, more = resample_to_grid(scaled, spacing, side, is_mask)
    except VolumeUploadError:
        raise
    except (MemoryError, ValueError, TypeError, OSError) as exc:  # a boundary, as core.uploads
        raise VolumeUploadError(
            f"The volume could not be processed ({type(exc).__name__}: {exc}).\n{_STEPS}"
        ) from exc
    return PreparedVolume(
        array=cube[..., None],
        original=scaled.astype(np.float32),
        spacing=spacing,
        format=fmt,
        is_mask=bool(is_mask),
        notes=notes + more,
    )


def modality_warning(flag: str, is_mask: bool) -> str | None:
    """A warning when the upload's kind does not match what the dataset's models saw, else None.

    Args:
        flag: the model's dataset (e.g. "adrenalmnist3d", binary shape masks).
        is_mask: :attr:`PreparedVolume.is_mask` of the upload.
    """
    trained_on_masks = "mask" in info.modality_note(flag)
    if trained_on_masks and not is_mask:
        return (
            f"This model ({flag}) was trained on binary shape masks, but the upload is an "
            "intensity image: its prediction means little. Upload a segmentation mask of the "
            "organ instead."
        )
    if not trained_on_masks and is_mask:
        return (
            f"This model ({flag}) was trained on intensity volumes "
            f"({info.modality_note(flag)}), but the upload is a binary mask: its prediction "
            "means little. Upload the scan itself."
        )
    return None
