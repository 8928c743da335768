"""What a job asks of the machine that runs it: CPUs, GPUs and multi-worker processes.

The local executor runs every job with what this machine has (a job asking for several workers
is refused there); the Ray executor reserves exactly these on the cluster. No TensorFlow, no
streamlit: the Retrain form checks its inputs with :func:`check_resources`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from core.jobs.schema import DEFAULT_RESOURCES

# inclusive bounds of each field: a typo (cpus=500) is an error, not a job that never starts
LIMITS: dict[str, tuple[int, int]] = {"cpus": (1, 256), "gpus": (0, 16), "workers": (1, 64)}


def check_resources(resources: Mapping[str, Any] | None) -> tuple[dict[str, int] | None, list]:
    """Check a job's resource request.

    Args:
        resources: ``{"cpus", "gpus", "workers"}`` (any subset; None: the defaults).

    Returns:
        ``(request, errors)``: the full request (None when it equals the defaults, so
        ordinary jobs store nothing) and one message per invalid field.
    """
    if not resources:
        return None, []
    errors = []
    unknown = sorted(set(resources) - set(LIMITS))
    if unknown:
        errors.append(f"unknown resource(s) {unknown}; use {sorted(LIMITS)}")
    request = dict(DEFAULT_RESOURCES)
    for name, (lo, hi) in LIMITS.items():
        if name not in resources:
            continue
        value = resources[name]
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            errors.append(f"{name} must be an integer in {lo}..{hi}, got {value!r}")
            continue
        request[name] = value
    if errors:
        return None, errors
    return (None if request == DEFAULT_RESOURCES else request), []
