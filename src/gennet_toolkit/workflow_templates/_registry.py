"""TemplateRegistry (sync) and AsyncTemplateRegistry: publish, get, discover, instantiate, usage."""

from __future__ import annotations

import inspect
import json
import os
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from gennet_toolkit.exceptions import (
    ConfigurationError,
    FieldError,
    NotFound,
    PayloadTooLarge,
    ValidationFailed,
)
from gennet_toolkit.workflow_templates._model import (
    RenderedStep,
    Template,
    WorkflowRun,
    is_template_name,
    render,
)
from gennet_toolkit.workflow_templates._schema import (
    CompiledSchema,
    SchemaProblem,
    canonical_json,
    check_json_value,
)
from gennet_toolkit.workflow_templates._semver import SemVer
from gennet_toolkit.workflow_templates._sql import (
    AsyncSqlTemplateStore,
    DiscoverQuery,
    SqlTemplateStore,
    StoredTemplate,
    TemplateSummary,
)

__all__ = ["AsyncTemplateRegistry", "TemplatePage", "TemplateRegistry", "TemplateUsage"]

DEFAULT_MAX_PARAMS_BYTES = 64 * 1024
DEFAULT_MAX_PATTERN_INPUT = 1024
DEFAULT_CACHE_SIZE = 256


@dataclass(frozen=True)
class TemplatePage:
    """One page of :meth:`TemplateRegistry.discover`; pass ``next_cursor`` for the next."""

    items: list[TemplateSummary]
    next_cursor: str | None

    @property
    def has_next(self) -> bool:
        """Whether another page follows."""
        return self.next_cursor is not None


@dataclass(frozen=True)
class TemplateUsage:
    """How often a template was instantiated, in total and per version (semver order)."""

    name: str
    total: int
    by_version: dict[str, int]


@dataclass(frozen=True)
class _Entry:
    template: Template
    schema: CompiledSchema


def _not_found(name: str, version: str | None) -> NotFound:
    what = "template" if version is None else "template version"
    return NotFound(f"No such workflow {what}.", code="template_not_found")


def _check_name(name: object) -> None:
    # A name no template can have (NUL, a lone surrogate, not a string) is simply unknown,
    # and never reaches the database driver, which would refuse it with a 500.
    if not is_template_name(name):
        raise _not_found("", None)


def _normal_version(version: str | None) -> str | None:
    if version is None:
        return None
    try:
        return str(SemVer.parse(version))
    except ValueError:
        # A malformed version cannot exist: the same answer as an unknown one.
        return ""


