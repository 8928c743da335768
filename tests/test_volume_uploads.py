"""core.volume_uploads: real AdrenalMNIST3D volumes as NIfTI/NumPy uploads, and a battery of bad
files, each refused with its own clear message and numbered steps."""

from __future__ import annotations

import gzip
import io
import pickle
import zlib

import nibabel as nib
import numpy as np
import pytest
from conftest import require_real_file

from core import volume_uploads as vu
from core.volume_uploads import VolumeUploadError, modality_warning, prepare_volume


@pytest.fixture(scope="module")
def volume() -> np.ndarray:
    """A real AdrenalMNIST3D test volume, (D, H, W) uint8 0/255."""
    return np.load(require_real_file("adrenalmnist3d"))["test_images"][7]


def nifti_bytes(zyx: np.ndarray, zooms=(1.0, 1.0, 1.0), gz: bool = True, two: bool = False):
    """A single-file NIfTI of a (z, y, x) array: stored as (x, y, z) with an RAS affine."""
    xyz = np.transpose(zyx, (2, 1, 0)) if zyx.ndim == 3 else zyx
    image_class = nib.Nifti2Image if two else nib.Nifti1Image
    valid = all(z > 0 for z in zooms)  # nibabel cannot build an affine from a zero zoom
    image = image_class(xyz, affine=np.diag([*zooms, 1.0]) if valid else None)
    image.header.set_zooms(zooms[: xyz.ndim] if xyz.ndim <= 3 else (*zooms, 1.0))
    raw = image.to_bytes()
    return gzip.compress(raw) if gz else raw


def npy_bytes(array: np.ndarray, allow_pickle: bool = False) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=allow_pickle)
    return buf.getvalue()


def npz_bytes(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


# --- good files -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "fmt"),
    [
        (lambda v: nifti_bytes(v), "NIfTI-1"),
        (lambda v: nifti_bytes(v, gz=False), "NIfTI-1"),
        (lambda v: nifti_bytes(v, two=True), "NIfTI-2"),
        (lambda v: npy_bytes(v), "NumPy .npy"),
        (lambda v: npz_bytes(volume=v), "NumPy .npz"),
    ],
)
def test_a_real_volume_round_trips_exactly(volume, make, fmt):
    prepared = prepare_volume(make(volume), 28)
    assert prepared.format == fmt
    assert prepared.is_mask
    assert prepared.array.shape == (28, 28, 28, 1) and prepared.array.dtype == np.float32
    # 1 mm voxels on a 28³ grid: nothing to resample, the model sees the volume as stored
    np.testing.assert_array_equal(prepared.array[..., 0], volume / 255.0)
    assert prepared.spacing == (1.0, 1.0, 1.0)
    assert modality_warning("adrenalmnist3d", prepared.is_mask) is None
    assert modality_warning("nodulemnist3d", prepared.is_mask) is not None


def test_resampling_keeps_the_physical_aspect(volume):
    half = volume[::2]  # 14 slices ...
    thick = prepare_volume(nifti_bytes(half, zooms=(1.0, 1.0, 2.0)), 28)  # ... 2 mm apart
    assert thick.spacing == (2.0, 1.0, 1.0)
    assert "(28 × 28 × 28 voxels of the cube hold the volume)" in thick.notes[-1]
    # the organ spans as many slices as in the full-resolution volume (± the lost half-slices)
    assert abs(thick.array[..., 0].any(axis=(1, 2)).sum() - volume.any(axis=(1, 2)).sum()) <= 2
    flat = prepare_volume(nifti_bytes(half, zooms=(1.0, 1.0, 1.0)), 28)
    assert "(14 × 28 × 28 voxels of the cube hold the volume)" in flat.notes[-1]
    occupied = np.flatnonzero(flat.array[..., 0].any(axis=(1, 2)))
    assert occupied.min() >= 7 and occupied.max() < 21  # 14 mm of 28: centred, padded
    big = prepare_volume(nifti_bytes(volume), 64)
    assert big.array.shape == (64, 64, 64, 1) and set(np.unique(big.array)) == {0.0, 1.0}


