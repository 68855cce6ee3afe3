"""Argument checks shared across the library, run on the host before anything is traced.

Each failure is a one-line ``ValueError`` that names the bad value and what is accepted, so a typo
never surfaces as a shape error deep inside XLA.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence


def check_choice(name: str, value, accepted: Sequence) -> None:
    if value not in accepted:
        raise ValueError(f"unknown {name} {value!r}; expected one of {', '.join(repr(a) for a in accepted)}")


def check_int(name: str, value, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low \
            or (high is not None and value > high):
        bound = f"in [{low}, {high}]" if high is not None else f">= {low}"
        raise ValueError(f"{name} must be an integer {bound}, got {value!r}")
    return int(value)
