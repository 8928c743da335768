"""Deployment quantization (being split into convert / qat / compare; see docs/architecture.md)."""

from core.quantize.compare import *  # noqa: F403
from core.quantize.compare import _collapse_note, _convert  # noqa: F401
