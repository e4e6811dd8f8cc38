"""Value serializers: JSON by default, msgpack when installed, pickle only signed and opt-in.

Every serializer refuses what it cannot give back unchanged: a tuple that would come
back as a list, a dict with int keys that would come back with str keys, an object
JSON cannot encode. A cache that silently changes types is worse than a miss.
"""

from __future__ import annotations

import hashlib
import hmac
import importlib
import json
import math
import pickle
from typing import Any, Protocol, runtime_checkable

from gennet_toolkit.exceptions import ConfigurationError

__all__ = [
    "JsonSerializer",
    "MsgpackSerializer",
    "PickleSerializer",
    "Serializer",
    "UnsafeValueError",
    "resolve_serializer",
]


class UnsafeValueError(TypeError):
    """A value the cache's serializer cannot store and give back unchanged."""


@runtime_checkable
class Serializer(Protocol):
    """Turns values into bytes and back; ``loads(dumps(v)) == v`` must hold."""

    name: str

    def dumps(self, value: Any) -> bytes:
        """``value`` as bytes; raise :class:`UnsafeValueError` for what it cannot store."""

    def loads(self, data: bytes) -> Any:
        """The value ``data`` holds; raise ``ValueError`` for bytes it did not write."""


def _same(a: Any, b: Any) -> bool:
    # Type-exact equality: json turns (1, 2) into [1, 2] and {1: x} into {"1": x}.
    if type(a) is not type(b):
        return isinstance(a, float) and isinstance(b, float) and a == b
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(type(k) is str and _same(v, b[k]) for k, v in a.items())
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def _plain(value: Any) -> bool:
    # The common case (flat scalars and small containers of them) skips the round trip.
    t = type(value)
    if t is str or t is int or t is bool or value is None:
        return True
    if t is float:
        return math.isfinite(value)
    return False


class JsonSerializer:
    """JSON (the default): interoperable and safe to read from a shared Redis.

    Stores ``dict`` (str keys), ``list``, ``str``, ``int``, finite ``float``, ``bool``
    and ``None``. Anything else, tuples included, raises :class:`UnsafeValueError`.
    """

    name = "json"

    def __init__(self) -> None:
        self._decode = json.JSONDecoder().decode
        self._encode = json.JSONEncoder(
            separators=(",", ":"), ensure_ascii=False, allow_nan=False
        ).encode

    def dumps(self, value: Any) -> bytes:
        """``value`` as compact UTF-8 JSON, refused if it would not come back unchanged."""
        try:
            data = self._encode(value)
        except (TypeError, ValueError) as exc:
            raise UnsafeValueError(
                f"the json cache serializer cannot store a {type(value).__name__} value"
                " (plain dict/list/str/int/float/bool/None only): return plain data"
                " or choose another serializer"
            ) from exc
        if not _plain(value) and not _same(value, self._decode(data)):
            raise UnsafeValueError(
                f"the json cache serializer would change this {type(value).__name__} value"
                " (tuples become lists, non-str dict keys become str); return lists and"
                " str-keyed dicts, or choose another serializer"
            )
        return data.encode()

    def loads(self, data: bytes) -> Any:
        """The value of JSON ``data``."""
        return self._decode(data.decode())


class MsgpackSerializer:
    """msgpack (``pip install msgpack``): compact, binary-safe (``bytes`` values), safe."""

    name = "msgpack"

    def __init__(self) -> None:
        try:
            msgpack = importlib.import_module("msgpack")
        except ImportError:
            raise ImportError(
                'the msgpack cache serializer needs msgpack: pip install "msgpack"'
            ) from None
        self._msgpack: Any = msgpack

    def dumps(self, value: Any) -> bytes:
        """``value`` packed, refused if it would not come back unchanged."""
        try:
            data: bytes = self._msgpack.packb(value, use_bin_type=True)
        except (TypeError, ValueError, OverflowError) as exc:
            raise UnsafeValueError(
                f"the msgpack cache serializer cannot store a {type(value).__name__} value"
            ) from exc
        if not _plain(value) and not _same(value, self.loads(data)):
            raise UnsafeValueError(
                f"the msgpack cache serializer would change this {type(value).__name__} value"
            )
        return data

    def loads(self, data: bytes) -> Any:
        """The value of packed ``data``."""
        return self._msgpack.unpackb(data, raw=False, strict_map_key=False)


class PickleSerializer:
    """pickle signed with HMAC-SHA256 under ``secret``: opt-in, for trusted stores only.

    Unpickling runs code, so a value is unpickled only after its signature checks out
    (``hmac.compare_digest``, algorithm pinned here, never read from the stored value).
    Anyone holding the secret and write access to the store can still run code in every
    process that reads the cache.
    """

    name = "pickle"

    def __init__(self, secret: str | bytes) -> None:
        if not secret:
            raise ConfigurationError(
                'serializer="pickle" needs secret= (values are signed with HMAC-SHA256)'
            )
        self._secret = secret.encode() if isinstance(secret, str) else bytes(secret)

    def dumps(self, value: Any) -> bytes:
        """``value`` pickled, prefixed with its signature."""
        try:
            body = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
        except (pickle.PicklingError, TypeError, AttributeError) as exc:
            raise UnsafeValueError(
                f"the pickle cache serializer cannot store a {type(value).__name__} value"
            ) from exc
        return hmac.new(self._secret, body, hashlib.sha256).digest() + body

    def loads(self, data: bytes) -> Any:
        """The value, after checking the signature; ``ValueError`` if it does not match."""
        sig, body = data[:32], data[32:]
        expected = hmac.new(self._secret, body, hashlib.sha256).digest()
        if len(sig) != 32 or not hmac.compare_digest(sig, expected):
            raise ValueError("cache value signature does not match")
        return pickle.loads(body)  # signature checked above


def resolve_serializer(spec: str | Serializer, secret: str | bytes | None) -> Serializer:
    """The serializer named by ``spec`` (``"json"``, ``"msgpack"``, ``"pickle"``) or ``spec``."""
    if not isinstance(spec, str):
        if not isinstance(spec, Serializer):
            raise ConfigurationError("serializer must be a name or have dumps/loads and name")
        return spec
    if spec == "json":
        return JsonSerializer()
    if spec == "msgpack":
        return MsgpackSerializer()
    if spec == "pickle":
        return PickleSerializer(secret or b"")
    raise ConfigurationError(
        f"unknown cache serializer {spec!r}: use json, msgpack, pickle or a Serializer"
    )
