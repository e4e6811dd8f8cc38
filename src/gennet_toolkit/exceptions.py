"""One error family for the whole toolkit, rendered as RFC 9457 problem details.

Everything the toolkit raises on purpose derives from :class:`GenNetError`; the
error handler turns any of them into an ``application/problem+json`` response::

    GenNetError (500)
    ├── ConfigurationError (500, also a ValueError: a bad option, found at setup)
    ├── BadRequest (400)
    │   └── InvalidJSON (400)
    ├── Unauthorized (401)
    ├── Forbidden (403)
    ├── NotFound (404)
    ├── MethodNotAllowed (405)
    ├── Conflict (409)
    │   └── ConcurrencyError (409)
    ├── Gone (410)
    ├── PayloadTooLarge (413)
    ├── UnsupportedMediaType (415)
    ├── ValidationFailed (422)
    ├── RateLimitExceeded (429)
    ├── UpstreamError (502)
    └── ServiceUnavailable (503)
        └── CircuitOpenError (503)

Each class carries a default ``status_code``, ``code`` (a stable machine-readable
name) and ``title``; any of them can be overridden per instance. ``detail`` is
written for the client: never put exception text, SQL or submitted values in it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, ClassVar

__all__ = [
    "PROBLEM_TYPE_PREFIX",
    "BadRequest",
    "CircuitOpenError",
    "ConcurrencyError",
    "ConfigurationError",
    "Conflict",
    "FieldError",
    "Forbidden",
    "GenNetError",
    "Gone",
    "InvalidJSON",
    "MethodNotAllowed",
    "NotFound",
    "PayloadTooLarge",
    "RateLimitExceeded",
    "ServiceUnavailable",
    "Unauthorized",
    "UnsupportedMediaType",
    "UpstreamError",
    "ValidationFailed",
]

#: Problem ``type`` URIs are ``PROBLEM_TYPE_PREFIX + code`` unless a class or instance sets one.
PROBLEM_TYPE_PREFIX = "urn:gennet:problem:"

# Members of the problem body that ``extra`` may not overwrite.
_RESERVED = frozenset(
    {"type", "title", "status", "detail", "instance", "code", "correlation_id", "errors"}
)


@dataclass(frozen=True, slots=True)
class FieldError:
    """One invalid part of a request, located without echoing the submitted value.

    ``location`` is ``"body"``, ``"query"``, ``"path"``, ``"header"`` or ``"cookie"``.
    For the body, ``pointer`` is an RFC 6901 JSON pointer (``"/genes/0/symbol"``);
    elsewhere ``name`` is the parameter or header name.
    """

    detail: str
    location: str = "body"
    pointer: str | None = None
    name: str | None = None
    code: str = "invalid"

    def to_dict(self) -> dict[str, str]:
        """The ``errors[]`` member of a problem body (RFC 9457 section 3 style)."""
        out: dict[str, str] = {"detail": self.detail, "location": self.location}
        if self.pointer is not None:
            out["pointer"] = "#" + self.pointer
        if self.name is not None:
            key = "header" if self.location == "header" else "parameter"
            out[key] = self.name
        out["code"] = self.code
        return out


def json_pointer(path: Iterable[str | int]) -> str:
    """Build an RFC 6901 pointer from path parts (``["a", 0, "b/c"]`` → ``"/a/0/b~1c"``)."""
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in path)


class GenNetError(Exception):
    """Base of every error the toolkit raises on purpose.

    ``GenNetError(detail, *, status_code=…, code=…, type_uri=…, title=…, extra=…,
    errors=…, headers=…)``; every keyword defaults to the class's value. ``extra``
    adds members to the problem body; ``headers`` are sent with the response.
    """

    status_code: ClassVar[int] = 500
    code: ClassVar[str] = "internal_error"
    title: ClassVar[str | None] = None
    type_uri: ClassVar[str | None] = None
    default_detail: ClassVar[str] = "The server could not complete the request."

    def __init__(
        self,
        detail: str | None = None,
        *,
        status_code: int | None = None,
        code: str | None = None,
        type_uri: str | None = None,
        title: str | None = None,
        extra: Mapping[str, Any] | None = None,
        errors: Sequence[FieldError] = (),
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.detail = detail if detail is not None else self.default_detail
        super().__init__(self.detail)
        # Instance attributes shadow the ClassVar defaults on purpose.
        if status_code is not None:
            if not 400 <= status_code <= 599:
                raise ValueError(f"status_code must be a 4xx or 5xx code, got {status_code}")
            self.status_code = status_code  # type: ignore[misc]
        if code is not None:
            self.code = code  # type: ignore[misc]
        if type_uri is not None:
            self.type_uri = type_uri  # type: ignore[misc]
        if title is not None:
            self.title = title  # type: ignore[misc]
        clash = _RESERVED.intersection(extra or {})
        if clash:
            raise ValueError(f"extra may not set reserved problem members: {sorted(clash)}")
        self.extra: dict[str, Any] = dict(extra or {})
        self.errors: tuple[FieldError, ...] = tuple(errors)
        self.headers: dict[str, str] = dict(headers or {})

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.detail!r}, status_code={self.status_code})"

    def problem_type(self) -> str:
        """The problem ``type`` URI."""
        return self.type_uri or PROBLEM_TYPE_PREFIX + self.code

    def problem_title(self) -> str:
        """The problem ``title``: the class title or the HTTP reason phrase."""
        if self.title:
            return self.title
        try:
            return HTTPStatus(self.status_code).phrase
        except ValueError:
            return "Error"

    def to_problem(
        self, *, instance: str | None = None, correlation_id: str | None = None
    ) -> dict[str, Any]:
        """The RFC 9457 body for this error."""
        body: dict[str, Any] = {
            "type": self.problem_type(),
            "title": self.problem_title(),
            "status": self.status_code,
            "detail": self.detail,
            "code": self.code,
        }
        if instance is not None:
            body["instance"] = instance
        if correlation_id is not None:
            body["correlation_id"] = correlation_id
        if self.errors:
            body["errors"] = [e.to_dict() for e in self.errors]
        body.update(self.extra)
        return body


class ConfigurationError(GenNetError, ValueError):
    """A toolkit object was configured wrongly (unknown backend scheme, bad option)."""

    code = "configuration_error"


class BadRequest(GenNetError):
    """The request is malformed (400)."""

    status_code = 400
    code = "bad_request"
    default_detail = "The request is malformed."


class InvalidJSON(BadRequest):
    """The request body is not valid JSON (400)."""

    code = "invalid_json"
    default_detail = "The request body is not valid JSON."


class Unauthorized(GenNetError):
    """No valid credentials were presented (401).

    ``scheme`` fills ``WWW-Authenticate`` (RFC 9110 requires it on a 401).
    """

    status_code = 401
    code = "unauthorized"
    default_detail = "Valid credentials are required."

    def __init__(self, detail: str | None = None, *, scheme: str = "Bearer", **kw: Any) -> None:
        headers = {"WWW-Authenticate": scheme, **(kw.pop("headers", None) or {})}
        super().__init__(detail, headers=headers, **kw)


class Forbidden(GenNetError):
    """The credentials are valid but not allowed to do this (403)."""

    status_code = 403
    code = "forbidden"
    default_detail = "You are not allowed to perform this action."


class NotFound(GenNetError):
    """The resource does not exist (404)."""

    status_code = 404
    code = "not_found"
    default_detail = "The requested resource was not found."


class MethodNotAllowed(GenNetError):
    """The method is not supported on this resource (405)."""

    status_code = 405
    code = "method_not_allowed"
    default_detail = "The method is not allowed on this resource."


class Conflict(GenNetError):
    """The request conflicts with the current state (409)."""

    status_code = 409
    code = "conflict"
    default_detail = "The request conflicts with the current state of the resource."


class ConcurrencyError(Conflict):
    """An optimistic-concurrency check failed: someone else wrote first (409)."""

    code = "concurrency_conflict"
    default_detail = "The resource was changed by another request; reload and retry."


class Gone(GenNetError):
    """The resource or API version existed but was retired (410)."""

    status_code = 410
    code = "gone"
    default_detail = "The requested resource is no longer available."


class PayloadTooLarge(GenNetError):
    """The request body exceeds the configured limit (413)."""

    status_code = 413
    code = "payload_too_large"
    default_detail = "The request body is too large."


class UnsupportedMediaType(GenNetError):
    """The request body's content type or encoding is not supported (415)."""

    status_code = 415
    code = "unsupported_media_type"
    default_detail = "The request body's media type is not supported."