class _Core:
    """Everything that does not touch the store: shared by the sync and async registries."""

    def __init__(
        self,
        *,
        submit: Callable[[WorkflowRun], Any] | None,
        cache_size: int,
        max_params_bytes: int,
        max_pattern_input: int,
        reject_unknown: bool,
    ) -> None:
        if cache_size < 1 or max_params_bytes < 2 or max_pattern_input < 1:
            raise ConfigurationError(
                "cache_size, max_params_bytes and max_pattern_input must be positive"
            )
        self.submit = submit
        self.max_params_bytes = max_params_bytes
        self.max_pattern_input = max_pattern_input
        self.reject_unknown = reject_unknown
        self._cache_size = cache_size
        self._cache: OrderedDict[tuple[str, str], _Entry] = OrderedDict()
        self._lock = threading.Lock()
        self.compilations = 0  # how many schemas were compiled (a cache-miss counter)

    @staticmethod
    def env_options(prefix: str) -> dict[str, int]:
        out: dict[str, int] = {}
        for key in ("cache_size", "max_params_bytes", "max_pattern_input"):
            raw = os.environ.get(f"{prefix}WORKFLOW_{key.upper()}")
            if raw is not None and raw.strip():
                try:
                    out[key] = int(raw)
                except ValueError:
                    raise ConfigurationError(
                        f"{prefix}WORKFLOW_{key.upper()} must be an integer"
                    ) from None
        return out

    def cached(self, name: str, version: str, digest: str | None = None) -> _Entry | None:
        with self._lock:
            entry = self._cache.get((name, version))
            if entry is None or (digest is not None and entry.template.digest != digest):
                return None
            self._cache.move_to_end((name, version))
            return entry

    def entry(self, stored: StoredTemplate) -> _Entry:
        cached = self.cached(stored.name, stored.version, stored.digest)
        if cached is not None:
            return cached
        template = Template.from_dict(json.loads(stored.document))
        # Compiled once per version and process; versions are immutable so it never goes stale.
        schema = CompiledSchema(
            template.parameters,
            max_pattern_input=self.max_pattern_input,
            reject_unknown=self.reject_unknown,
        )
        entry = _Entry(template, schema)
        with self._lock:
            self.compilations += 1
            self._cache[(stored.name, stored.version)] = entry
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return entry

    def check_params(self, params: Any) -> dict[str, Any]:
        if not isinstance(params, Mapping):
            raise ValidationFailed(
                "The workflow parameters must be a JSON object.",
                errors=[FieldError("Expected an object.", pointer="", code="type")],
            )
        try:
            check_json_value(dict(params), what="parameters")
            size = len(canonical_json(dict(params)).encode())
        except SchemaProblem as exc:
            raise ValidationFailed(
                "The workflow parameters are invalid.",
                errors=[FieldError(str(exc)[:1].upper() + str(exc)[1:] + ".", pointer=exc.pointer)],
            ) from None
        if size > self.max_params_bytes:
            raise PayloadTooLarge(
                f"The workflow parameters exceed {self.max_params_bytes} bytes.",
                code="parameters_too_large",
            )
        return dict(params)

    def build_run(self, entry: _Entry, params: Any) -> WorkflowRun:
        checked = self.check_params(params)
        filled = entry.schema.validate(checked)
        steps = {s.name: s for s in entry.template.steps}
        rendered = tuple(
            RenderedStep(
                name=n,
                uses=steps[n].uses,
                inputs=render(dict(steps[n].inputs), filled),
                depends_on=steps[n].depends_on,
            )
            for n in entry.template.order
        )
        return WorkflowRun(
            id=uuid.uuid4().hex,
            template=entry.template.name,
            version=entry.template.version,
            digest=entry.template.digest,
            params=filled,
            steps=rendered,
            created_at=datetime.now(UTC),
        )

    @staticmethod
    def usage(name: str, counts: dict[str, int] | None) -> TemplateUsage:
        if counts is None:
            raise _not_found(name, None)
        ordered = dict(sorted(counts.items(), key=lambda kv: SemVer.parse(kv[0])))
        return TemplateUsage(name, sum(ordered.values()), ordered)


