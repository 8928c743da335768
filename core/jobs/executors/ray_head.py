"""Watching a Ray cluster's head without Ray: plain TCP connects to its GCS port.

Ray ends a driver whose requests to a dead GCS stay unanswered for 60 s, and a probe through
Ray would be such a request; a TCP connect is not. :class:`HeadWatch` calls the head down after
:data:`HEAD_DOWN_AFTER_S` of refusals; :meth:`HeadWatch.answered_since` tells whether it has
seen the head answer since a given moment (the executor's check after a lost job).
"""

from __future__ import annotations

import logging
import socket
import threading
import time

log = logging.getLogger("core.jobs.worker")

# the head watch: a TCP connect to the GCS port every second; refused (or timed out) for
# HEAD_DOWN_AFTER_S means the head is gone. Detection + the executor's slowest poll (its channel
# drain, polled in half-second steps) + ray.shutdown (~5 s) stay far below Ray's own 60 s exit.
PROBE_EVERY_S = 1.0
PROBE_TIMEOUT_S = 2.0
HEAD_DOWN_AFTER_S = 5.0


def split_address(address: str) -> tuple[str, int] | None:
    """``(host, port)`` of a ``HOST:PORT`` address; None for ``auto`` or a ``ray://`` URL."""
    if "://" in address:
        return None
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        return None
    return host.strip("[]") or "127.0.0.1", int(port)


def gcs_reachable(target: tuple[str, int], timeout: float = PROBE_TIMEOUT_S) -> bool:
    """Whether the head's GCS port accepts a TCP connection (no Ray involved, so probing a dead
    head can never arm Ray's exit timer)."""
    try:
        with socket.create_connection(target, timeout=timeout):
            return True
    except OSError:
        return False


class HeadLost(Exception):
    """The head watch saw the head go away while a job was being started or polled."""


class HeadWatch:
    """Probes the head's GCS port every second from a daemon thread; :attr:`down` is set once
    it has refused connections for :data:`HEAD_DOWN_AFTER_S` (then the thread ends)."""

    def __init__(self, target: tuple[str, int]):
        self.target = target
        self.down = threading.Event()
        # monotonic start of the latest probe that connected; when the current refusals began
        self.last_ok = float("-inf")
        self.failing_since: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ray-head-watch", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(PROBE_EVERY_S):
            started = time.monotonic()
            if gcs_reachable(self.target):
                self.failing_since = None
                self.last_ok = started
                continue
            now = time.monotonic()
            if self.failing_since is None:
                self.failing_since = now
            if now - self.failing_since >= HEAD_DOWN_AFTER_S:
                log.warning(
                    "[ray] the head's GCS at %s:%d has refused connections for %.0f s: the "
                    "head is down",
                    *self.target,
                    now - self.failing_since,
                )
                self.down.set()
                return

    def answered_since(self, since: float) -> bool:
        """Whether the head has been seen answering since a moment.

        Args:
            since: a ``time.monotonic()`` value.

        Returns:
            True when a probe started at or after ``since`` connected and none has been
            refused since (nor the head called down).
        """
        return self.failing_since is None and self.last_ok >= since and not self.down.is_set()

    def stop(self) -> None:
        self._stop.set()
