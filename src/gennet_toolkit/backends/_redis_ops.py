"""What each Redis operation sends and how its reply is read, shared by both API forms.

Each backend operation is one round trip: a single command or one Lua script. An
:class:`Op` describes it once; the async and sync executors only differ in how they
send it. Lua sources are package files read on first use (never at import).
"""

from __future__ import annotations

import hashlib
import importlib.resources
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any, Generic, TypeVar

from gennet_toolkit.backends.base import (
    Limits,
    RateLimitResult,
    Value,
    check_rate,
    check_ttl,
    encode,
    limits_key,
    plan_limits,
)

__all__ = ()

T = TypeVar("T")

#: Every script this backend uses, by file name (without ``.lua``).
SCRIPTS = (
    "compare_and_set",
    "extend_lock",
    "fixed_window",
    "gcra",
    "incr_ttl",
    "rate_limits",
    "release_lock",
    "set_many",
    "sliding_window",
)

# SCAN pattern characters that must be escaped to match a prefix literally.
_GLOB = re.compile(r"([*?\[\]\\])")


@cache
def script(name: str) -> tuple[str, str]:
    """(source, SHA1) of the Lua script ``name``, read from the package on first use."""
    source = importlib.resources.files("gennet_toolkit.backends") / "lua" / f"{name}.lua"
    text = source.read_text(encoding="utf-8")
    return text, hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()


@dataclass(frozen=True, slots=True)
class Op(Generic[T]):
    """One round trip: ``args`` is a command, or a script's keys then argv."""

    args: tuple[Any, ...]
    parse: Callable[[Any], T]
    script: str | None = None
    numkeys: int = 0


def _ms(seconds: float) -> int:
    return max(1, math.ceil(seconds * 1000))


def _ttl_ms(ttl: float | None) -> int:
    check_ttl(ttl)
    return 0 if ttl is None else _ms(ttl)


def _bool(reply: Any) -> bool:
    return bool(reply)


def _int(reply: Any) -> int:
    return int(reply)


def _opt_bytes(reply: Any) -> bytes | None:
    return None if reply is None else bytes(reply)


def _ttl_reply(reply: Any) -> float | None:
    ms = int(reply)
    if ms == -2:
        return None
    return math.inf if ms == -1 else ms / 1000


def _many(reply: Any) -> list[bytes | None]:
    return [_opt_bytes(r) for r in reply]


def _none(reply: Any) -> None:
    return None


def _rate(limit: int) -> Callable[[Any], RateLimitResult]:
    def parse(reply: Any) -> RateLimitResult:
        allowed, remaining, reset_ms, retry_ms = reply
        return RateLimitResult(
            bool(allowed),
            limit,
            int(remaining),
            max(0.0, float(reset_ms) / 1000),
            max(0.0, float(retry_ms) / 1000),
        )

    return parse


def _rates(limits: tuple[tuple[int, float], ...]) -> Callable[[Any], tuple[RateLimitResult, ...]]:
    def parse(reply: Any) -> tuple[RateLimitResult, ...]:
        return tuple(
            RateLimitResult(
                bool(allowed),
                limit,
                int(remaining),
                max(0.0, float(reset_ms) / 1000),
                max(0.0, float(retry_ms) / 1000),
            )
            for (limit, _), (allowed, remaining, reset_ms, retry_ms) in zip(
                limits, reply, strict=True
            )
        )

    return parse


