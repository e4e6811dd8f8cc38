"""Cache keys from function calls (``cache`` and ``advanced_cache``): stable across
processes and restarts, never built from ``repr``.

A default key is the function's qualified name plus a BLAKE2b digest of a canonical
JSON encoding of its bound arguments (defaults applied, so ``f(1)`` and ``f(x=1)`` share
an entry). Templates (``"gene:{symbol}"``) give readable keys for pattern invalidation.
Arguments of types without a stable text form are refused, never ``repr``-ed: an
object's default ``repr`` holds its memory address and would never hit.
"""

from __future__ import annotations

import datetime as dt
import enum
import hashlib
import inspect
import json
import string
import uuid
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any

from gennet_toolkit._serializers import SerializationError
from gennet_toolkit.exceptions import ConfigurationError

__all__ = ["KeyBuilder", "shorten"]

_SCALARS = (str, int, float, bool, type(None))
_FORMATTER = string.Formatter()
_ENCODE = json.JSONEncoder(separators=(",", ":"), sort_keys=True, ensure_ascii=False).encode


def shorten(key: str, limit: int) -> str:
    """``key`` if short enough, else its first half-limit chars plus a digest of the whole.

    Keeping the head means ``invalidate("gene:*")`` still finds hashed long keys.
    """
    if len(key) <= limit:
        return key
    digest = hashlib.blake2b(key.encode(), digest_size=16).hexdigest()
    return f"{key[: limit // 2]}#{digest}"


def _canonical(value: Any, where: str) -> Any:
    # A JSON-able canonical form; type-tagged where JSON would confuse types.
    if isinstance(value, bool) or value is None or isinstance(value, str | int):
        return value
    if isinstance(value, float):
        return {"f": repr(value)}
    if isinstance(value, enum.Enum):
        return {"e": f"{type(value).__qualname__}.{value.name}"}
    if isinstance(value, list | tuple):
        return [_canonical(v, where) for v in value]
    if isinstance(value, frozenset | set):
        items = [_canonical(v, where) for v in value]
        return {"s": sorted(items, key=lambda i: json.dumps(i, sort_keys=True))}
    if isinstance(value, Mapping):
        return {
            "m": sorted(
                ([_canonical(k, where), _canonical(v, where)] for k, v in value.items()),
                key=lambda i: json.dumps(i, sort_keys=True),
            )
        }
    if isinstance(value, bytes):
        return {"b": value.hex()}
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return {"t": value.isoformat()}
    if isinstance(value, uuid.UUID | Decimal):
        return {"u": str(value)}
    hook = getattr(value, "__cache_key__", None)
    if callable(hook):
        return {"k": _canonical(hook(), where)}
    raise SerializationError(
        f"cannot build a cache key from argument {where!r} of type {type(value).__name__}:"
        " give the type a __cache_key__() method, pass key=..., or ignore=(...) it"
    )


def _field_text(value: Any, where: str) -> str:
    if isinstance(value, enum.Enum):
        value = value.value
    if isinstance(value, (*_SCALARS, uuid.UUID, Decimal)):
        return str(value)
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    hook = getattr(value, "__cache_key__", None)
    if callable(hook):
        return str(hook())
    raise SerializationError(
        f"cannot put {where!r} of type {type(value).__name__} into a cache key template:"
        " use a field of it ({name.attr}) or a __cache_key__() method"
    )


class _SafeFormatter(string.Formatter):
    def format_field(self, value: Any, format_spec: str) -> str:
        if format_spec:
            return format(value, format_spec)
        return _field_text(value, "template field")


_SAFE = _SafeFormatter()


def _template_fields(template: str) -> list[str]:
    names = []
    for _, field, _, _ in _FORMATTER.parse(template):
        if field is None:
            continue
        if field == "" or field[0].isdigit():
            raise ConfigurationError(
                f"cache key template {template!r} must name arguments ({{symbol}}), not positions"
            )
        names.append(field.split(".", 1)[0].split("[", 1)[0])
    return names


