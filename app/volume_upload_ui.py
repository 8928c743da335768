"""The 3D viewer's upload: a user's own volume, checked and converted by core.volume_uploads.

Kept in memory only (Streamlit's ``UploadedFile`` bytes; nothing is written to disk). Nothing
here imports TensorFlow.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

import numpy as np
import streamlit as st

from app import figures
from core.volume_uploads import (
    MAX_BYTES,
    VolumeUploadError,
    modality_warning,
    prepare_volume,
)


@st.cache_data(max_entries=4, ttl=900, show_spinner="Reading the volume…")  # ≤ 1 MB each (64³)
def _prepared(digest: str, side: int, _data: bytes):
    # keyed by the SHA-256 of the bytes: a slider move must not parse the file again
    return prepare_volume(_data, side)


def _plain(text: str) -> str:
    """A file name safe inside Markdown: its special characters escaped."""
    return re.sub(r"([\\`*_{}\[\]()<>#+\-.!|~])", r"\\\1", text)


@dataclass(frozen=True)
class UploadedVolume:
    """What the viewer needs of an accepted upload.

    Attributes:
        volume: The model's view, ``(side, side, side)`` float32 in [0, 1].
        digest: SHA-256 hex of the file's bytes.
        format: ``PreparedVolume.format`` (tells the viewer the orientation).
        is_mask: Two values only (a binary mask: no window/level).
    """

    volume: np.ndarray
    digest: str
    format: str
    is_mask: bool


def volume_upload_ui(flag: str, side: int) -> UploadedVolume | None:
    """Draw the uploader; return the accepted upload, or None.

    Args:
        flag: the dataset whose models will look at the volume (for the mask/intensity check).
        side: the models' grid side (28 or 64): the volume is resampled to ``side``³.

    Returns:
        The ``UploadedVolume``, or None while no valid file is uploaded (the reason is on
        screen).
    """
    upload = st.file_uploader(
        f"NIfTI (.nii, .nii.gz), NumPy (.npy, .npz with one array) or a DICOM series (.zip "
        f"of its slice files), at most "
        f"{MAX_BYTES // (1024 * 1024)} MB; resampled to {side}³ voxels",
        type=["nii", "gz", "npy", "npz", "zip"],
        key="volume_upload",
        help="Checked by content (3D only, finite values, a plausible voxel spacing) and kept "
        "in memory only, never written to disk.",
    )
    if upload is None:
        st.info(
            "Upload a volume to view it and, with a model picked, see its prediction and "
            "3D Grad-CAM.",
            icon=":material/upload:",
        )
        return None
    data = upload.getvalue()
    digest = hashlib.sha256(data).hexdigest()
    try:
        prepared = _prepared(digest, side, data)
    except VolumeUploadError as exc:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        st.error(
            f"**{_plain(upload.name)}** was not accepted. " + "  \n".join(lines),
            icon=":material/image_not_supported:",
        )
        return None
    shape = " × ".join(str(s) for s in prepared.original.shape)
    spacing = " × ".join(f"{s:g}" for s in prepared.spacing)
    st.success(
        f"Accepted **{_plain(upload.name)}**: {prepared.format}, {shape} voxels of {spacing} mm.",
        icon=":material/check_circle:",
    )
    with st.expander("What was done to the volume, and the original beside the model's view"):
        for note in prepared.notes:
            st.caption(f"• {note}")
        cols = st.columns(2)
        mid = prepared.original.shape[0] // 2
        cols[0].image(
            figures.upscale(prepared.original[mid], 224),
            caption=f"Original, axial slice {mid + 1}/{prepared.original.shape[0]}",
            output_format="PNG",
        )
        cols[1].image(
            figures.upscale(prepared.array[side // 2, ..., 0], 224),
            caption=f"Model's view, axial slice {side // 2 + 1}/{side}",
            output_format="PNG",
        )
    warning = modality_warning(flag, prepared.is_mask)
    if warning:
        st.warning(warning, icon=":material/warning:")
    return UploadedVolume(prepared.array[..., 0], digest, prepared.format, prepared.is_mask)