class TemplateRegistry:
    """Workflow templates on a sync store: publish immutable versions, discover, instantiate.

    ``registry = TemplateRegistry(SqlTemplateStore(engine))``, then
    ``registry.create(Template(...))`` and ``registry.instantiate("name", {"x": 1})``.

    ``submit`` (a sync callable) receives every :class:`WorkflowRun` after its usage event
    is recorded, e.g. to enqueue it on a task queue; ``instantiate(submit=...)`` overrides
    it per call. Options: ``cache_size`` compiled template versions kept,
    ``max_params_bytes`` (413 above it), ``max_pattern_input`` (longest string checked
    against a ``pattern``), ``reject_unknown`` (parameters the schema's root ``properties``
    do not name are a 422 unless the schema says what to do with extra keys).
    """

    def __init__(
        self,
        store: SqlTemplateStore,
        *,
        submit: Callable[[WorkflowRun], Any] | None = None,
        cache_size: int = DEFAULT_CACHE_SIZE,
        max_params_bytes: int = DEFAULT_MAX_PARAMS_BYTES,
        max_pattern_input: int = DEFAULT_MAX_PATTERN_INPUT,
        reject_unknown: bool = True,
    ) -> None:
        if submit is not None and inspect.iscoroutinefunction(submit):
            raise ConfigurationError("an async submit hook needs AsyncTemplateRegistry")
        self.store = store
        self._core = _Core(
            submit=submit,
            cache_size=cache_size,
            max_params_bytes=max_params_bytes,
            max_pattern_input=max_pattern_input,
            reject_unknown=reject_unknown,
        )

    @classmethod
    def from_env(
        cls, store: SqlTemplateStore, *, prefix: str = "GENNET_", **overrides: Any
    ) -> TemplateRegistry:
        """Options from ``{prefix}WORKFLOW_CACHE_SIZE``, ``…_MAX_PARAMS_BYTES``,
        ``…_MAX_PATTERN_INPUT``; keyword overrides win."""
        return cls(store, **{**_Core.env_options(prefix), **overrides})

    @property
    def compilations(self) -> int:
        """How many parameter schemas this registry compiled (once per version)."""
        return self._core.compilations

    def create(self, template: Template) -> Template:
        """Publish ``template``. Re-publishing identical content is a no-op; other content
        under a published name and version is a 409 ``Conflict``."""
        if not isinstance(template, Template):
            raise TypeError("create() takes a Template; use Template.from_dict for JSON")
        self.store.insert(template.to_dict(), template.digest)
        return template

    publish = create

    def get(self, name: str, version: str | None = None) -> Template:
        """A published version; ``version=None`` is the latest release (the latest
        pre-release when there is no release yet). Unknown → 404 ``NotFound``."""
        return self._entry(name, version).template

    def versions(self, name: str) -> list[str]:
        """All published versions of ``name`` in semver order (404 when there are none)."""
        _check_name(name)
        found = self.store.versions(name)
        if not found:
            raise _not_found(name, None)
        return found

    def discover(
        self,
        *,
        tag: str | None = None,
        text: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
        all_versions: bool = False,
    ) -> TemplatePage:
        """Latest versions (or every version) matching a tag and a case-insensitive text,
        ordered by name, keyset-paged; bad arguments or cursors → 400."""
        q = DiscoverQuery.build(
            tag=tag, text=text, limit=limit, cursor=cursor, all_versions=all_versions
        )
        items, next_cursor = self.store.discover(q)
        return TemplatePage(items, next_cursor)

    def instantiate(
        self,
        name: str,
        params: Mapping[str, Any],
        version: str | None = None,
        *,
        submit: Callable[[WorkflowRun], Any] | None = None,
    ) -> WorkflowRun:
        """Validate ``params`` (defaults applied), render the steps, record a usage event,
        hand the run to ``submit`` and return it. 404 for an unknown template or version,
        422 ``ValidationFailed`` (JSON pointers, no values) for bad params, 413 when too big.
        """
        hook = submit if submit is not None else self._core.submit
        if hook is not None and inspect.iscoroutinefunction(hook):
            raise ConfigurationError("an async submit hook needs AsyncTemplateRegistry")
        run = self._core.build_run(self._entry(name, version), params)
        self.store.record_usage(run.template, run.version, run.id, run.created_at)
        if hook is not None:
            result = hook(run)
            if inspect.isawaitable(result):
                if inspect.iscoroutine(result):
                    result.close()
                raise ConfigurationError("an async submit hook needs AsyncTemplateRegistry")
        return run

    def usage(self, name: str) -> TemplateUsage:
        """Instantiation counts of ``name`` per version, counted in SQL (404 if unknown)."""
        _check_name(name)
        return self._core.usage(name, self.store.usage(name))

    def _entry(self, name: str, version: str | None) -> _Entry:
        _check_name(name)
        wanted = _normal_version(version)
        if wanted == "":
            raise _not_found(name, version)
        if wanted is not None:
            hit = self._core.cached(name, wanted)
            if hit is not None:  # immutable: a cached version needs no round trip
                return hit
            stored = self.store.fetch(name, wanted)
        else:
            ref = self.store.latest_ref(name)
            if ref is None:
                raise _not_found(name, None)
            hit = self._core.cached(name, ref[0], ref[1])
            if hit is not None:
                return hit
            stored = self.store.fetch(name, ref[0])
        if stored is None:
            raise _not_found(name, version)
        return self._core.entry(stored)