class Ops:
    """Builds the :class:`Op` for each backend operation, with the key prefix applied."""

    __slots__ = ("prefix",)

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def ping(self) -> Op[None]:
        return Op(("PING",), _none)

    def get(self, key: str) -> Op[bytes | None]:
        return Op(("GET", self.prefix + key), _opt_bytes)

    def set(self, key: str, value: Value, ttl: float | None, nx: bool) -> Op[bool]:
        args: list[Any] = ["SET", self.prefix + key, encode(value)]
        if ttl is not None:
            args += ["PX", _ttl_ms(ttl)]
        if nx:
            args.append("NX")
        return Op(tuple(args), _bool)

    def delete(self, keys: Sequence[str]) -> Op[int]:
        return Op(("DEL", *(self.prefix + k for k in keys)), _int)

    def get_many(self, keys: Sequence[str]) -> Op[list[bytes | None]]:
        return Op(("MGET", *(self.prefix + k for k in keys)), _many)

    def set_many(self, items: Mapping[str, Value], ttl: float | None) -> Op[None]:
        keys = [self.prefix + k for k in items]
        values = [encode(v) for v in items.values()]
        return Op((*keys, _ttl_ms(ttl), *values), _none, "set_many", len(keys))

    def ttl(self, key: str) -> Op[float | None]:
        return Op(("PTTL", self.prefix + key), _ttl_reply)

    def expire(self, key: str, ttl: float) -> Op[bool]:
        return Op(("PEXPIRE", self.prefix + key, _ttl_ms(ttl)), _bool)

    def incr(self, key: str, amount: int, ttl: float | None) -> Op[int]:
        if ttl is None:
            return Op(("INCRBY", self.prefix + key, amount), _int)
        return Op((self.prefix + key, amount, _ttl_ms(ttl)), _int, "incr_ttl", 1)

    def compare_and_set(
        self, key: str, expected: Value | None, new: Value | None, ttl: float | None
    ) -> Op[bool]:
        args = (
            self.prefix + key,
            "0" if expected is None else "1",
            b"" if expected is None else encode(expected),
            "0" if new is None else "1",
            b"" if new is None else encode(new),
            _ttl_ms(ttl),
        )
        return Op(args, _bool, "compare_and_set", 1)

    def release_lock(self, key: str, token: str) -> Op[bool]:
        return Op((self.prefix + key, token), _bool, "release_lock", 1)

    def extend_lock(self, key: str, token: str, ttl: float) -> Op[bool]:
        return Op((self.prefix + key, token, _ttl_ms(ttl)), _bool, "extend_lock", 1)

    def publish(self, channel: str, message: Value) -> Op[int]:
        return Op(("PUBLISH", self.prefix + channel, encode(message)), _int)

    def scan_pattern(self, prefix: str) -> str:
        """A SCAN MATCH pattern matching keys that start with ``prefix`` literally."""
        return _GLOB.sub(r"\\\1", self.prefix + prefix) + "*"

    def rate(
        self, algorithm: str, key: str, limit: int, period: float, cost: int
    ) -> Op[RateLimitResult]:
        """A rate-limit script; the algorithm names the key so strategies never collide.

        The ``{key}`` hash tag pins all of a limit's keys to one Cluster slot.
        """
        check_rate(limit, period, cost)
        short = {"fixed_window": "fw", "sliding_window": "sw", "gcra": "gcra"}[algorithm]
        rkey = f"{self.prefix}rl:{short}:{{{key}}}"
        return Op((rkey, limit, period * 1000, cost), _rate(limit), algorithm, 1)

    def rate_limits(
        self, algorithm: str, key: str, limits: Limits, cost: int
    ) -> Op[tuple[RateLimitResult, ...]]:
        """Every limit of one rule in one script; one ``{key}`` hash tag for all its keys."""
        pairs = limits_key(limits)
        short, tags = plan_limits(algorithm, pairs, cost)
        base = f"{self.prefix}rl:{short}:{{{key}}}:"
        argv: list[Any] = [short, cost]
        for limit, period in pairs:
            argv += [limit, period * 1000]
        return Op((*(base + tag for tag in tags), *argv), _rates(pairs), "rate_limits", len(tags))


def channel_name(raw: Any, strip: int) -> str:
    """A pub/sub channel name without the backend prefix."""
    name = raw.decode() if isinstance(raw, bytes) else str(raw)
    return name[strip:]
