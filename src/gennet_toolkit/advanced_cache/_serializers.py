"""How TieredCache turns values into bytes for L2: strict JSON by default, pickle only signed.

The serializers are shared with ``cache`` (:mod:`gennet_toolkit._serializers`); this
module holds TieredCache's protocol and its ``serializer=`` resolution.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from gennet_toolkit._serializers import JsonSerializer, SerializationError, SignedPickleSerializer
from gennet_toolkit.exceptions import ConfigurationError

__all__ = [
    "JsonSerializer",
    "SerializationError",
    "Serializer",
    "SignedPickleSerializer",
    "resolve_serializer",
]


@runtime_checkable
class Serializer(Protocol):
    """Turns a value into bytes and back; ``loads`` raises ``ValueError`` on bad input."""

    def dumps(self, value: Any) -> bytes:
        """The value as bytes; :class:`SerializationError` if it cannot be encoded."""
        ...

    def loads(self, data: bytes) -> Any:
        """The value encoded in ``data``; ``ValueError`` if ``data`` is not valid."""
        ...


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
