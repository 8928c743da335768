"""Widget state set one way only: through Session State, never also through a default argument.

Two rules keep what a widget *shows* in the browser and what the page *uses* the same:

1. A widget whose starting value comes from somewhere (a link's query parameter, the predicted
   class, the middle slice) gets that value through Session State before it is drawn, and is
   drawn with no default argument (``index``/``value``). Passing both makes Streamlit log "was
   created with a default value but also had its value set via the Session State API" on every
   page opened from a link, and leaves two sources of truth.
2. A widget whose options depend on another choice (image size and model on the dataset,
   target class on the model and sample) is re-set through Session State when that choice
   changes (:func:`follow`). Only an assignment through Session State sends the value to the
   browser: after ``del st.session_state[key]``, or when a kept value's label changes (size 28
   is "28³ voxels" for a 3D dataset, "28×28 px" for a 2D one), the script uses one option while
   the browser keeps showing the old one.

Pages call these through the ``*_ui`` pickers of :mod:`app.widgets`; a widget a page draws
itself follows the same pattern (``state.follow(key, ...)`` then the widget without a default).
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from typing import Any

import streamlit as st

_UNSET = object()


def _marker(key: str) -> str:
    # a plain (non-widget) key: it survives page switches, which clean up widget keys
    return f"_follows__{key}"


def follow(
    key: str,
    options: Iterable[Any],
    default: Any,
    *,
    parent: Hashable = None,
    keep_valid: bool = True,
) -> None:
    """Give widget ``key`` a valid value through Session State before it is drawn.

    Call it right before drawing the widget, and draw the widget without ``index``/``value``.

    Args:
        key: The widget's key.
        options: The values the widget offers in this run (``range`` works for numbers).
        default: The value to use when there is none yet or the current one is not valid.
        parent: What the options depend on, e.g. the dataset flag for a size picker or
            ``(run path, sample)`` for a target-class picker. When it differs from the last run,
            the value is assigned again, so the browser shows it under its new label.
        keep_valid: On a parent change, keep the current value when it is still an option
            (a sample index across models); False resets it to ``default`` (the target class
            of a new sample is its predicted class, not the class picked for the last one).
    """
    options = list(options)
    marker = _marker(key)
    previous = st.session_state.get(marker, _UNSET)
    st.session_state[marker] = parent
    current = st.session_state.get(key, _UNSET)
    valid = current is not _UNSET and current in options
    if previous is _UNSET or previous == parent:
        # same context: only a missing or impossible value is replaced (a link's value stays)
        if not valid:
            st.session_state[key] = default
        return
    st.session_state[key] = current if (keep_valid and valid) else default
