"""Markdown tables and spreads for the reports the analyses and the benchmark scripts write."""

from __future__ import annotations


def md_table(header: list[str], rows: list[list]) -> str:
    """A markdown table; the first column is left-aligned, the others right-aligned."""
    lines = ["| " + " | ".join(header) + " |", "|:--" + "|--:" * (len(header) - 1) + "|"]
    return "\n".join(lines + ["| " + " | ".join(str(v) for v in r) + " |" for r in rows])


def spread(values: list[float], digits: int = 0) -> str:
    """'mean (min-max)' of a list of numbers; the value alone when there is one."""
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{sum(values) / len(values):.{digits}f} ({min(values):.{digits}f}-{max(values):.{digits}f})"
