"""API versioning as one pure-ASGI middleware: negotiate, deprecate, retire, migrate.

:class:`VersioningMiddleware` resolves each request's version from the URL prefix
(``/v2/…``), an ``API-Version`` header, an ``Accept`` media-type parameter or (opt-in) a
query parameter; :func:`get_api_version` reads it back. Deprecated versions carry RFC 9745
``Deprecation`` and RFC 8594 ``Sunset`` headers and answer 410 after their sunset.
:class:`VersionChange` chains (Cadwyn-style) let handlers be written for the newest
version while older clients keep their request and response shapes.
"""

from __future__ import annotations

from gennet_toolkit.api_versioning._changes import (
    ApiVersion,
    ChangeContext,
    Deprecation,
    VersionChange,
    format_version,
    parse_version,
)
from gennet_toolkit.api_versioning._middleware import (
    SCOPE_KEY,
    Strategy,
    VersioningMiddleware,
    get_api_version,
)

__all__ = [
    "SCOPE_KEY",
    "ApiVersion",
    "ChangeContext",
    "Deprecation",
    "Strategy",
    "VersionChange",
    "VersioningMiddleware",
    "format_version",
    "get_api_version",
    "parse_version",
]
