"""Limit strings (``"10/second"``, ``"100 per minute"``, ``"5/3 seconds"``) and rules."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeAlias

from gennet_toolkit.exceptions import ConfigurationError
from gennet_toolkit.types import Scope

__all__ = ["KeyFunc", "Limit", "Rule", "parse_limits"]

#: A key function: maps an ASGI scope to the identity being limited, or ``None`` to skip
#: the rule. (Built-in keys accept any mapping, a Starlette ``Request`` included.)
KeyFunc: TypeAlias = Callable[[Scope], "str | None"]

_UNITS = {
    "s": 1,
    "sec": 1,
    "second": 1,
    "m": 60,
    "min": 60,
    "minute": 60,
    "h": 3600,
    "hr": 3600,
    "hour": 3600,
    "d": 86400,
    "day": 86400,
}
# Only the long names take a plural: "ms" must not read as "m" (minutes) + "s".
_PLURALS = frozenset({"sec", "second", "min", "minute", "hr", "hour", "day"})
_LIMIT_RE = re.compile(
    r"\s*(\d+)\s*(?:/|\s+per\s+)\s*(\d+(?:\.\d+)?)?\s*([a-z]+)\s*", re.IGNORECASE
)
_SEPARATORS = re.compile(r"[;,]")
# Policy names go into a structured-field string: keep them to a safe token charset.
_NAME_RE = re.compile(r"[A-Za-z0-9_.:-]{1,64}")


def _fmt_seconds(seconds: float) -> str:
    return str(int(seconds)) if seconds == int(seconds) else repr(seconds)


@dataclass(frozen=True, slots=True)
class Limit:
    """``amount`` requests per ``period`` seconds; build one with :func:`parse_limits`."""

    amount: int
    period: float
    #: ``((amount, period),)``: what the backend's ``rate_limits`` takes, built once.
    pairs: tuple[tuple[int, float], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if type(self.amount) is not int or self.amount < 1:
            raise ConfigurationError(
                f"a limit's amount must be an integer >= 1, got {self.amount!r}"
            )
        if not 0 < self.period < math.inf:  # a huge "5/1e400 seconds" parses as inf
            raise ConfigurationError(
                f"a limit's period must be > 0 seconds and finite, got {self.period!r}"
            )
        object.__setattr__(self, "pairs", ((self.amount, self.period),))

    @property
    def window(self) -> int:
        """The period in whole seconds (rounded up), as headers show it."""
        return max(1, -int(-self.period // 1))

    def __str__(self) -> str:
        return f"{self.amount}/{_fmt_seconds(self.period)}s"


def _parse_one(text: str) -> Limit:
    match = _LIMIT_RE.fullmatch(text)
    if match is None:
        raise ConfigurationError(
            f"invalid rate limit {text.strip()!r}: expected e.g. '10/second', "
            "'100 per minute' or '5/3 seconds'"
        )
    amount, multiplier, unit = match.groups()
    unit = unit.lower()
    seconds = _UNITS.get(unit)
    if seconds is None and unit.endswith("s") and unit[:-1] in _PLURALS:
        seconds = _UNITS[unit[:-1]]
    if seconds is None:
        raise ConfigurationError(
            f"invalid rate limit {text.strip()!r}: unknown unit {unit!r} "
            "(use second, minute, hour or day)"
        )
    factor = float(multiplier) if multiplier is not None else 1.0
    if factor <= 0:
        raise ConfigurationError(f"invalid rate limit {text.strip()!r}: the period must be > 0")
    return Limit(int(amount), seconds * factor)


def parse_limits(spec: str | Limit | Iterable[str | Limit]) -> tuple[Limit, ...]:
    """Parse ``"10/second;100/minute"`` (``;`` or ``,`` between limits) into limits.

    Accepted forms: ``"10/second"``, ``"10 per second"``, ``"5/3 seconds"``,
    ``"100/minute"``, ``"1000/day"``; units ``s``/``sec``/``second``, ``m``/``min``/
    ``minute``, ``h``/``hr``/``hour``, ``d``/``day`` with an optional plural ``s``.
    The result is sorted shortest window first. A malformed string, an empty list or
    two limits with the same window raise :class:`ConfigurationError`.
    """
    items: list[Limit] = []
    parts: Iterable[str | Limit] = [spec] if isinstance(spec, str | Limit) else spec
    for part in parts:
        if isinstance(part, Limit):
            items.append(part)
        elif isinstance(part, str):
            pieces = _SEPARATORS.split(part)
            if any(not p.strip() for p in pieces):
                raise ConfigurationError(f"invalid rate limit {part!r}: empty limit in the list")
            items.extend(_parse_one(p) for p in pieces)
        else:
            raise ConfigurationError(f"a rate limit must be a string or Limit, got {part!r}")
    if not items:
        raise ConfigurationError("at least one rate limit is needed")
    items.sort(key=lambda lim: lim.period)
    periods = [lim.period for lim in items]
    if len(set(periods)) != len(periods):
        raise ConfigurationError("two limits of one rule share a window; keep the stricter one")
    return tuple(items)


class Rule:
    """Which requests a limit applies to and whose quota they spend.

    ``Rule("100/minute", key=by_ip)``; several limits at once with
    ``"10/second;1000/hour"``. ``key`` is a key function (``by_ip``, ``by_user``,
    ``by_api_key``, a composition like ``by_user | by_ip``, or any callable taking the
    scope) or a constant string shared by every request. ``name`` is the policy name in
    the ``RateLimit`` headers. ``methods`` and ``paths`` (segment-aware prefixes:
    ``"/api"`` matches ``/api`` and ``/api/x`` but not ``/apix``) restrict the rule;
    ``cost`` is the quota one request spends.
    """

    __slots__ = ("cost", "key", "limits", "methods", "name", "pairs", "paths", "policies")

    def __init__(
        self,
        limit: str | Limit | Sequence[str | Limit],
        *,
        key: KeyFunc | str | None = None,
        name: str = "default",
        methods: Iterable[str] | None = None,
        paths: Iterable[str] | None = None,
        cost: int = 1,
    ) -> None:
        self.limits = parse_limits(limit)
        #: The limits as the backend's ``rate_limits`` takes them, built once.
        self.pairs = tuple((lim.amount, lim.period) for lim in self.limits)
        if key is None:
            from gennet_toolkit.rate_limit._keys import by_ip

            key = by_ip
        if isinstance(key, str):
            key = _constant(key)
        if not callable(key):
            raise ConfigurationError(f"a rule's key must be callable or a string, got {key!r}")
        self.key: KeyFunc = key
        if _NAME_RE.fullmatch(str(name)) is None:
            raise ConfigurationError(
                f"invalid rule name {name!r}: use 1-64 letters, digits or _ . : -"
            )
        self.name = name
        self.methods = None if methods is None else frozenset(m.upper() for m in methods)
        self.paths = None if paths is None else tuple(p.rstrip("/") for p in paths)
        if type(cost) is not int or cost < 1:
            raise ConfigurationError(f"a rule's cost must be an integer >= 1, got {cost!r}")
        too_small = [lim for lim in self.limits if lim.amount < cost]
        if too_small:
            raise ConfigurationError(f"cost {cost} exceeds the limit {too_small[0]}")
        self.cost = cost
        # (limit, policy name) pairs; a rule with several limits names each by its window.
        if len(self.limits) == 1:
            self.policies: tuple[tuple[Limit, str], ...] = ((self.limits[0], name),)
        else:
            self.policies = tuple((lim, f"{name}-{lim.window}s") for lim in self.limits)

    def applies(self, method: str, path: str) -> bool:
        """Whether a request with ``method`` and ``path`` falls under this rule."""
        if self.methods is not None and method not in self.methods:
            return False
        return self.paths is None or any(path_matches(path, p) for p in self.paths)

    def __repr__(self) -> str:
        limits = ";".join(str(lim) for lim in self.limits)
        return f"Rule({limits!r}, name={self.name!r})"


def path_matches(path: str, prefix: str) -> bool:
    """Segment-aware prefix match: ``/api`` matches ``/api`` and ``/api/x``, not ``/apix``."""
    if not prefix:
        return True
    return path == prefix or (path.startswith(prefix) and path[len(prefix)] == "/")


def _constant(value: str) -> KeyFunc:
    def constant(scope: Mapping[str, Any]) -> str:
        return value

    return constant