def test_an_intensity_volume_is_scaled_and_flagged_against_a_mask_model(volume):
    rng = np.random.default_rng(0)
    ct = (volume.astype(np.int16) * 4 - 1000 + rng.integers(0, 50, volume.shape)).astype(np.int16)
    prepared = prepare_volume(nifti_bytes(ct), 28)
    assert not prepared.is_mask
    assert prepared.array.min() == 0.0 and prepared.array.max() == 1.0
    assert "binary shape masks" in modality_warning("adrenalmnist3d", prepared.is_mask)
    assert modality_warning("nodulemnist3d", prepared.is_mask) is None


# --- the battery of bad files ---------------------------------------------------------------


def _bomb() -> bytes:
    """gzip of more zeros than the cap: ~150 kB that would expand to ~140 MB."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    chunk = bytes(1024 * 1024)
    parts = [packer.compress(chunk) for _ in range(vu.MAX_RAW_BYTES // len(chunk) + 2)]
    return b"".join(parts) + packer.flush()


def _huge_header() -> bytes:
    header = nib.Nifti1Header()
    header.set_data_shape((1000, 1000, 1000))
    header.set_data_dtype(np.uint8)
    return gzip.compress(header.binaryblock + b"\x00" * 4 + b"\x00" * 1000)


def _huge_npy() -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buf, {"descr": "<f8", "fortran_order": False, "shape": (2000, 2000, 2000)}
    )
    return buf.getvalue() + b"\x00" * 64


BAD = {
    "empty": (lambda v: b"", "empty"),
    "too many bytes": (lambda v: b"\x93NUMPY" + bytes(vu.MAX_BYTES), "at most 5.0 MB"),
    "gzip bomb": (lambda v: _bomb(), "decompression bombs"),
    "huge NIfTI header": (lambda v: _huge_header(), "1,000,000,000 voxels"),
    "huge npy header": (lambda v: _huge_npy(), "checked before reading"),
    "4D, several volumes": (
        lambda v: nifti_bytes(np.stack([v.T] * 3, axis=-1)),
        "pick one volume",
    ),
    "2D image": (lambda v: npy_bytes(v[14]), "2D image"),
    "NaN": (lambda v: npy_bytes(np.where(v > 0, np.nan, 0.0)), "NaN"),
    "infinite": (lambda v: npy_bytes(np.where(v > 0, np.inf, 0.0)), "infinite"),
    "constant": (lambda v: nifti_bytes(np.full_like(v, 7)), "same value"),
    "zero spacing": (lambda v: nifti_bytes(v, zooms=(1.0, 1.0, 0.0)), "voxel spacing"),
    "spacing in metres?": (lambda v: nifti_bytes(v, zooms=(0.001, 0.001, 0.001)), "pixdim"),
    "absurd anisotropy": (lambda v: nifti_bytes(v, zooms=(0.1, 0.1, 40.0)), "voxel spacing"),
    "npz with two arrays": (lambda v: npz_bytes(a=v, b=v), "exactly one array"),
    "pickled object array": (
        lambda v: npy_bytes(np.array([{"a": 1}] * 8, dtype=object), allow_pickle=True),
        "Python objects",
    ),
    "pickle file": (lambda v: pickle.dumps(v), "not a NIfTI"),
    "PNG image": (lambda v: b"\x89PNG\r\n\x1a\n" + bytes(500), "not a NIfTI"),
    "truncated .nii.gz": (lambda v: (b := nifti_bytes(v))[: len(b) // 2], "truncated or damaged"),
    "truncated .nii": (lambda v: nifti_bytes(v, gz=False)[:2000], "truncated"),
    "truncated .npy": (lambda v: npy_bytes(v)[:5000], "truncated"),
    "tiny volume": (lambda v: npy_bytes(v[:2, :2, :2]), "at least 4"),
    "strings": (lambda v: npy_bytes(np.full((8, 8, 8), "x")), "not numbers"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_a_bad_volume_is_refused_with_a_clear_message(volume, case):
    make, expected = BAD[case]
    with pytest.raises(VolumeUploadError) as caught:
        prepare_volume(make(volume), 28)
    message = str(caught.value)
    assert expected in message, message
    assert "1." in message and "2." in message, message  # numbered steps


def test_the_bomb_is_small_and_refused_without_inflating_it_all():
    bomb = _bomb()
    assert len(bomb) < 1_000_000  # a small upload ...
    with pytest.raises(VolumeUploadError, match="decompression bombs"):
        vu._gunzip_capped(bomb, 1024 * 1024)  # ... stopped after the cap's worth of output


# --- DICOM series as a zip ------------------------------------------------------------------


def dicom_slice(plane: np.ndarray, z: float, series: str, number: int, syntax=None) -> bytes:
    """One CT slice as a DICOM Part 10 file (int16 stored values, HU = value - 1024)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = syntax or ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
    ds.SeriesInstanceUID, ds.Modality, ds.InstanceNumber = series, "CT", number
    ds.Rows, ds.Columns = plane.shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.ImagePositionPatient = [0.0, 0.0, z]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.PixelSpacing = [0.7, 0.7]
    ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
    if syntax is None:
        ds.PixelData = plane.astype(np.int16).tobytes()
    else:  # a compressed syntax: an encapsulated (here: broken) JPEG frame
        from pydicom.encaps import encapsulate

        ds.PixelData = encapsulate([b"\xff\xd8\xff\xe0" + bytes(64)])
        ds["PixelData"].VR = "OB"
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def dicom_zip(files: dict[str, bytes]) -> bytes:
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return buf.getvalue()


