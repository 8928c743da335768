"""A finished run, packed as tar bytes on the node and written atomically into the registry.

A Ray node need not share a filesystem with the app: the task trains into a scratch registry
of its own, :func:`pack_run` turns the run directory into bytes that travel back through Ray's
object store, and :func:`install_run` writes them into this machine's registry the way
``core.registry.save_run`` does — a hidden scratch folder, fsynced, renamed into place in one
step — so the registry never shows half a run and an existing run is never overwritten.
"""

from __future__ import annotations

import io
import os
import shutil
import tarfile
import tempfile
from pathlib import Path

from core import registry, scratch_dirs


def pack_run(run_dir: str | os.PathLike) -> bytes:
    """The files of ``run_dir`` as an uncompressed tar (model weights barely compress).

    Returns:
        The archive; its members are relative to ``run_dir`` (no top-level folder).
    """
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        tar.add(str(run_dir), arcname=".")
    return buffer.getvalue()


def install_run(archive: bytes, name: str, root: str | os.PathLike | None = None) -> Path:
    """Write a packed run into the registry as ``<root>/<name>``, atomically.

    Args:
        archive: bytes from :func:`pack_run`.
        name: the run's directory name (checked like every run name).
        root: the registry (default: ``TRAINED_MODELS_DIR`` or ``trained_models/``).

    Returns:
        The new run directory.

    Raises:
        core.registry.RegistryError: a run of that name exists, or the archive holds no run.
        tarfile.TarError: the archive is damaged or has members outside the run (the ``data``
            extraction filter refuses absolute paths, ``..`` and device files).
    """
    base = registry.root_dir(root)
    base.mkdir(parents=True, exist_ok=True)
    name = registry.validate_run_name(name)
    final = base / name
    if final.exists():
        raise registry.RegistryError(f"run {name!r} already exists in {base}; not overwritten")
    scratch = Path(tempfile.mkdtemp(prefix=scratch_dirs.scratch_prefix(name), dir=base))
    try:
        with tarfile.open(fileobj=io.BytesIO(archive), mode="r") as tar:
            tar.extractall(scratch, filter="data")
        if not (scratch / "config.json").is_file():
            raise registry.RegistryError(
                f"the archive of run {name!r} has no config.json; nothing was installed"
            )
        os.chmod(scratch, 0o755)
        for path in scratch.rglob("*"):
            if path.is_file():
                with path.open("rb") as fh:
                    os.fsync(fh.fileno())
        os.rename(scratch, final)  # atomic on one filesystem; fails if final appeared meanwhile
        fd = os.open(base, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    return final
