"""Scratch folders of atomic registry saves: who owns one, and when it may be removed.

``core.registry.save_run`` writes a run into ``<registry>/.tmp-<run>-<pid>@<host>-XXXXXXXX``
and renames it into place. A process killed during the save (``kill -9``, OOM killer, power
loss) leaves that folder behind; the worker and ``python -m core.train`` remove such leftovers
when they start (``registry.clean_scratch``).

A scratch folder must never be removed while its save is still running in another process
(that save would then fail, or worse, rename a half-deleted folder into a run). So a folder is
*stale* only when:

- its name records a pid on this machine and that process no longer exists (the precise test:
  a killed save is cleaned at the next start, not hours later), or
- it has not been written to for ``MAX_AGE_S`` (6 h) — the fallback for folders made on another
  machine sharing the registry, folders from before the owner was recorded, and a pid that
  was reused by an unrelated process. A live save writes its files within seconds, so
  6 h of silence means nobody is saving there.

No TensorFlow, no streamlit.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import socket
import time
from pathlib import Path

PREFIX = ".tmp-"
MAX_AGE_S = 6 * 3600.0
# tempfile.mkdtemp appends 8 characters from [a-z0-9_]
_OWNER_RE = re.compile(r"-(?P<pid>\d+)@(?P<host>[0-9a-f]{8})-[a-z0-9_]+$")


def host_tag() -> str:
    """8 hex digits identifying this machine (a hash: host names may hold any character)."""
    return hashlib.sha1(socket.gethostname().encode("utf-8")).hexdigest()[:8]


def scratch_prefix(run_name: str, pid: int | None = None) -> str:
    """The ``mkdtemp`` prefix of a save of ``run_name`` by ``pid`` (default: this process)."""
    return f"{PREFIX}{run_name}-{pid or os.getpid()}@{host_tag()}-"


def owner(path: str | os.PathLike) -> tuple[int, str] | None:
    """``(pid, host tag)`` recorded in a scratch folder's name, or None (older name)."""
    match = _OWNER_RE.search(Path(path).name)
    return (int(match["pid"]), match["host"]) if match else None


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists on this machine (zombies count as alive)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


def last_write(path: Path) -> float:
    """Newest mtime of the folder and the files in it (a save writes files, not the folder)."""
    newest = path.lstat().st_mtime
    for entry in os.scandir(path):
        try:
            newest = max(newest, entry.stat(follow_symlinks=False).st_mtime)
        except FileNotFoundError:  # removed meanwhile (write_json_atomic's own temp file)
            continue
    return newest


def is_stale(
    path: str | os.PathLike, now: float | None = None, max_age_s: float = MAX_AGE_S
) -> bool:
    """Whether a scratch folder belongs to no running save (see the module docstring).

    Args:
        path: a ``.tmp-*`` folder in a registry.
        now: the current time (tests); default ``time.time()``.
        max_age_s: silence after which any scratch folder counts as abandoned.

    Returns:
        True when removing it cannot disturb a save in progress.
    """
    path = Path(path)
    recorded = owner(path)
    if recorded is not None and recorded[1] == host_tag() and not pid_alive(recorded[0]):
        return True
    try:
        age = (time.time() if now is None else now) - last_write(path)
    except FileNotFoundError:  # its save finished (renamed) or failed (removed) meanwhile
        return False
    return age > max_age_s


def clean_stale(base: Path, max_age_s: float = MAX_AGE_S) -> list[str]:
    """Remove the stale scratch folders directly under ``base``; return their names, sorted.

    Args:
        base: a registry folder (missing is fine: nothing to clean).
        max_age_s: see :func:`is_stale`.

    Returns:
        Names of the folders removed. Folders of live saves are left alone.
    """
    removed = []
    if not base.is_dir():
        return removed
    for path in sorted(base.glob(PREFIX + "*")):
        if path.is_dir() and not path.is_symlink() and is_stale(path, max_age_s=max_age_s):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path.name)
    return removed