class KeyBuilder:
    """Builds the key (and tag names) of one decorated function's calls.

    Arguments of unsupported types raise :class:`SerializationError` (a ``TypeError``)
    naming the parameter. ``ignore_self``: leave a leading ``self``/``cls`` out of the
    default key when ``ignore`` is empty.
    """

    __slots__ = (
        "_fast_positional",
        "_ignore",
        "_key",
        "_limit",
        "_sig",
        "_tags",
        "name",
    )

    def __init__(
        self,
        func: Callable[..., Any],
        key: str | Callable[..., str] | None,
        tags: tuple[str | Callable[..., str], ...],
        ignore: tuple[str, ...],
        limit: int,
        *,
        ignore_self: bool = True,
    ) -> None:
        self.name = f"{func.__module__}.{func.__qualname__}"
        self._sig = inspect.signature(func)
        params = list(self._sig.parameters)
        default_ignore = tuple(p for p in params[:1] if ignore_self and p in {"self", "cls"})
        self._ignore = frozenset(ignore or default_ignore)
        unknown = sorted(set(ignore) - set(params))
        if unknown:
            raise ConfigurationError(f"ignore= names no parameter of {self.name}: {unknown}")
        self._key = key
        self._tags = tags
        self._limit = limit
        for spec in (key, *tags):
            if isinstance(spec, str):
                missing = sorted(set(_template_fields(spec)) - set(params))
                if missing:
                    raise ConfigurationError(
                        f"cache key template {spec!r} names no parameter of {self.name}: {missing}"
                    )
        # Plain positional-or-keyword parameters without defaults: a call with exactly
        # that many positional arguments needs no Signature.bind.
        kinds = {p.kind for p in self._sig.parameters.values()}
        self._fast_positional = (
            len(params)
            if kinds <= {inspect.Parameter.POSITIONAL_OR_KEYWORD}
            and all(p.default is p.empty for p in self._sig.parameters.values())
            else -1
        )

    def _arguments(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        if not kwargs and len(args) == self._fast_positional:
            return dict(zip(self._sig.parameters, args, strict=True))
        bound = self._sig.bind(*args, **kwargs)
        bound.apply_defaults()
        return bound.arguments

    def key(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
        """The entry key of the call ``func(*args, **kwargs)`` (without the cache prefix)."""
        spec = self._key
        if callable(spec):
            return shorten(str(spec(*args, **kwargs)), self._limit)
        arguments = self._arguments(args, kwargs)
        if spec is not None:
            return shorten(_SAFE.vformat(spec, (), arguments), self._limit)
        ignore = self._ignore
        parts: list[str] | None = []
        for name, value in arguments.items():
            # str and int arguments (the usual case) skip the canonical JSON: repr is
            # injective on them and stable across processes.
            t = type(value)
            if t is str or t is int:
                if name not in ignore:
                    parts.append(f"{name}={value!r}")  # type: ignore[union-attr]
            elif name not in ignore:
                parts = None
                break
        if parts is not None:
            blob = "=" + ",".join(parts)
        else:
            blob = _ENCODE(
                [
                    [name, _canonical(value, name)]
                    for name, value in arguments.items()
                    if name not in ignore
                ]
            )
        digest = hashlib.blake2b(blob.encode(), digest_size=16).hexdigest()
        return f"{self.name}:{digest}"

    def tags(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[str, ...]:
        """The tags of the call: templates filled in, callables called."""
        if not self._tags:
            return ()
        arguments: dict[str, Any] | None = None
        out = []
        for spec in self._tags:
            if callable(spec):
                out.append(str(spec(*args, **kwargs)))
                continue
            if "{" not in spec:
                out.append(spec)
                continue
            if arguments is None:
                arguments = self._arguments(args, kwargs)
            out.append(_SAFE.vformat(spec, (), arguments))
        return tuple(out)
