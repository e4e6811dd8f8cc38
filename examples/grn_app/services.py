"""The service's collaborators, built once at startup and closed at shutdown."""

from __future__ import annotations

import logging
from typing import Any

from pydantic import TypeAdapter, ValidationError
from sqlalchemy import select
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

from gennet_toolkit.advanced_cache import TTLCache
from gennet_toolkit.api_keys import ApiKeyManager, MemoryKeyStore
from gennet_toolkit.batch_operations import BatchProcessor
from gennet_toolkit.cache import Cache
from gennet_toolkit.circuit_breaker import CircuitBreaker
from gennet_toolkit.event_sourcing import AsyncEventStore
from gennet_toolkit.exceptions import ValidationFailed, field_errors_from_pydantic
from gennet_toolkit.http_client import ResilientClient, RetryPolicy
from gennet_toolkit.metrics import BusinessMetrics
from gennet_toolkit.pagination import CursorPaginator
from gennet_toolkit.rbac import RBAC, Principal
from gennet_toolkit.search import Field, FilterSet, create_search_index
from gennet_toolkit.validation import GeneSymbol
from gennet_toolkit.websocket_manager import ConnectionManager
from gennet_toolkit.workflow_templates import (
    AsyncSqlTemplateStore,
    AsyncTemplateRegistry,
    WorkflowRun,
)

from .models import Base, Gene, Interaction, Network
from .seed import seed
from .settings import Settings
from .tasks import KNOCKOUT, make_queue

__all__ = ["Services"]

log = logging.getLogger("grn")
_SYMBOL = TypeAdapter(GeneSymbol)


