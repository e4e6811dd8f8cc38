"""``validate_body`` / ``validate_query``: validated models handed to Starlette endpoints."""

from __future__ import annotations

import functools
import inspect
import types
import typing
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Concatenate, Generic, ParamSpec, TypeVar, overload

from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from gennet_toolkit._problem import problem_bytes
from gennet_toolkit._routes import route_instance
from gennet_toolkit.exceptions import GenNetError, PayloadTooLarge, ValidationFailed
from gennet_toolkit.validation._body import (
    DEFAULT_MAX_SIZE,
    DEFAULT_MEDIA_TYPES,
    check_media_type,
    json_validator,
    read_body,
    safe_field_errors,
    validate_json_body,
)

__all__ = ["problem_response", "validate_body", "validate_query"]

M = TypeVar("M")
Q = TypeVar("Q", bound=BaseModel)
P = ParamSpec("P")
R = TypeVar("R")


def problem_response(exc: GenNetError, request: Request) -> Response:
    """``exc`` as an ``application/problem+json`` response for ``request``."""
    return Response(
        # The route template, never the raw path: 4xx bodies do not echo client input.
        problem_bytes(exc, route_instance(request.scope)),
        status_code=exc.status_code,
        headers=exc.headers,
        media_type="application/problem+json",
    )


class _BodyValidator(Generic[M]):
    """The decorator returned by :func:`validate_body` (typed for sync and async endpoints)."""

    def __init__(
        self, model: type[M], max_size: int, media_types: Sequence[str], raise_errors: bool
    ) -> None:
        self.model = model
        self.max_size = max_size
        self.media_types = tuple(media_types)
        self.raise_errors = raise_errors
        self._validate: Callable[[bytes], M] = json_validator(model)

    async def parse(self, request: Request) -> M:
        """Validate ``request``'s body; raises the problem exceptions of ``parse_body``."""
        headers = request.headers
        check_media_type(
            headers.get("content-type", "").encode("latin-1") or None, self.media_types
        )
        cached: bytes | None = getattr(request, "_body", None)
        if cached is None:
            length = headers.get("content-length")
            cached = await read_body(
                request.receive,
                max_size=self.max_size,
                content_length=length.encode("latin-1") if length is not None else None,
            )
            # Starlette's Request.body()/json() read this cache, so the endpoint can
            # still look at the raw bytes after we consumed the stream.
            request._body = cached
        elif len(cached) > self.max_size:
            raise PayloadTooLarge(
                f"The request body exceeds the limit of {self.max_size} bytes.",
                extra={"max_size": self.max_size},
            )
        return validate_json_body(cached, self._validate)

    @overload
    def __call__(
        self, fn: Callable[Concatenate[Request, M, P], Awaitable[R]]
    ) -> Callable[Concatenate[Request, P], Awaitable[R | Response]]: ...

    @overload
    def __call__(
        self, fn: Callable[Concatenate[Request, M, P], R]
    ) -> Callable[Concatenate[Request, P], Awaitable[R | Response]]: ...

    def __call__(
        self, fn: Callable[Concatenate[Request, M, P], Any]
    ) -> Callable[Concatenate[Request, P], Awaitable[Any]]:
        is_async = inspect.iscoroutinefunction(fn)

        @functools.wraps(fn)
        async def endpoint(request: Request, /, *args: P.args, **kwargs: P.kwargs) -> Any:
            try:
                value = await self.parse(request)
            except GenNetError as exc:
                if self.raise_errors:
                    raise
                return problem_response(exc, request)
            if is_async:
                return await fn(request, value, *args, **kwargs)
            return await run_in_threadpool(fn, request, value, *args, **kwargs)

        return endpoint