class ValidationFailed(GenNetError):
    """The request is well-formed but some fields are invalid (422); see ``errors``."""

    status_code = 422
    code = "validation_failed"
    default_detail = "The request has invalid fields."

    @classmethod
    def from_pydantic(
        cls, exc: Any, *, location: str = "body", detail: str | None = None
    ) -> ValidationFailed:
        """Build from a ``pydantic.ValidationError`` without echoing any input value.

        For ``location="body"`` each error gets a JSON pointer; for query, path and
        header locations the first path part is the parameter name.
        """
        raw = [{**e, "loc": (location, *e["loc"])} for e in exc.errors(include_url=False)]
        return cls(detail, errors=field_errors_from_pydantic(raw, location=location))


_LOCATIONS = frozenset({"body", "query", "path", "header", "cookie"})
_GENERIC_MESSAGE = "Invalid value."


def _scrub(msg: str, value: Any) -> str:
    # pydantic's own messages never quote the input, but a user's validator raising
    # ValueError(f"{v} is not a gene") would: drop any message that contains the value.
    if isinstance(value, str | int | float) and not isinstance(value, bool):
        text = str(value)
        if len(text) >= 3 and text in msg:
            return _GENERIC_MESSAGE
    return msg


def field_errors_from_pydantic(
    raw: Iterable[Mapping[str, Any]], *, location: str | None = None
) -> list[FieldError]:
    """Translate pydantic ``errors()`` dicts into :class:`FieldError`, never keeping ``input``.

    With ``location=None`` (FastAPI's style) a ``loc`` starting with a location word
    (``("body", "gene")``, ``("query", "limit")``) names the location, and the rest is
    the path; otherwise the location is ``"body"``. With an explicit ``location`` a
    leading part equal to it is taken as that prefix. Messages that quote the
    submitted value are replaced by a generic one.
    """
    out: list[FieldError] = []
    for err in raw:
        loc = list(err.get("loc", ()))
        if location is None:
            where = str(loc.pop(0)) if loc and loc[0] in _LOCATIONS else "body"
        else:
            where = location
            if loc and loc[0] == location:
                loc.pop(0)
        msg = _scrub(str(err.get("msg", _GENERIC_MESSAGE)), err.get("input"))
        code = str(err.get("type", "invalid"))
        if where == "body":
            out.append(FieldError(msg, location=where, pointer=json_pointer(loc), code=code))
        else:
            name = str(loc[0]) if loc else None
            out.append(FieldError(msg, location=where, name=name, code=code))
    return out


