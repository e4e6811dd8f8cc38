"""The cache's serializer choice: names resolved here, the serializers shared.

The serializers themselves live in :mod:`gennet_toolkit._serializers` (also used by
``advanced_cache``); this module adds the cache's protocol (``name`` is part of it)
and the ``serializer=``/``secret=`` resolution.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from gennet_toolkit._serializers import (
    JsonSerializer,
    MsgpackSerializer,
    SignedPickleSerializer,
    UnsafeValueError,
)
from gennet_toolkit.exceptions import ConfigurationError

__all__ = [
    "JsonSerializer",
    "MsgpackSerializer",
    "PickleSerializer",
    "Serializer",
    "UnsafeValueError",
    "resolve_serializer",
]

#: Pickle signed with HMAC-SHA256 under ``secret`` (at least 16 bytes): trusted stores only.
PickleSerializer = SignedPickleSerializer


@runtime_checkable
class Serializer(Protocol):
    """Turns values into bytes and back; ``loads(dumps(v)) == v`` must hold."""

    name: str

    def dumps(self, value: Any) -> bytes:
        """``value`` as bytes; raise :class:`UnsafeValueError` for what it cannot store."""

    def loads(self, data: bytes) -> Any:
        """The value ``data`` holds; raise ``ValueError`` for bytes it did not write."""


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
        if not secret:
            raise ConfigurationError(
                'serializer="pickle" needs secret= (values are signed with HMAC-SHA256)'
            )
        return PickleSerializer(secret)
    raise ConfigurationError(
        f"unknown cache serializer {spec!r}: use json, msgpack, pickle or a Serializer"
    )
