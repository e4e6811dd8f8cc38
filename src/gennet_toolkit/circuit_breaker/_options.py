"""Option parsing for ``CircuitBreaker``: validation and the ``exclude=`` forms."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import cast

from gennet_toolkit.exceptions import ConfigurationError

__all__ = ["Exclude", "backend_is_memory", "check", "is_count", "is_text", "parse_exclude"]

#: One item of ``exclude=``: an exception type, a predicate ``exc -> bool``, or (as in
#: purgatory) a pair ``(type, predicate)`` matching when both do.
Exclude = (
    type[BaseException]
    | Callable[[BaseException], bool]
    | tuple[type[BaseException], Callable[[BaseException], bool]]
)


def parse_exclude(
    exclude: Exclude | Iterable[Exclude],
) -> tuple[tuple[type[BaseException], ...], tuple[Callable[[BaseException], bool], ...]]:
    """Split ``exclude`` into exception types (one ``isinstance``) and predicates."""
    # One item alone (a type, a predicate, a pair) is accepted as well as a collection.
    single = isinstance(exclude, type) or callable(exclude) or _is_pair(exclude)
    items: Iterable[object] = (exclude,) if single else cast("Iterable[object]", exclude)
    types: list[type[BaseException]] = []
    predicates: list[Callable[[BaseException], bool]] = []
    for item in items:
        if isinstance(item, type) and issubclass(item, BaseException):
            types.append(item)
        elif _is_pair(item):
            pair = cast("tuple[type[BaseException], Callable[[BaseException], bool]]", item)
            predicates.append(_both(*pair))
        elif callable(item):
            predicates.append(cast("Callable[[BaseException], bool]", item))
        else:
            raise ConfigurationError(
                "exclude takes exception types, predicates or (type, predicate) pairs"
            )
    return tuple(types), tuple(predicates)


def _is_pair(item: object) -> bool:
    return (
        isinstance(item, tuple)
        and len(item) == 2
        and isinstance(item[0], type)
        and issubclass(item[0], BaseException)
        and callable(item[1])
    )


def _both(
    kind: type[BaseException], predicate: Callable[[BaseException], bool]
) -> Callable[[BaseException], bool]:
    return lambda exc: isinstance(exc, kind) and bool(predicate(exc))


def is_text(value: object) -> bool:
    """Whether ``value`` is a non-empty string."""
    return isinstance(value, str) and bool(value)


def is_count(value: object) -> bool:
    """Whether ``value`` is an integer >= 1 (``bool`` is not a count)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def check(condition: bool, message: str) -> None:
    """Raise ``ConfigurationError(message)`` unless ``condition`` holds."""
    if not condition:
        raise ConfigurationError(message)


def backend_is_memory(url: str) -> bool:
    """Whether ``url`` names the in-process backend."""
    return url.split(":", 1)[0].lower() == "memory"
