"""Markdown and number formatting shared by the report's sections.

>>> md_table(["Arm", "AUC"], [["cnn3d", "0.91"]])
['| Arm | AUC |', '|---|---|', '| cnn3d | 0.91 |', '']
>>> fmt_duration(3725)
'1 h 02 min'
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

from core import info

NOT_RUN = "not run yet"


def fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return NOT_RUN
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    if h:
        return f"{h} h {m:02d} min"
    if m:
        return f"{m} min {s:02d} s"
    return f"{s} s"


def fmt_bytes(n: float | None) -> str:
    if n is None:
        return "–"
    if n >= 1024 * 1024:
        return f"{n / (1024 * 1024):.2f} MB"
    return f"{n / 1024:.1f} KB"


def _f(value: Any, digits: int = 4, signed: bool = False) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    value = round(float(value), digits) + 0.0  # no "-0.0000" for a tiny negative number
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def md_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[str]:
    def cell(v: Any) -> str:
        return str(v).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return lines + [""]


def _dataset_title(flag: str) -> str:
    try:
        return info.python_class(flag)
    except ValueError:
        return flag
