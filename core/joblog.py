"""A training job's log for people: tracebacks folded into their last line, kept as details.

A failed job's log (``core.jobs``) holds the child process's Python traceback. A clinician or
researcher needs the error itself ("breastmnist.npz is not available: ... 1. Download ..."); the
frames are for developers. :func:`split_log` separates the two; the Retrain page shows the
error plainly and the traceback in a collapsed "technical details" section. No Streamlit here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_START = "Traceback (most recent call last):"
_CHAIN = (
    "During handling of the above exception",
    "The above exception was the direct cause",
)
# "ValueError: bad", "core.data.DatasetUnavailableError: ...", "KeyboardInterrupt"
_EXC_LINE = re.compile(
    r"^(?:[A-Za-z_][\w.]*\.)?([A-Za-z_]\w*(?:Error|Exception|Interrupt|Exit)\w*)(?::\s?(.*))?$"
)


@dataclass(frozen=True)
class LogView:
    """A job log split for display.

    Attributes:
        text: the log with each traceback replaced by one ``[error] Type: message`` line.
        error: the last exception's message without its type (continuation lines, such as
            numbered next steps, included), or None when the log holds no traceback.
        details: every traceback, verbatim (empty when there is none).
    """

    text: str
    error: str | None
    details: str


def split_log(log: str) -> LogView:
    """Fold the Python tracebacks of a job log.

    Args:
        log: the job's log text (``Job.log``).

    Returns:
        A :class:`LogView`; a log without traceback comes back unchanged in ``text``.
    """
    lines = (log or "").splitlines()
    plain: list[str] = []
    blocks: list[list[str]] = []
    last_error: str | None = None
    i = 0
    while i < len(lines):
        if lines[i].strip() != _START:
            plain.append(lines[i])
            i += 1
            continue
        block, i, exc_line, message = _read_traceback(lines, i)
        blocks.append(block)
        plain.append(f"[error] {exc_line}" if exc_line else "[error] (traceback)")
        if message is not None:
            last_error = message
    return LogView("\n".join(plain), last_error, "\n\n".join("\n".join(b) for b in blocks))


def _read_traceback(lines: list[str], i: int) -> tuple[list[str], int, str, str | None]:
    """One traceback (with its chained causes) from ``lines[i]``; returns the block, the next
    index, the final ``Type: message`` line and the message with its continuation lines."""
    block: list[str] = []
    exc_line, message = "", None
    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        if stripped == _START or line.startswith(("  File ", "    ")) or not stripped:
            block.append(line)
            i += 1
            continue
        if stripped.startswith(_CHAIN):
            block.append(line)
            i += 1
            continue
        match = _EXC_LINE.match(stripped)
        if match is None:
            break  # an ordinary log line: the traceback ended without an exception line
        # the class name without its module path: "DatasetUnavailableError: ..."
        exc_line = f"{match.group(1)}: {match.group(2)}" if match.group(2) else match.group(1)
        block.append(line)
        i += 1
        parts = [match.group(2) or match.group(1)]
        # continuation lines of a multi-line message (numbered steps), up to the next log tag,
        # chained traceback or blank line
        while i < len(lines):
            nxt = lines[i]
            if (
                not nxt.strip()
                or nxt.lstrip().startswith("[")
                or nxt.strip() == _START
                or nxt.strip().startswith(_CHAIN)
            ):
                break
            parts.append(nxt.strip())
            block.append(nxt)
            i += 1
        message = "\n".join(parts)
        if i < len(lines) and lines[i].strip() == "" and i + 1 < len(lines):
            ahead = lines[i + 1].strip()
            if ahead == _START or ahead.startswith(_CHAIN):
                continue  # a chained exception follows: keep reading the same block
        if i < len(lines) and lines[i].strip().startswith(_CHAIN):
            continue
        break
    return block, i, exc_line, message
