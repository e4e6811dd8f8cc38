"""Lazy access to prometheus_client and idempotent metric creation."""

from __future__ import annotations

import os
import re
import threading
import weakref
from collections.abc import Sequence
from types import ModuleType
from typing import TYPE_CHECKING, Any, TypeVar

from gennet_toolkit._optional import require
from gennet_toolkit.exceptions import ConfigurationError

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry
    from prometheus_client.metrics import MetricWrapperBase

__all__: list[str] = []

M = TypeVar("M", bound="MetricWrapperBase")

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# The classic name grammar: prometheus_client 0.2x also accepts UTF-8 names, which
# older Prometheus servers and promtool reject.
_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_LABEL = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")

# Metrics we created, per registry: a rebuilt middleware stack, a second app in the
# same process or a second BusinessMetrics get the same objects back instead of
# "Duplicated timeseries". Weak keys: a registry dropped by its owner is forgotten.
_created: weakref.WeakKeyDictionary[Any, dict[str, Any]] = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def prometheus() -> ModuleType:
    """``prometheus_client``, or an ImportError naming the ``metrics`` extra."""
    return require("prometheus_client", extra="metrics", feature="gennet_toolkit.metrics")


def multiprocess_dir() -> str | None:
    """The multiprocess directory when prometheus_client runs in multiprocess mode."""
    # prometheus_client still honours the deprecated lower-case spelling, so must we.
    legacy = os.environ.get("prometheus_multiproc_dir")  # noqa: SIM112
    return os.environ.get(MULTIPROC_ENV) or legacy or None


def default_registry(registry: CollectorRegistry | None) -> CollectorRegistry:
    """``registry`` or prometheus_client's global ``REGISTRY``."""
    if registry is not None:
        return registry
    reg: CollectorRegistry = prometheus().REGISTRY
    return reg


def get_or_create(
    kind: type[M],
    registry: CollectorRegistry,
    name: str,
    documentation: str,
    labelnames: Sequence[str] = (),
    **kwargs: Any,
) -> M:
    """Create ``kind(name, ...)`` in ``registry`` once; later calls return the same object.

    A metric registered by other code under the same name is reused when it has the
    same type and label names; anything else is a :class:`ConfigurationError`.
    """
    labels = tuple(labelnames)
    if not _NAME.match(name):
        raise ConfigurationError(f"invalid metric name {name!r}")
    bad = [label for label in labels if not _LABEL.match(label) or label.startswith("__")]
    if bad:
        raise ConfigurationError(f"invalid label names for {name!r}: {bad}")
    with _lock:
        per_registry = _created.setdefault(registry, {})
        metric = per_registry.get(name)
        if metric is None:
            try:
                metric = kind(name, documentation, labelnames=labels, registry=registry, **kwargs)
            except ValueError as exc:
                if "Duplicated timeseries" not in str(exc):
                    raise ConfigurationError(f"invalid metric {name!r}: {exc}") from exc
                metric = _registered(registry, name)
                if metric is None:
                    raise ConfigurationError(
                        f"metric {name!r} clashes with a time series already in the registry"
                    ) from exc
            per_registry[name] = metric
    if not isinstance(metric, kind) or tuple(metric._labelnames) != labels:
        raise ConfigurationError(
            f"metric {name!r} already exists as {type(metric).__name__}"
            f"{list(metric._labelnames)}, not {kind.__name__}{list(labels)}"
        )
    return metric


def _registered(registry: CollectorRegistry, name: str) -> Any:
    # prometheus_client has no public lookup by name; this private map is stable
    # since 0.4 and only read on the rare clash path.
    names = getattr(registry, "_names_to_collectors", {})
    for candidate in (name, name.removesuffix("_total")):
        found = names.get(candidate)
        if found is not None:
            return found
    return None
