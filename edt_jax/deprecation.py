"""Deprecated public names: they keep working and warn once per process (``CHANGELOG.md`` lists each rename)."""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable

_warned: set[str] = set()


def warn_deprecated(old: str, new: str) -> None:
    """One ``DeprecationWarning`` per ``old`` name and process: '<old> is deprecated; use <new>'."""
    if old in _warned:
        return
    _warned.add(old)
    warnings.warn(f"{old} is deprecated; use {new}", DeprecationWarning, stacklevel=3)


def deprecated_alias(function: Callable, old: str, new: str) -> Callable:
    """``function`` under its former name ``old``: same behaviour, one warning naming ``new``."""

    @functools.wraps(function)
    def alias(*args, **kwargs):
        warn_deprecated(old, new)
        return function(*args, **kwargs)

    alias.__name__ = old.rsplit(".", 1)[-1]
    alias.__doc__ = f"Deprecated alias of ``{new}``."
    return alias


def module_getattr(module: str, aliases: dict[str, tuple[str, Callable[[], object]]]) -> Callable[[str], object]:
    """A module ``__getattr__`` that serves deprecated names: ``{old: (new, lambda: value)}``."""

    def __getattr__(name: str):
        if name in aliases:
            new, value = aliases[name]
            warn_deprecated(f"{module}.{name}", new)
            return value()
        raise AttributeError(f"module {module!r} has no attribute {name!r}")

    return __getattr__
