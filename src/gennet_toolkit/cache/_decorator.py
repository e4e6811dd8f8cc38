"""``@cache.cached``: the wrapper types mypy sees and the decorator itself."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, ParamSpec, Protocol, TypeVar, overload

from gennet_toolkit._cache_keys import KeyBuilder
from gennet_toolkit.cache._common import _Policy
from gennet_toolkit.exceptions import ConfigurationError

if TYPE_CHECKING:
    from gennet_toolkit.cache._core import Cache

__all__ = ["AsyncCachedFunction", "SyncCachedFunction"]

P = ParamSpec("P")
R = TypeVar("R")
R_co = TypeVar("R_co", covariant=True)


class AsyncCachedFunction(Protocol[P, R_co]):
    """What ``@cache.cached`` makes of an ``async def``: same call, plus key helpers."""

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> Coroutine[Any, Any, R_co]:
        """Return the cached result, calling the function on a miss."""

    def cache_key(self, *args: P.args, **kwargs: P.kwargs) -> str:
        """The key this call's result is stored under (without namespace)."""

    def invalidate(self, *args: P.args, **kwargs: P.kwargs) -> Coroutine[Any, Any, int]:
        """Drop this call's entry; 1 if there was one."""


class SyncCachedFunction(Protocol[P, R_co]):
    """What ``@cache.cached`` makes of a plain ``def``: same call, plus key helpers."""

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R_co:
        """Return the cached result, calling the function on a miss."""

    def cache_key(self, *args: P.args, **kwargs: P.kwargs) -> str:
        """The key this call's result is stored under (without namespace)."""

    def invalidate(self, *args: P.args, **kwargs: P.kwargs) -> int:
        """Drop this call's entry; 1 if there was one."""


class _Decorator:
    __slots__ = ("_cache", "_ignore", "_key", "_policy", "_tags")

    def __init__(
        self,
        cache: Cache,
        policy: _Policy,
        key: str | Callable[..., str] | None,
        tags: tuple[str | Callable[..., str], ...],
        ignore: tuple[str, ...],
    ) -> None:
        self._cache = cache
        self._policy = policy
        self._key = key
        self._tags = tags
        self._ignore = ignore

    # The overlap is intended: a coroutine function matches the first overload.
    @overload
    def __call__(  # type: ignore[overload-overlap]
        self, func: Callable[P, Coroutine[Any, Any, R]]
    ) -> AsyncCachedFunction[P, R]: ...
    @overload
    def __call__(self, func: Callable[P, R]) -> SyncCachedFunction[P, R]: ...
    def __call__(self, func: Callable[P, Any]) -> Any:
        """Wrap ``func``; the wrapper keeps its signature and docstring."""
        if inspect.isgeneratorfunction(func) or inspect.isasyncgenfunction(func):
            raise ConfigurationError("cannot cache a generator function: cache a list instead")
        cache, policy = self._cache, self._policy
        kb = KeyBuilder(func, self._key, self._tags, self._ignore, cache._max_key)
        build_key, build_tags = kb.key, kb.tags

        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def awrapper(*args: P.args, **kwargs: P.kwargs) -> Any:
                return await cache._aget_or_load(
                    build_key(args, kwargs), build_tags(args, kwargs), (func, args, kwargs), policy
                )

            async def ainvalidate(*args: P.args, **kwargs: P.kwargs) -> int:
                return await cache.delete(build_key(args, kwargs))

            wrapper: Any = awrapper
            wrapper.invalidate = ainvalidate
        else:

            @functools.wraps(func)
            def swrapper(*args: P.args, **kwargs: P.kwargs) -> Any:
                return cache._get_or_load(
                    build_key(args, kwargs), build_tags(args, kwargs), (func, args, kwargs), policy
                )

            def sinvalidate(*args: P.args, **kwargs: P.kwargs) -> int:
                return cache.sync.delete(build_key(args, kwargs))

            wrapper = swrapper
            wrapper.invalidate = sinvalidate

        def cache_key(*args: P.args, **kwargs: P.kwargs) -> str:
            return build_key(args, kwargs)

        wrapper.cache_key = cache_key
        return wrapper