def series_files(volume: np.ndarray, series: str = "1.2.3", order=None) -> dict[str, bytes]:
    order = range(len(volume)) if order is None else order
    return {
        f"series/IM{k:04d}.dcm": dicom_slice(volume[k].astype(np.int16) * 4, 2.5 * k, series, k + 1)
        for k in order
    }


def test_a_zipped_dicom_series_is_sorted_rescaled_and_spaced(volume):
    shuffled = np.random.default_rng(1).permutation(len(volume))  # file order is no guide
    array, spacing, fmt, notes = vu.read_volume(dicom_zip(series_files(volume, order=shuffled)))
    assert fmt == "DICOM series (zip)"
    np.testing.assert_array_equal(array, volume.astype(np.float32) * 4 - 1024)  # HU
    assert spacing == (2.5, 0.7, 0.7)
    assert any("sorted along the slice normal" in n for n in notes)
    prepared = prepare_volume(dicom_zip(series_files(volume)), 28)
    assert prepared.is_mask and prepared.array.shape == (28, 28, 28, 1)


DICOM_BAD = {
    "two series": (
        lambda v: dicom_zip(
            {
                **series_files(v[:8], "1.1"),
                **{
                    f"b/{k}.dcm": dicom_slice(v[k] * 4, 2.5 * k, "2.2", k + 1) for k in range(8, 12)
                },
            }
        ),
        "pick one series",
    ),
    "a text file among the slices": (
        lambda v: dicom_zip({**series_files(v[:6]), "series/readme.txt": b"hello" * 40}),
        "not a DICOM file",
    ),
    "one slice": (lambda v: dicom_zip(series_files(v[:1])), "single slice"),
    "slices of two sizes": (
        lambda v: dicom_zip(
            {**series_files(v[:6]), "x.dcm": dicom_slice(v[0, :20], 99, "1.2.3", 99)}
        ),
        "differ in size",
    ),
    "duplicate positions": (
        lambda v: dicom_zip(
            {
                "a.dcm": dicom_slice(v[0], 0.0, "1.2.3", 1),
                "b.dcm": dicom_slice(v[1], 0.0, "1.2.3", 2),
            }
        ),
        "same position",
    ),
    "compressed pixel data": (
        lambda v: dicom_zip(
            {
                f"{k}.dcm": dicom_slice(
                    v[k] * 4, 2.5 * k, "1.2.3", k + 1, syntax="1.2.840.10008.1.2.4.50"
                )
                for k in range(4)
            }
        ),
        "cannot be decoded",
    ),
    "a lone DICOM file": (lambda v: dicom_slice(v[0], 0.0, "1.2.3", 1), "single DICOM file"),
}


@pytest.mark.parametrize("case", sorted(DICOM_BAD))
def test_a_bad_dicom_upload_is_refused_with_a_clear_message(volume, case):
    make, expected = DICOM_BAD[case]
    with pytest.raises(VolumeUploadError) as caught:
        prepare_volume(make(volume), 28)
    message = str(caught.value)
    assert expected in message, message
    assert "1." in message and "2." in message, message
