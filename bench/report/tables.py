"""Markdown tables and the few number formats the report's sections share."""
from __future__ import annotations

import math


def table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def cores(busy: dict[str, float]) -> str:
    """Each core's busy share, in core order: "71 / 97%"."""
    ordered = sorted(busy.items(), key=lambda item: int(item[0].removeprefix("cpu")))
    return " / ".join("-" if math.isnan(f) else f"{100 * f:.0f}" for _, f in ordered) + "%"


def number(value: float | None, fmt: str) -> str:
    """`value` formatted, or "-" where there is none (not measured, or NaN)."""
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, fmt)
