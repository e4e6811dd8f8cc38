"""``BusinessMetrics``: domain counters, histograms and ``@timed`` on one registry."""

from __future__ import annotations

import functools
import inspect
import re
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, cast

from gennet_toolkit._env import env_str
from gennet_toolkit.exceptions import ConfigurationError
from gennet_toolkit.metrics._middleware import DEFAULT_BUCKETS
from gennet_toolkit.metrics._registry import default_registry, get_or_create, prometheus

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["BusinessMetrics"]

P = ParamSpec("P")
R = TypeVar("R")

_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")


class BusinessMetrics:
    """Domain metrics (``grn_networks_created_total``, ``grn_import_seconds``) in one place.

    Every metric is created once per registry, so calling ``counter(...)`` again (at
    import of two modules, in tests, on reload) returns the same object. ``namespace``
    is prepended with an underscore.

        metrics = BusinessMetrics(namespace="grn")
        imported = metrics.counter("edges_imported_total", "Edges imported.", ["source"])
        imported.labels("string-db").inc(120)

        @metrics.timed("import_seconds", "Time to import one network.")
        async def import_network(payload: bytes) -> int: ...
    """

    def __init__(self, registry: CollectorRegistry | None = None, *, namespace: str = "") -> None:
        self._prom = prometheus()
        self.registry = default_registry(registry)
        if namespace and not _NAME.match(namespace):
            raise ConfigurationError(f"invalid metric namespace {namespace!r}")
        self.namespace = namespace

    @classmethod
    def from_env(
        cls, *, prefix: str = "GENNET_", registry: CollectorRegistry | None = None
    ) -> BusinessMetrics:
        """Build with ``namespace`` from ``{prefix}METRICS_NAMESPACE`` (default: none)."""
        return cls(registry, namespace=env_str(f"{prefix}METRICS_NAMESPACE", ""))

    def _full(self, name: str) -> str:
        return f"{self.namespace}_{name}" if self.namespace else name

    def counter(self, name: str, documentation: str, labelnames: Sequence[str] = ()) -> Counter:
        """A counter (``_total`` is added to the exposed name when missing)."""
        counter: Counter = get_or_create(
            self._prom.Counter, self.registry, self._full(name), documentation, labelnames
        )
        return counter

    def gauge(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str] = (),
        *,
        multiprocess_mode: str = "livesum",
    ) -> Gauge:
        """A gauge; ``multiprocess_mode`` says how workers' values combine under gunicorn."""
        gauge: Gauge = get_or_create(
            self._prom.Gauge,
            self.registry,
            self._full(name),
            documentation,
            labelnames,
            multiprocess_mode=multiprocess_mode,
        )
        return gauge

    def histogram(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str] = (),
        *,
        buckets: Sequence[float] = DEFAULT_BUCKETS,
    ) -> Histogram:
        """A histogram with the given upper bounds (``+Inf`` is added)."""
        histogram: Histogram = get_or_create(
            self._prom.Histogram,
            self.registry,
            self._full(name),
            documentation,
            labelnames,
            buckets=tuple(buckets),
        )
        return histogram

    def timed(
        self,
        name: str,
        documentation: str | None = None,
        *,
        labels: Mapping[str, str] | None = None,
        buckets: Sequence[float] = DEFAULT_BUCKETS,
    ) -> Callable[[Callable[P, R]], Callable[P, R]]:
        """Decorator observing each call's duration (seconds) into histogram ``name``.

        Works on sync and async functions and keeps their signature; calls that raise
        are observed too, and an ``outcome`` label (``ok`` / ``error``) tells them apart.
        ``labels`` are fixed label values for this function.
        """
        fixed = dict(labels or {})
        histogram = self.histogram(
            name,
            documentation or f"Duration of {name.removesuffix('_seconds')} in seconds.",
            (*fixed, "outcome"),
            buckets=buckets,
        )
        ok = histogram.labels(**fixed, outcome="ok")
        error = histogram.labels(**fixed, outcome="error")

        def decorate(fn: Callable[P, R]) -> Callable[P, R]:
            if inspect.iscoroutinefunction(fn):
                async_fn = cast("Callable[P, Awaitable[Any]]", fn)

                @functools.wraps(fn)
                async def async_wrapper(*args: P.args, **kwargs: P.kwargs) -> Any:
                    start = time.perf_counter()
                    try:
                        result = await async_fn(*args, **kwargs)
                    except BaseException:
                        error.observe(time.perf_counter() - start)
                        raise
                    ok.observe(time.perf_counter() - start)
                    return result

                return cast("Callable[P, R]", async_wrapper)

            @functools.wraps(fn)
            def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
                start = time.perf_counter()
                try:
                    result = fn(*args, **kwargs)
                except BaseException:
                    error.observe(time.perf_counter() - start)
                    raise
                ok.observe(time.perf_counter() - start)
                return result

            return wrapper

        return decorate