class Services:
    """Engine, caches, queue, registries: everything a handler needs, on ``app.state.grn``."""

    def __init__(self, settings: Settings, registry: Any = None) -> None:
        self.settings = settings
        self.engine = create_async_engine(settings.database_url)
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)
        self.cache = Cache(settings.backend_url, namespace="grn", default_ttl="1m")
        self.live = ConnectionManager(settings.backend_url, heartbeat_interval=20)
        self.keys = ApiKeyManager(MemoryKeyStore())
        self.rbac = RBAC()  # viewer < editor < admin
        self.roles: dict[str, tuple[str, ...]] = {}
        self.audit = AsyncEventStore(self.engine, key=settings.audit_key)
        self.batch = BatchProcessor(
            self.sessions,
            Interaction,
            max_items=1000,
            fields=["network_id", "regulator", "target", "sign", "weight", "evidence"],
            return_keys=True,
        )
        self.queue, self.simulate = make_queue(settings.task_queue_url)
        self.run_tasks: dict[str, str] = {}
        self.registry = AsyncTemplateRegistry(
            AsyncSqlTemplateStore(self.engine), submit=self._submit
        )
        secret = settings.secret
        self.paginators = {
            "networks": CursorPaginator(order_by=[Network.id], secret=secret, name="networks"),
            "genes": CursorPaginator(order_by=[Gene.symbol], secret=secret, name="genes"),
            "interactions": CursorPaginator(
                order_by=[Interaction.id], secret=secret, name="interactions", page_size=20
            ),
        }
        self.filters = {
            "networks": FilterSet(
                Network,
                {
                    "organism": ("eq", "icontains"),
                    "name": Field(ops=("eq", "startswith"), sortable=True),
                },
            ),
            "genes": FilterSet(
                Gene,
                {
                    "symbol": Field(ops=("eq", "in", "startswith"), sortable=True),
                    "description": "icontains",
                },
                searchable=["symbol", "description"],
            ),
            "interactions": FilterSet(
                Interaction,
                {
                    "regulator": ("eq", "in"),
                    "target": ("eq", "in"),
                    "sign": "eq",
                    "weight": Field(ops=("gte", "lte", "between"), sortable=True),
                    "evidence": "icontains",
                },
            ),
        }
        grn = BusinessMetrics(registry, namespace="grn")
        self.metrics_edges = grn.counter(
            "interactions_created_total", "Interactions written.", ["via"]
        )
        self.metrics_loads = grn.counter("network_summary_loads_total", "Cache misses on networks.")
        # Optional upstream annotation lookup: off unless GRN_UPSTREAM_URL is set.
        self.annotations: TTLCache[str, dict[str, Any]] = TTLCache(maxsize=1024, ttl=300)
        self.breaker = CircuitBreaker("grn-upstream", fail_max=3, reset_timeout=30)
        self.upstream: ResilientClient | None = None
        if settings.upstream_url:
            self.upstream = ResilientClient(
                settings.upstream_url,
                timeout=2.0,
                retry=RetryPolicy(attempts=2),
                breaker=self.breaker,
            )

    def principal(self, scope: Any) -> Principal | None:
        """An API key's owner, with the roles the service gave that owner (RBAC)."""
        user = scope.get("user")
        if user is None or not getattr(user, "is_authenticated", False):
            return None
        return Principal(id=user.owner, roles=self.roles.get(user.owner, ()))

    async def issue_key(self, owner: str, role: str) -> str:
        """A new API key for ``owner`` acting as ``role``; the plaintext is returned once."""
        self.roles[owner] = (role,)
        created = await self.keys.create(owner, ["grn:*"], name=f"{role} key")
        return created.key

    async def _submit(self, run: WorkflowRun) -> None:
        """Hand a run to the queue with the network it reads (the worker needs no database)."""
        name = run.params["network"]
        async with self.sessions() as session:
            nid = await session.scalar(select(Network.id).where(Network.name == name))
            genes = list(await session.scalars(select(Gene.symbol).where(Gene.network_id == nid)))
            rows = await session.execute(
                select(Interaction.regulator, Interaction.target, Interaction.sign).where(
                    Interaction.network_id == nid
                )
            )
            edges = [tuple(r) for r in rows]
        result = await self.simulate.aenqueue(run.to_dict(), genes, edges)
        self.run_tasks[run.id] = result.id

    async def lookup(self, symbol: str) -> dict[str, Any]:
        """Annotation of a gene: the upstream's, cached; ``{"source": None}`` when offline."""
        try:
            symbol = _SYMBOL.validate_python(symbol)
        except ValidationError as exc:
            raise ValidationFailed(
                errors=field_errors_from_pydantic(exc.errors(), location="path")
            ) from None
        if self.upstream is None:
            return {"symbol": symbol, "source": None, "annotation": None}
        if (hit := self.annotations.get(symbol)) is not None:
            return hit
        response = await self.upstream.get(f"/genes/{symbol}")
        found = {
            "symbol": symbol,
            "source": self.settings.upstream_url,
            "annotation": response.json() if response.status_code == 200 else None,
        }
        self.annotations[symbol] = found
        return found

    async def start(self) -> None:
        """Create tables, seed the data set, publish the workflow, issue the demo keys."""
        async with self.engine.begin() as conn:
            await conn.run_sync(Base.metadata.create_all)
            await conn.run_sync(lambda c: create_search_index(c, Gene, ["symbol", "description"]))
        await self.audit.create_tables()
        await self.batch.acreate_tables()
        await self.registry.store.create_tables()
        await self.registry.create(KNOCKOUT)
        if self.settings.seed:
            await seed(self.engine)
        await self.live.start()
        admin = await self.issue_key("demo-admin", "admin")
        # Printed on purpose: a demo needs a key to try the API. Never do this in production.
        print(f"GRN demo admin API key: {admin}", flush=True)
        self.admin_key = admin

    async def stop(self) -> None:
        """Close sockets, clients, the queue and the engine."""
        await self.live.aclose()
        if self.upstream is not None:
            await self.upstream.aclose()
        self.queue.close()
        await self.cache.aclose()
        await self.engine.dispose()