class RateLimitExceeded(GenNetError):
    """Too many requests (429); ``retry_after`` seconds go into ``Retry-After``."""

    status_code = 429
    code = "rate_limited"
    default_detail = "Too many requests; retry later."

    def __init__(self, detail: str | None = None, *, retry_after: float = 0, **kw: Any) -> None:
        self.retry_after = max(0, int(-(-retry_after // 1)))  # whole seconds, rounded up
        headers = {"Retry-After": str(self.retry_after), **(kw.pop("headers", None) or {})}
        super().__init__(detail, headers=headers, **kw)


class UpstreamError(GenNetError):
    """An upstream service failed or answered with an error (502)."""

    status_code = 502
    code = "upstream_error"
    default_detail = "An upstream service failed."


class ServiceUnavailable(GenNetError):
    """A dependency (Redis, the database, a broker) is unreachable (503).

    ``retry_after`` (seconds), when given, goes into ``Retry-After``.
    """

    status_code = 503
    code = "service_unavailable"
    default_detail = "A service this request depends on is unavailable."

    def __init__(
        self, detail: str | None = None, *, retry_after: float | None = None, **kw: Any
    ) -> None:
        self.retry_after = None if retry_after is None else max(0, int(-(-retry_after // 1)))
        headers = dict(kw.pop("headers", None) or {})
        if self.retry_after is not None:
            headers.setdefault("Retry-After", str(self.retry_after))
        super().__init__(detail, headers=headers, **kw)


class CircuitOpenError(ServiceUnavailable):
    """A circuit breaker is open and refused the call (503)."""

    code = "circuit_open"
    default_detail = "A dependency is failing; the call was refused to let it recover."
