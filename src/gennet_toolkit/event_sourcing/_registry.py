"""An explicit event-type registry: names to classes, and upcasters between versions.

Stored events carry a type *name*, never a module path: decoding looks the name up in
this registry and nowhere else, so whoever can write to the events table cannot make
the application import or instantiate anything that was not registered.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from gennet_toolkit.event_sourcing._events import (
    EventDecodeError,
    NewEvent,
    RecordedEvent,
    UnknownEventType,
    check_json,
    check_name,
    check_version,
)
from gennet_toolkit.exceptions import ConfigurationError

__all__ = ["EventRegistry", "Upcaster"]

T = TypeVar("T")

#: A function lifting an event's ``data`` from one schema version to the next.
Upcaster = Callable[[dict[str, Any]], dict[str, Any]]


@dataclasses.dataclass(frozen=True, slots=True)
class _Entry:
    name: str
    cls: type[Any]
    version: int
    pydantic: bool


class EventRegistry:
    """Maps event type names to dataclasses or pydantic models, with upcaster chains.

    ::

        events = EventRegistry()

        @events.register("GeneAdded", version=2)
        @dataclass
        class GeneAdded:
            symbol: str
            organism: str

        @events.upcaster("GeneAdded", from_version=1)
        def _gene_added_v1(data):          # v1 had no organism
            return {**data, "organism": "unknown"}

    ``decode(recorded)`` lifts old data through the upcasters (v1→v2→…) and builds the
    registered class; a type not registered gives the :class:`RecordedEvent` back, or
    raises :class:`UnknownEventType` when ``strict=True``.
    """

    def __init__(self, *, strict: bool = False) -> None:
        self.strict = strict
        self._by_name: dict[str, _Entry] = {}
        self._by_class: dict[type[Any], _Entry] = {}
        self._upcasters: dict[tuple[str, int], Upcaster] = {}

    def register(self, name: str, *, version: int = 1) -> Callable[[type[T]], type[T]]:
        """Class decorator registering a dataclass or pydantic model under ``name``.

        ``version`` is the current schema version of its data; stored events with an
        older version are upcast on decode.
        """
        check_name(name, "event type")
        if check_version(version, "version") < 1:
            raise ConfigurationError("version must be at least 1")

        def decorator(cls: type[T]) -> type[T]:
            is_pydantic = hasattr(cls, "model_validate") and hasattr(cls, "model_dump")
            if not (dataclasses.is_dataclass(cls) or is_pydantic):
                raise ConfigurationError(f"{cls.__name__} must be a dataclass or a pydantic model")
            if name in self._by_name:
                raise ConfigurationError(f"event type {name!r} is already registered")
            if cls in self._by_class:
                raise ConfigurationError(f"{cls.__name__} is already registered")
            entry = _Entry(name, cls, version, is_pydantic)
            self._by_name[name] = entry
            self._by_class[cls] = entry
            return cls

        return decorator

    def upcaster(self, name: str, *, from_version: int) -> Callable[[Upcaster], Upcaster]:
        """Decorator registering the function lifting ``name`` data from ``from_version``."""
        check_name(name, "event type")
        if check_version(from_version, "from_version") < 1:
            raise ConfigurationError("from_version must be at least 1")
        key = (name, from_version)

        def decorator(fn: Upcaster) -> Upcaster:
            if key in self._upcasters:
                raise ConfigurationError(f"{name!r} already has an upcaster from v{from_version}")
            self._upcasters[key] = fn
            return fn

        return decorator

    def names(self) -> list[str]:
        """The registered type names."""
        return sorted(self._by_name)

    def type_of(self, event: object) -> str:
        """The registered name of an event object's class."""
        entry = self._by_class.get(type(event))
        if entry is None:
            raise ConfigurationError(f"{type(event).__name__} is not a registered event class")
        return entry.name

    # ------------------------------------------------------------------ encoding

    def encode(
        self,
        event: object,
        *,
        actor: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> NewEvent:
        """A :class:`NewEvent` for a registered event object (data in JSON mode)."""
        entry = self._by_class.get(type(event))
        if entry is None:
            raise ConfigurationError(f"{type(event).__name__} is not a registered event class")
        data: dict[str, Any] = (
            event.model_dump(mode="json")  # type: ignore[attr-defined]
            if entry.pydantic
            else dataclasses.asdict(event)  # type: ignore[call-overload]
        )
        check_json(data, "event data")
        return NewEvent(
            type=entry.name,
            data=data,
            actor=actor,
            metadata=dict(metadata or {}),
            schema_version=entry.version,
        )

    # ------------------------------------------------------------------ decoding

    def upcast(
        self, name: str, data: dict[str, Any], from_version: int, *, position: int | None = None
    ) -> tuple[dict[str, Any], int]:
        """Lift ``data`` of type ``name`` from ``from_version`` to the registered version."""
        entry = self._by_name.get(name)
        if entry is None:
            return data, from_version
        if from_version > entry.version:
            raise EventDecodeError(
                f"stored schema v{from_version} is newer than the registered v{entry.version}",
                position=position,
                event_type=name,
            )
        version = from_version
        while version < entry.version:
            fn = self._upcasters.get((name, version))
            if fn is None:
                raise EventDecodeError(
                    f"no upcaster from v{version}", position=position, event_type=name
                )
            data = fn(dict(data))
            if not isinstance(data, dict):
                raise EventDecodeError(
                    f"upcaster from v{version} did not return a dict",
                    position=position,
                    event_type=name,
                )
            version += 1
        return data, version

    def decode(self, event: RecordedEvent) -> Any:
        """The registered class built from ``event`` (upcast first), or ``event`` itself.

        Unknown types come back as the :class:`RecordedEvent` unless the registry is
        strict (then :class:`UnknownEventType`). Data that does not fit the class
        raises :class:`EventDecodeError` with the record's position.
        """
        entry = self._by_name.get(event.type)
        if entry is None:
            if self.strict:
                raise UnknownEventType(
                    "type not registered", position=event.position, event_type=event.type
                )
            return event
        data, _ = self.upcast(event.type, event.data, event.schema_version, position=event.position)
        try:
            if entry.pydantic:
                return entry.cls.model_validate(data)
            return entry.cls(**data)
        except (TypeError, ValueError) as exc:  # pydantic's ValidationError is a ValueError
            raise EventDecodeError(
                f"data does not fit {entry.cls.__name__}: {type(exc).__name__}",
                position=event.position,
                event_type=event.type,
            ) from exc
