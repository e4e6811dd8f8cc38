"""Lazy imports of optional dependencies, with an error that names the extra to install."""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["require"]


def require(module: str, *, extra: str, feature: str | None = None) -> ModuleType:
    """Import ``module`` or raise an :class:`ImportError` naming the extra that provides it.

    ``feature`` is the toolkit module (or feature) that needs it; it defaults to the
    caller's description-free form ``gennet_toolkit``::

        redis = require("redis.asyncio", extra="redis", feature="gennet_toolkit.cache")
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        top = module.partition(".")[0]
        who = feature or "gennet_toolkit"
        raise ImportError(
            f'{who} needs {top}: pip install "gennet-toolkit[{extra}]"',
            name=top,
        ) from exc
