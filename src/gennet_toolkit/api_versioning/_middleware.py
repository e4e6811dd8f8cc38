"""VersioningMiddleware: negotiate the API version of each request in one wrapped app."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from email.utils import format_datetime
from typing import Any, Literal
from urllib.parse import unquote_plus

from gennet_toolkit._env import env_list, env_str
from gennet_toolkit._problem import problem_parts
from gennet_toolkit._routes import route_path
from gennet_toolkit.api_versioning._changes import (
    ApiVersion,
    Chain,
    ChangeContext,
    Deprecation,
    VersionChange,
    build_chains,
    format_version,
    parse_version,
    to_datetime,
)
from gennet_toolkit.api_versioning._migrate import (
    downgrading_send,
    is_json,
    merge_vary,
    upgrading_receive,
)
from gennet_toolkit.exceptions import (
    BadRequest,
    ConfigurationError,
    GenNetError,
    Gone,
)
from gennet_toolkit.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["SCOPE_KEY", "Strategy", "VersioningMiddleware", "get_api_version"]

Strategy = Literal["url", "header", "media_type", "query"]
_STRATEGIES = frozenset({"url", "header", "media_type", "query"})

#: The scope key holding the resolved version (also copied to ``scope["state"]``).
SCOPE_KEY = "gennet.api_version"


def get_api_version(scope_or_request: Any) -> ApiVersion:
    """The API version :class:`VersioningMiddleware` resolved for this request.

    Takes an ASGI scope or anything with a ``.scope`` (Starlette/FastAPI ``Request``,
    ``WebSocket``). Raises :class:`LookupError` when the middleware did not handle the
    request (not installed, or an excluded path).
    """
    scope = getattr(scope_or_request, "scope", scope_or_request)
    try:
        version: ApiVersion = scope[SCOPE_KEY]
    except (KeyError, TypeError):
        raise LookupError(
            "no API version on this request: is VersioningMiddleware installed "
            "and the path not excluded?"
        ) from None
    return version


def _route_path(scope: Scope) -> str:
    # Same rule as Starlette's routing: path includes root_path (ASGI spec 2.x).
    return route_path(scope["path"], scope.get("root_path", ""))


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value)
    return None


class _VersionError(Exception):
    def __init__(self, problem: GenNetError) -> None:
        self.problem = problem


class VersioningMiddleware:
    """Resolve the API version per request; deprecate, retire and migrate versions.

    ``versions`` are integers or ISO dates (``"2025-06-01"``); ``default`` is used when
    a request names none (``None`` makes a version mandatory). ``strategies`` are tried
    in order; two strategies naming different versions is a 400:

    - ``"url"``: ``/v2/genes`` — routes are written once, without the prefix; the prefix
      moves into ``root_path`` so routing, mounts and ``url_for`` keep working;
    - ``"header"``: ``API-Version: 2`` (``header_name``);
    - ``"media_type"``: ``Accept: application/vnd.gennet+json; version=2``;
    - ``"query"``: ``?version=2`` (opt-in; the parameter is removed before the app).

    ``deprecated`` maps a version to its sunset (a date/datetime, ``None`` for "no sunset
    yet", or a :class:`Deprecation`): its responses carry ``Deprecation: @<unix>``
    (RFC 9745), ``Sunset`` (RFC 8594) and ``Link`` to ``docs_url``; after the sunset it
    answers 410. ``changes`` maps a version to the :class:`VersionChange` (s) it
    introduced; handlers are written for the newest version, and older clients' JSON
    request bodies are upgraded and JSON responses downgraded along the chain.

    Unknown, malformed or conflicting versions get a 400 problem+json listing the
    supported versions. Responses carry ``Vary`` on the negotiated headers and the
    resolved version in ``header_name``. There are no sub-apps: exception handlers,
    middleware and lifespan of the wrapped app all keep working.
    """

    def __init__(
        self,
        app: ASGIApp,
        versions: Iterable[int | str | dt.date],
        default: int | str | dt.date | None,
        *,
        strategies: Sequence[Strategy] = ("url", "header"),
        header_name: str = "API-Version",
        url_prefix: str = "v",
        media_type: str = "application/vnd.gennet+json",
        query_param: str = "version",
        deprecated: Mapping[Any, dt.date | dt.datetime | Deprecation | None] | None = None,
        docs_url: str | None = None,
        changes: Mapping[Any, VersionChange | type[VersionChange] | Iterable[Any]] | None = None,
        exclude_paths: Sequence[str] = (),
        echo_version: bool = True,
        max_body_size: int = 1_048_576,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.app = app
        raw = list(versions)
        if not raw:
            raise ConfigurationError("versions must not be empty")
        self.dates = all(isinstance(v, dt.date) or (isinstance(v, str) and "-" in v) for v in raw)
        self.versions: tuple[ApiVersion, ...] = tuple(
            sorted({self._coerce(v) for v in raw}, key=_sort_key)
        )
        self._known = frozenset(self.versions)
        self.default = None if default is None else self._coerce(default)
        if self.default is not None and self.default not in self._known:
            raise ConfigurationError("default must be one of versions")
        unknown = set(strategies) - _STRATEGIES
        if unknown or not strategies:
            raise ConfigurationError(f"strategies must be drawn from {sorted(_STRATEGIES)}")
        self.strategies = tuple(strategies)
        self.header_name = header_name
        self._header_key = header_name.lower().encode("latin-1")
        self.url_prefix = url_prefix
        self.media_type = media_type.lower()
        self.query_param = query_param
        self.exclude_paths = tuple(exclude_paths)
        self.echo_version = echo_version
        self.max_body_size = max_body_size
        self.clock = clock
        self.docs_url = docs_url
        self.supported = [format_version(v) for v in self.versions]

        vary = []
        if "header" in self.strategies:
            vary.append(header_name)
        if "media_type" in self.strategies:
            vary.append("Accept")
        self._vary = vary

        self.deprecations: dict[ApiVersion, Deprecation] = {}
        for key, value in (deprecated or {}).items():
            version = self._coerce(key)
            if version not in self._known:
                raise ConfigurationError("deprecated names a version not in versions")
            self.deprecations[version] = self._deprecation(version, value)
        self._sunset_ts = {
            v: at.timestamp()
            for v, d in self.deprecations.items()
            if (at := d.sunset_at()) is not None
        }
        self.chains: dict[ApiVersion, Chain] = build_chains(
            self.versions, {self._coerce(k): v for k, v in (changes or {}).items()}
        )
        # Response headers per version, built once.
        self._headers: dict[ApiVersion, list[tuple[bytes, bytes]]] = {
            v: self._static_headers(v) for v in self.versions
        }

    # ------------------------------------------------------------------ setup helpers

    def _coerce(self, value: Any) -> ApiVersion:
        if isinstance(value, bool):
            raise ConfigurationError("a version is an int or an ISO date, not a bool")
        if self.dates:
            if isinstance(value, dt.datetime):
                return value.date()
            if isinstance(value, dt.date):
                return value
        elif isinstance(value, int):
            if value < 0:
                raise ConfigurationError("integer versions must be >= 0")
            return value
        parsed = parse_version(str(value), dates=self.dates) if isinstance(value, str) else None
        if parsed is None:
            kind = "ISO dates" if self.dates else "integers"
            raise ConfigurationError(f"versions must all be {kind}; got {value!r}")
        return parsed

    def _deprecation(
        self, version: ApiVersion, value: dt.date | dt.datetime | Deprecation | None
    ) -> Deprecation:
        info = value if isinstance(value, Deprecation) else Deprecation(sunset=value)
        since: dt.date | dt.datetime | None = info.since
        if since is None:
            # A date version was superseded on its successor's date; otherwise the day
            # this process started is the best date we know (set since= to pin it).
            later = self.versions[self.versions.index(version) + 1 :]
            since = (
                later[0]
                if later and isinstance(later[0], dt.date)
                else dt.datetime.now(dt.UTC).date()
            )
            sunset = info.sunset_at()
            if sunset is not None and to_datetime(since) > sunset:
                since = sunset
        link = info.link
        if link is None and self.docs_url is not None:
            link = self.docs_url.replace("{version}", format_version(version))
        return Deprecation(sunset=info.sunset, since=since, link=link)

    def _static_headers(self, version: ApiVersion) -> list[tuple[bytes, bytes]]:
        out: list[tuple[bytes, bytes]] = []
        if self.echo_version:
            out.append((self._header_key, format_version(version).encode()))
        info = self.deprecations.get(version)
        if info is not None:
            since = info.since_at()
            if since is not None:
                out.append((b"deprecation", f"@{int(since.timestamp())}".encode()))
            sunset = info.sunset_at()
            if sunset is not None:
                out.append((b"sunset", format_datetime(sunset, usegmt=True).encode()))
            if info.link:
                out.append(
                    (b"link", f'<{info.link}>; rel="deprecation"; type="text/html"'.encode())
                )
                if sunset is not None:
                    out.append((b"link", f'<{info.link}>; rel="sunset"; type="text/html"'.encode()))
        return out

    @classmethod
    def from_env(
        cls, app: ASGIApp, *, prefix: str = "GENNET_", **overrides: Any
    ) -> VersioningMiddleware:
        """Configure from the environment: ``{prefix}API_VERSIONS`` (comma-separated),
        ``{prefix}API_DEFAULT_VERSION`` (empty: required), ``{prefix}API_VERSION_STRATEGIES``
        (comma-separated), ``{prefix}API_VERSION_HEADER``, ``{prefix}API_DEPRECATED``
        (``1=2026-12-31,2`` — version, optional sunset date) and ``{prefix}API_DOCS_URL``.
        Keyword ``overrides`` (e.g. ``changes=``) win over the environment."""
        versions = env_list(f"{prefix}API_VERSIONS", [])
        if not versions:
            raise ConfigurationError(f"{prefix}API_VERSIONS is not set")
        default = env_str(f"{prefix}API_DEFAULT_VERSION")
        kwargs: dict[str, Any] = {}
        if strategies := env_list(f"{prefix}API_VERSION_STRATEGIES", []):
            kwargs["strategies"] = tuple(strategies)
        if header := env_str(f"{prefix}API_VERSION_HEADER"):
            kwargs["header_name"] = header
        if docs := env_str(f"{prefix}API_DOCS_URL"):
            kwargs["docs_url"] = docs
        deprecated: dict[str, dt.date | None] = {}
        for item in env_list(f"{prefix}API_DEPRECATED", []):
            version, _, sunset = item.partition("=")
            try:
                deprecated[version.strip()] = (
                    dt.date.fromisoformat(sunset.strip()) if sunset.strip() else None
                )
            except ValueError:
                raise ConfigurationError(f"{prefix}API_DEPRECATED: bad sunset date") from None
        if deprecated:
            kwargs["deprecated"] = deprecated
        kwargs.update(overrides)
        return cls(app, versions, default, **kwargs)

    # ------------------------------------------------------------------ negotiation

    def _unknown(self, what: str) -> _VersionError:
        supported = ", ".join(self.supported)
        return _VersionError(
            BadRequest(
                f"{what}; supported versions: {supported}.",
                code="unsupported_api_version",
                extra={"supported_versions": self.supported},
            )
        )

    def _check(self, token: str) -> ApiVersion:
        version = parse_version(token, dates=self.dates)
        if version is None or version not in self._known:
            raise self._unknown("Unsupported API version")
        return version

    def _from_url(self, route_path: str) -> tuple[ApiVersion, str] | None:
        segment = route_path[1:].split("/", 1)[0]
        if not segment.startswith(self.url_prefix):
            return None
        token = segment[len(self.url_prefix) :]
        # Only segments shaped like a version are claimed: /videos stays a normal route.
        if parse_version(token, dates=self.dates) is None:
            return None
        return self._check(token), "/" + segment

    def _from_media_type(self, accept: bytes) -> ApiVersion | None:
        for item in accept.decode("latin-1").split(","):
            media, *params = item.split(";")
            if media.strip().lower() != self.media_type:
                continue
            for param in params:
                key, _, value = param.partition("=")
                if key.strip().lower() == "version":
                    return self._check(value.strip().strip('"'))
        return None

    def _from_query(self, query: bytes) -> tuple[ApiVersion | None, bytes]:
        found: ApiVersion | None = None
        kept = []
        for pair in query.split(b"&"):
            key, _, value = pair.partition(b"=")
            if unquote_plus(key.decode("latin-1")) == self.query_param:
                token = unquote_plus(value.decode("latin-1"))
                version = self._check(token)
                if found is not None and found != version:
                    raise _VersionError(
                        BadRequest("Conflicting API versions.", code="conflicting_api_version")
                    )
                found = version
            elif pair:
                kept.append(pair)
        return found, b"&".join(kept)

    def resolve(self, scope: Scope) -> tuple[ApiVersion, Scope]:
        """The version for ``scope`` and the scope the app should see (prefix moved to
        ``root_path``, version query parameter removed). Raises ``_VersionError``."""
        child = dict(scope)
        found: list[ApiVersion] = []
        for strategy in self.strategies:
            if strategy == "url":
                hit = self._from_url(_route_path(scope))
                if hit is not None:
                    found.append(hit[0])
                    child["root_path"] = scope.get("root_path", "") + hit[1]
            elif strategy == "header":
                raw = _header(scope, self._header_key)
                if raw is not None:
                    found.append(self._check(raw.decode("latin-1")))
            elif strategy == "media_type":
                accept = _header(scope, b"accept")
                if accept is not None and (v := self._from_media_type(accept)) is not None:
                    found.append(v)
            else:
                version, rest = self._from_query(scope.get("query_string", b""))
                if version is not None:
                    found.append(version)
                    child["query_string"] = rest
        if not found:
            if self.default is None:
                raise self._unknown("An API version is required")
            found.append(self.default)
        if any(v != found[0] for v in found):
            raise _VersionError(
                BadRequest(
                    "The request names different API versions in different places.",
                    code="conflicting_api_version",
                    extra={"supported_versions": self.supported},
                )
            )
        version = found[0]
        sunset = self._sunset_ts.get(version)
        if sunset is not None and self.clock() >= sunset:
            info = self.deprecations[version]
            raise _VersionError(
                Gone(
                    f"API version {format_version(version)} was retired; supported versions: "
                    f"{', '.join(self.supported)}.",
                    code="api_version_retired",
                    extra={"supported_versions": self.supported},
                    headers={
                        k.decode(): v.decode() for k, v in self._headers[version] if k != b"link"
                    }
                    | ({"Link": f'<{info.link}>; rel="sunset"'} if info.link else {}),
                )
            )
        child[SCOPE_KEY] = version
        child.setdefault("state", {})
        child["state"]["api_version"] = version
        return version, child

    # ------------------------------------------------------------------ ASGI

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or (
            self.exclude_paths and _route_path(scope).startswith(self.exclude_paths)
        ):
            await self.app(scope, receive, send)
            return
        try:
            version, child = self.resolve(scope)
        except _VersionError as err:
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008})
            else:
                await self._send_problem(err.problem, scope, send)
            return
        if scope["type"] == "websocket":
            await self.app(child, receive, send)
            return

        chain = self.chains[version]
        route = _route_path(child)
        method = child["method"]
        ctx = ChangeContext(route, method, version)
        upgrades = [c for c in chain.upgrades if c.applies_to(route, method)]
        downgrades = [c for c in chain.downgrades if c.applies_to(route, method)]
        if upgrades and is_json(_header(child, b"content-type")):
            try:
                receive = await self._upgrade_request(child, receive, upgrades, ctx)
            except GenNetError as exc:
                await self._send_problem(exc, scope, send)
                return
        extra = self._headers[version]
        vary = self._vary
        if downgrades:
            send = downgrading_send(send, downgrades, ctx)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.extend(extra)
                if vary:
                    merge_vary(headers, vary)
                message = {**message, "headers": headers}
            await send(message)

        await self.app(child, receive, send_with_headers)

    async def _upgrade_request(
        self, child: Scope, receive: Receive, upgrades: list[VersionChange], ctx: ChangeContext
    ) -> Receive:
        return await upgrading_receive(child, receive, upgrades, ctx, self.max_body_size)

    async def _send_problem(self, exc: GenNetError, scope: Scope, send: Send) -> None:
        payload, headers = problem_parts(exc, scope)
        if self._vary:
            merge_vary(headers, self._vary)
        await send({"type": "http.response.start", "status": exc.status_code, "headers": headers})
        await send({"type": "http.response.body", "body": payload})


def _sort_key(version: ApiVersion) -> tuple[int, str]:
    # Versions are all ints or all dates; a common key keeps mypy and sorting happy.
    if isinstance(version, dt.date):
        return (0, version.isoformat())
    return (version, "")