def validate_body(
    model: type[M],
    *,
    max_size: int = DEFAULT_MAX_SIZE,
    media_types: Sequence[str] = DEFAULT_MEDIA_TYPES,
    raise_errors: bool = False,
) -> _BodyValidator[M]:
    """Validate a Starlette endpoint's JSON body as ``model`` and pass it in.

    The validated value is the endpoint's **second positional argument**, right after
    the request (typed: mypy checks it against ``model``)::

        @validate_body(GeneIn)
        async def create_gene(request: Request, gene: GeneIn) -> Response: ...

    Sync endpoints run in Starlette's thread pool after the body is read. On bad input
    the decorator itself answers ``application/problem+json``: 415 (Content-Type), 413
    (over ``max_size``, counted while streaming), 400 (malformed JSON) or 422 (fields,
    each with a JSON pointer, never the submitted value). With ``raise_errors=True`` it
    raises the :mod:`gennet_toolkit.exceptions` error instead, for an installed error
    handler to render.
    """
    if max_size < 0:
        raise ValueError("max_size must be >= 0")
    return _BodyValidator(model, max_size, media_types, raise_errors)


def _is_sequence(annotation: Any) -> bool:
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _is_sequence(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return any(_is_sequence(a) for a in typing.get_args(annotation) if a is not type(None))
    return origin in (list, set, frozenset, tuple, Sequence) or annotation in (
        list,
        set,
        frozenset,
        tuple,
    )


class _QueryValidator(Generic[Q]):
    """The decorator returned by :func:`validate_query` (sync stays sync, async stays async)."""

    def __init__(self, model: type[Q], raise_errors: bool) -> None:
        self.model = model
        self.raise_errors = raise_errors
        # Which parameters collect repeated values (?gene=a&gene=b) into a list.
        self._multi = frozenset(
            key
            for name, field in model.model_fields.items()
            if _is_sequence(field.annotation)
            for key in (name, field.alias or name, field.validation_alias)
            if isinstance(key, str)
        )

    def parse(self, request: Request) -> Q:
        """Validate ``request``'s query string; raises ``ValidationFailed`` (422)."""
        data: dict[str, Any] = {}
        for key, value in request.query_params.multi_items():
            if key in self._multi:
                data.setdefault(key, []).append(value)
            elif key in data:
                prev = data[key]
                data[key] = [*prev, value] if isinstance(prev, list) else [prev, value]
            else:
                data[key] = value
        try:
            return self.model.model_validate(data)
        except ValidationError as exc:
            raise ValidationFailed(
                "The query string has invalid parameters.",
                errors=safe_field_errors(exc, "query"),
            ) from None

    @overload
    def __call__(
        self, fn: Callable[Concatenate[Request, Q, P], Awaitable[R]]
    ) -> Callable[Concatenate[Request, P], Awaitable[R | Response]]: ...

    @overload
    def __call__(
        self, fn: Callable[Concatenate[Request, Q, P], R]
    ) -> Callable[Concatenate[Request, P], R | Response]: ...

    def __call__(self, fn: Callable[Concatenate[Request, Q, P], Any]) -> Callable[..., Any]:
        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def async_endpoint(request: Request, /, *args: P.args, **kwargs: P.kwargs) -> Any:
                try:
                    value = self.parse(request)
                except GenNetError as exc:
                    if self.raise_errors:
                        raise
                    return problem_response(exc, request)
                return await fn(request, value, *args, **kwargs)

            return async_endpoint

        @functools.wraps(fn)
        def sync_endpoint(request: Request, /, *args: P.args, **kwargs: P.kwargs) -> Any:
            try:
                value = self.parse(request)
            except GenNetError as exc:
                if self.raise_errors:
                    raise
                return problem_response(exc, request)
            return fn(request, value, *args, **kwargs)

        return sync_endpoint


def validate_query(model: type[Q], *, raise_errors: bool = False) -> _QueryValidator[Q]:
    """Validate a Starlette endpoint's query string as ``model`` and pass it in.

    Like :func:`validate_body`, the model instance is the argument right after the
    request. List-typed fields collect repeated parameters (``?gene=lacZ&gene=lacY``).
    Set ``model_config = ConfigDict(extra="forbid")`` to refuse unknown parameters
    (a typo then gets a 422 instead of silently widening a query). Errors are
    problem+json 422 with ``errors[].parameter`` naming the parameter.
    """
    candidate: Any = model  # checked at runtime: callers may pass anything
    if not (isinstance(candidate, type) and issubclass(candidate, BaseModel)):
        raise TypeError("validate_query needs a pydantic BaseModel subclass")
    return _QueryValidator(model, raise_errors)
