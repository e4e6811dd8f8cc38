"""How TieredCache turns values into bytes for L2: JSON by default, pickle only signed."""

from __future__ import annotations

import hashlib
import hmac
import json
import pickle
from typing import Any, Protocol, runtime_checkable

from gennet_toolkit.exceptions import ConfigurationError, GenNetError

__all__ = [
    "JsonSerializer",
    "SerializationError",
    "Serializer",
    "SignedPickleSerializer",
    "resolve_serializer",
]


class SerializationError(GenNetError, TypeError):
    """A value cannot be stored with the configured serializer (a server-side bug, 500)."""

    status_code = 500
    code = "serialization_error"
    default_detail = "A value could not be cached."


@runtime_checkable
class Serializer(Protocol):
    """Turns a value into bytes and back; ``loads`` raises ``ValueError`` on bad input."""

    def dumps(self, value: Any) -> bytes:
        """The value as bytes; :class:`SerializationError` if it cannot be encoded."""
        ...

    def loads(self, data: bytes) -> Any:
        """The value encoded in ``data``; ``ValueError`` if ``data`` is not valid."""
        ...


class JsonSerializer:
    """Strict JSON: dicts with string keys, lists, str, int, float, bool and None.

    Anything else (objects, sets, bytes, NaN/inf, non-string keys) is refused with
    :class:`SerializationError` instead of being coerced, so a value read back from L2
    is what was stored. Tuples come back as lists, as in any JSON store.
    """

    def dumps(self, value: Any) -> bytes:
        """See :class:`Serializer`."""
        _check_keys(value)
        try:
            return json.dumps(
                value, ensure_ascii=False, allow_nan=False, separators=(",", ":"), default=_refuse
            ).encode()
        except (TypeError, ValueError) as exc:
            raise SerializationError(f"JSON cannot store this value: {exc}") from None

    def loads(self, data: bytes) -> Any:
        """See :class:`Serializer`."""
        try:
            return json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError("stored value is not valid JSON") from exc


def _check_keys(value: Any) -> None:
    # json.dumps turns 1, 1.5, True and None keys into strings silently; refuse them.
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            for k, v in item.items():
                if not isinstance(k, str):
                    raise SerializationError(
                        f"JSON object keys must be str, not {type(k).__name__}"
                    )
                if isinstance(v, dict | list | tuple):
                    stack.append(v)
        elif isinstance(item, list | tuple):
            stack.extend(v for v in item if isinstance(v, dict | list | tuple))


def _refuse(obj: object) -> Any:
    raise TypeError(f"type {type(obj).__name__} is not JSON-serializable")


class SignedPickleSerializer:
    """Pickle, opt-in, with every payload signed by HMAC-SHA256 over ``secret``.

    Reading unpickles only payloads whose signature checks (``hmac.compare_digest``),
    with the algorithm pinned here, never taken from the stored value: whoever can write
    to Redis without the secret cannot make this process unpickle their bytes.
    """

    _TAG = b"gnp1"

    def __init__(self, secret: bytes | str) -> None:
        key = secret.encode() if isinstance(secret, str) else bytes(secret)
        if len(key) < 16:
            raise ConfigurationError("SignedPickleSerializer needs a secret of >= 16 bytes")
        self._key = key

    def _sign(self, body: bytes) -> bytes:
        return hmac.new(self._key, body, hashlib.sha256).digest()

    def dumps(self, value: Any) -> bytes:
        """See :class:`Serializer`."""
        try:
            body = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:  # pickling raises many types (PicklingError, TypeError, …)
            raise SerializationError(f"pickle cannot store this value: {exc}") from None
        return self._TAG + self._sign(body) + body

    def loads(self, data: bytes) -> Any:
        """See :class:`Serializer`; a missing or wrong signature is a ``ValueError``."""
        tag, sig, body = data[:4], data[4:36], data[36:]
        if tag != self._TAG or not hmac.compare_digest(sig, self._sign(body)):
            raise ValueError("stored value has no valid signature")
        return pickle.loads(body)  # signed with our pinned secret, checked above


def resolve_serializer(serializer: Serializer | str) -> Serializer:
    """``"json"`` or a :class:`Serializer` instance; ``"pickle"`` by name is refused."""
    if isinstance(serializer, str):
        if serializer == "json":
            return JsonSerializer()
        if serializer == "pickle":
            raise ConfigurationError(
                'serializer="pickle" is refused: unpickling data from a shared store runs '
                "code; pass SignedPickleSerializer(secret) to opt in"
            )
        raise ConfigurationError(f"unknown serializer {serializer!r}: use 'json' or an instance")
    if not isinstance(serializer, Serializer):
        raise ConfigurationError("serializer must have dumps(value) and loads(data)")
    return serializer
