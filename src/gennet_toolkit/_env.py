"""Environment parsing for the ``from_env`` constructors.

Every reader takes the full variable name and a default returned when the variable is
unset or blank; a value that does not parse raises
:class:`~gennet_toolkit.exceptions.ConfigurationError` naming the variable but never
echoing its value, since variables next to these often hold secrets.
"""

from __future__ import annotations

import math
import os
from typing import TypeVar, overload

from gennet_toolkit.exceptions import ConfigurationError

__all__ = ["env_bool", "env_float", "env_int", "env_list", "env_str"]

_D = TypeVar("_D")

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


def _raw(name: str) -> str | None:
    raw = os.environ.get(name)
    if raw is None:
        return None
    raw = raw.strip()
    return raw or None


@overload
def env_str(name: str) -> str | None: ...
@overload
def env_str(name: str, default: str) -> str: ...
def env_str(name: str, default: str | None = None) -> str | None:
    """The stripped value of ``name``; ``default`` when unset or blank."""
    raw = _raw(name)
    return default if raw is None else raw


@overload
def env_bool(name: str) -> bool | None: ...
@overload
def env_bool(name: str, default: bool) -> bool: ...
def env_bool(name: str, default: bool | None = None) -> bool | None:
    """``1/true/yes/on`` or ``0/false/no/off`` (any case); anything else is an error."""
    raw = _raw(name)
    if raw is None:
        return default
    lowered = raw.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ConfigurationError(f"{name} must be a boolean (true/false, 1/0, yes/no, on/off)")


@overload
def env_int(name: str) -> int | None: ...
@overload
def env_int(name: str, default: int) -> int: ...
def env_int(name: str, default: int | None = None) -> int | None:
    """A decimal integer."""
    raw = _raw(name)
    if raw is None:
        return default
    try:
        return int(raw, 10)
    except ValueError:
        raise ConfigurationError(f"{name} must be an integer") from None


@overload
def env_float(name: str) -> float | None: ...
@overload
def env_float(name: str, default: float) -> float: ...
def env_float(name: str, default: float | None = None) -> float | None:
    """A finite number (``nan`` and ``inf`` are refused: no option here means them)."""
    raw = _raw(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigurationError(f"{name} must be a number") from None
    if not math.isfinite(value):
        raise ConfigurationError(f"{name} must be a finite number")
    return value


@overload
def env_list(name: str) -> list[str] | None: ...
@overload
def env_list(name: str, default: _D) -> list[str] | _D: ...
def env_list(name: str, default: object = None) -> object:
    """Comma-separated items, each stripped, blanks dropped.

    ``default`` when unset; a set but blank variable is an explicitly empty list.
    """
    raw = os.environ.get(name)
    if raw is None:
        return default
    return [item.strip() for item in raw.split(",") if item.strip()]