class AsyncTemplateRegistry:
    """:class:`TemplateRegistry` on an :class:`AsyncSqlTemplateStore`, with awaitable methods.

    ``submit`` may be sync or async; an awaitable result is awaited.
    """

    def __init__(
        self,
        store: AsyncSqlTemplateStore,
        *,
        submit: Callable[[WorkflowRun], Any] | None = None,
        cache_size: int = DEFAULT_CACHE_SIZE,
        max_params_bytes: int = DEFAULT_MAX_PARAMS_BYTES,
        max_pattern_input: int = DEFAULT_MAX_PATTERN_INPUT,
        reject_unknown: bool = True,
    ) -> None:
        self.store = store
        self._core = _Core(
            submit=submit,
            cache_size=cache_size,
            max_params_bytes=max_params_bytes,
            max_pattern_input=max_pattern_input,
            reject_unknown=reject_unknown,
        )

    @classmethod
    def from_env(
        cls, store: AsyncSqlTemplateStore, *, prefix: str = "GENNET_", **overrides: Any
    ) -> AsyncTemplateRegistry:
        """See :meth:`TemplateRegistry.from_env`."""
        return cls(store, **{**_Core.env_options(prefix), **overrides})

    @property
    def compilations(self) -> int:
        """How many parameter schemas this registry compiled (once per version)."""
        return self._core.compilations

    async def create(self, template: Template) -> Template:
        """See :meth:`TemplateRegistry.create`."""
        if not isinstance(template, Template):
            raise TypeError("create() takes a Template; use Template.from_dict for JSON")
        await self.store.insert(template.to_dict(), template.digest)
        return template

    publish = create

    async def get(self, name: str, version: str | None = None) -> Template:
        """See :meth:`TemplateRegistry.get`."""
        return (await self._entry(name, version)).template

    async def versions(self, name: str) -> list[str]:
        """See :meth:`TemplateRegistry.versions`."""
        _check_name(name)
        found = await self.store.versions(name)
        if not found:
            raise _not_found(name, None)
        return found

    async def discover(
        self,
        *,
        tag: str | None = None,
        text: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
        all_versions: bool = False,
    ) -> TemplatePage:
        """See :meth:`TemplateRegistry.discover`."""
        q = DiscoverQuery.build(
            tag=tag, text=text, limit=limit, cursor=cursor, all_versions=all_versions
        )
        items, next_cursor = await self.store.discover(q)
        return TemplatePage(items, next_cursor)

    async def instantiate(
        self,
        name: str,
        params: Mapping[str, Any],
        version: str | None = None,
        *,
        submit: Callable[[WorkflowRun], Any] | None = None,
    ) -> WorkflowRun:
        """See :meth:`TemplateRegistry.instantiate`; ``submit`` may be async."""
        hook = submit if submit is not None else self._core.submit
        run = self._core.build_run(await self._entry(name, version), params)
        await self.store.record_usage(run.template, run.version, run.id, run.created_at)
        if hook is not None:
            result = hook(run)
            if inspect.isawaitable(result):
                await result
        return run

    async def usage(self, name: str) -> TemplateUsage:
        """See :meth:`TemplateRegistry.usage`."""
        _check_name(name)
        return self._core.usage(name, await self.store.usage(name))

    async def _entry(self, name: str, version: str | None) -> _Entry:
        _check_name(name)
        wanted = _normal_version(version)
        if wanted == "":
            raise _not_found(name, version)
        if wanted is not None:
            hit = self._core.cached(name, wanted)
            if hit is not None:
                return hit
            stored = await self.store.fetch(name, wanted)
        else:
            ref = await self.store.latest_ref(name)
            if ref is None:
                raise _not_found(name, None)
            hit = self._core.cached(name, ref[0], ref[1])
            if hit is not None:
                return hit
            stored = await self.store.fetch(name, ref[0])
        if stored is None:
            raise _not_found(name, version)
        return self._core.entry(stored)
