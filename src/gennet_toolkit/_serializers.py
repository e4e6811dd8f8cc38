"""Cache value serializers shared by ``cache`` and ``advanced_cache``: JSON, msgpack, pickle.

Every serializer refuses what it cannot give back unchanged: a tuple that would come
back as a list, a dict with int keys that would come back with str keys, an object
JSON cannot encode. A cache that silently changes types is worse than a miss. Pickle
is only ever read after its HMAC-SHA256 signature checks out.
"""

from __future__ import annotations

import hashlib
import hmac
import importlib
import json
import math
import pickle
from typing import Any

from gennet_toolkit.exceptions import ConfigurationError, GenNetError

__all__ = [
    "JsonSerializer",
    "MsgpackSerializer",
    "SerializationError",
    "SignedPickleSerializer",
    "UnsafeValueError",
]

#: The shortest HMAC key accepted: a short key can be brute-forced from one stored value.
MIN_SECRET_BYTES = 16


class SerializationError(GenNetError, TypeError):
    """A value cannot be stored with the configured serializer (a server-side bug, 500)."""

    status_code = 500
    code = "serialization_error"
    default_detail = "A value could not be cached."


class UnsafeValueError(SerializationError):
    """A value the cache's serializer cannot store and give back unchanged."""


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
    # The common case (flat scalars) skips the round trip.
    t = type(value)
    if t is str or t is int or t is bool or value is None:
        return True
    if t is float:
        return math.isfinite(value)
    return False


class JsonSerializer:
    """Strict JSON (the default): interoperable and safe to read from a shared store.

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
        except (TypeError, ValueError, RecursionError) as exc:
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
        """The value of JSON ``data``; ``ValueError`` if ``data`` is not UTF-8 JSON."""
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


class SignedPickleSerializer:
    """Pickle, opt-in, every payload signed with HMAC-SHA256 under ``secret`` (>= 16 bytes).

    A payload is unpickled only after its signature checks (``hmac.compare_digest``),
    with the algorithm pinned here, never read from the stored value: whoever can write
    to the store without the secret cannot make this process unpickle their bytes.
    Anyone holding the secret and write access can still run code in every reader.
    """

    name = "pickle"
    _TAG = b"gnp1"

    def __init__(self, secret: str | bytes) -> None:
        key = secret.encode() if isinstance(secret, str) else bytes(secret or b"")
        if len(key) < MIN_SECRET_BYTES:
            raise ConfigurationError(
                f"the pickle serializer needs a secret of at least {MIN_SECRET_BYTES} bytes"
                " (values are signed with HMAC-SHA256)"
            )
        self._key = key

    def _sign(self, body: bytes) -> bytes:
        return hmac.new(self._key, body, hashlib.sha256).digest()

    def dumps(self, value: Any) -> bytes:
        """``value`` pickled, prefixed with a format tag and its signature."""
        try:
            body = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:  # pickling raises many types (PicklingError, TypeError, …)
            raise UnsafeValueError(
                f"the pickle cache serializer cannot store a {type(value).__name__} value"
            ) from exc
        return self._TAG + self._sign(body) + body

    def loads(self, data: bytes) -> Any:
        """The value, after checking the signature; ``ValueError`` if it does not match."""
        tag, sig, body = data[:4], data[4:36], data[36:]
        if tag != self._TAG or not hmac.compare_digest(sig, self._sign(body)):
            raise ValueError("stored value has no valid signature")
        return pickle.loads(body)  # signed with our pinned secret, checked above
