"""The /v1 endpoints: thin handlers, the toolkit does validation, paging, caching, auth."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from gennet_toolkit.exceptions import BadRequest, Conflict, NotFound
from gennet_toolkit.validation import validate_body

from .models import (
    Gene,
    GeneIn,
    Interaction,
    InteractionIn,
    Network,
    NetworkIn,
    RunIn,
    gene_dict,
    interaction_dict,
    network_dict,
)

if TYPE_CHECKING:
    from .services import Services

__all__ = ["routes"]


def _svc(request: Request | WebSocket) -> Services:
    return request.app.state.grn  # type: ignore[no-any-return]


def _network_id(request: Request | WebSocket) -> int:
    return int(request.path_params["network_id"])


async def _page(
    request: Request, kind: str, stmt: Any, to_dict: Any, scope: str = ""
) -> JSONResponse:
    """Filter (search), then keyset-paginate; the cursor is bound to the filters and sort."""
    svc = _svc(request)
    filters = svc.filters[kind]
    result = filters.apply(stmt, request.query_params, dialect=svc.engine)
    paginator = svc.paginators[kind]
    cursor, size = paginator.query_args(request.query_params)
    async with svc.sessions() as session:
        page = await paginator.apaginate(
            session,
            result.select,
            cursor,
            size,
            fingerprint=f"{scope}|{result.fingerprint}",
            order_by=result.order_by,
        )
    body = {"items": [to_dict(x) for x in page.items], "page_info": page.page_info}
    return JSONResponse(body, headers={"Link": page.link_header(str(request.url))})


async def _written(request: Request, network_id: int, event: dict[str, Any]) -> None:
    """After a write: drop cached reads of the network and tell its live listeners."""
    svc = _svc(request)
    await svc.cache.invalidate_tags(f"network:{network_id}", "networks")
    await svc.live.broadcast(f"network:{network_id}", event)


async def _network_summary(request: Request, network_id: int) -> dict[str, Any]:
    svc = _svc(request)

    async def load() -> dict[str, Any]:
        async with svc.sessions() as session:
            network = await session.get(Network, network_id)
            if network is None:
                raise NotFound(f"Network {network_id} does not exist.")
            genes = await session.scalar(
                select(func.count()).select_from(Gene).where(Gene.network_id == network_id)
            )
            edges = await session.scalar(
                select(func.count())
                .select_from(Interaction)
                .where(Interaction.network_id == network_id)
            )
        svc.metrics_loads.inc()
        return {**network_dict(network), "gene_count": genes, "interaction_count": edges}

    return await svc.cache.get_or_set(  # type: ignore[no-any-return]
        f"network:{network_id}", load, ttl=60, tags=[f"network:{network_id}"]
    )


async def list_networks(request: Request) -> JSONResponse:
    """List networks; filter by organism/name, sort, cursor-paginate."""
    return await _page(request, "networks", select(Network), network_dict)


@validate_body(NetworkIn)
async def create_network(request: Request, body: NetworkIn) -> JSONResponse:
    """Create a network."""
    svc = _svc(request)
    async with svc.sessions() as session:
        network = Network(**body.model_dump())
        session.add(network)
        try:
            await session.commit()
        except IntegrityError:
            raise Conflict("A network with this name exists.") from None
        data = network_dict(network)
    await svc.cache.invalidate_tags("networks")
    return JSONResponse(data, status_code=201)


async def get_network(request: Request) -> JSONResponse:
    """One network with gene and interaction counts (cached until the next write)."""
    return JSONResponse(await _network_summary(request, _network_id(request)))


async def list_genes(request: Request) -> JSONResponse:
    """Genes of a network; ``symbol__in=``, ``q=`` full text, ``sort=``."""
    nid = _network_id(request)
    await _network_summary(request, nid)  # 404 for an unknown network
    stmt = select(Gene).where(Gene.network_id == nid)
    return await _page(request, "genes", stmt, gene_dict, f"n{nid}")


@validate_body(GeneIn)
async def create_gene(request: Request, body: GeneIn) -> JSONResponse:
    """Add a gene to a network."""
    nid = _network_id(request)
    await _network_summary(request, nid)
    async with _svc(request).sessions() as session:
        gene = Gene(network_id=nid, **body.model_dump())
        session.add(gene)
        try:
            await session.commit()
        except IntegrityError:
            raise Conflict("The gene is already in this network.") from None
        data = gene_dict(gene)
    await _written(request, nid, {"event": "gene.created", "gene": data})
    return JSONResponse(data, status_code=201)


async def list_interactions(request: Request) -> JSONResponse:
    """Interactions; ``regulator=``, ``target__in=``, ``sign=``, ``weight__gte=``, ``sort=``."""
    nid = _network_id(request)
    await _network_summary(request, nid)
    stmt = select(Interaction).where(Interaction.network_id == nid)
    return await _page(request, "interactions", stmt, interaction_dict, f"n{nid}")


@validate_body(InteractionIn)
async def create_interaction(request: Request, body: InteractionIn) -> JSONResponse:
    """Add one interaction."""
    nid = _network_id(request)
    await _network_summary(request, nid)
    async with _svc(request).sessions() as session:
        edge = Interaction(network_id=nid, **body.model_dump())
        session.add(edge)
        try:
            await session.commit()
        except IntegrityError:
            raise Conflict("This regulator-target pair exists in the network.") from None
        data = interaction_dict(edge)
    await _written(request, nid, {"event": "interaction.created", "interaction": data})
    _svc(request).metrics_edges.labels("single").inc()
    return JSONResponse(data, status_code=201)


async def batch_interactions(request: Request) -> JSONResponse:
    """Create many interactions; ``?atomic=false`` keeps the good ones (207 per-item)."""
    svc = _svc(request)
    nid = _network_id(request)
    await _network_summary(request, nid)
    # The processor checks each item against the table (types, CHECK constraints for
    # sign and weight, uniqueness); the network comes from the path, never the body.
    items = [
        {**item, "network_id": nid} if isinstance(item, dict) else item
        for item in await svc.batch.read_items(request)
    ]
    result = await svc.batch.acreate_many(
        items,
        atomic=request.query_params.get("atomic", "true") != "false",
        idempotency_key=request.headers.get("Idempotency-Key"),
    )
    if result.created:
        svc.metrics_edges.labels("batch").inc(len(result.created))
        await _written(request, nid, {"event": "interaction.batch", "created": len(result.created)})
    return JSONResponse(result.to_dict(), status_code=result.status_code)


async def lookup_gene(request: Request) -> JSONResponse:
    """Annotation of a gene symbol from the optional upstream (off unless configured)."""
    return JSONResponse(await _svc(request).lookup(request.path_params["symbol"]))


async def list_templates(request: Request) -> JSONResponse:
    """Published workflow templates; ``tag=``, ``text=``."""
    qp = request.query_params
    page = await _svc(request).registry.discover(
        tag=qp.get("tag"), text=qp.get("text"), cursor=qp.get("cursor")
    )
    items = [{"name": t.name, "version": t.version, "tags": list(t.tags)} for t in page.items]
    return JSONResponse({"items": items, "next_cursor": page.next_cursor})


@validate_body(RunIn)
async def start_run(request: Request, body: RunIn) -> JSONResponse:
    """Instantiate a template (parameters validated) and queue its run; 202 with the task id."""
    svc = _svc(request)
    run = await svc.registry.instantiate(request.path_params["name"], body.params, body.version)
    task_id = svc.run_tasks[run.id]
    return JSONResponse({"run": run.to_dict(), "task_id": task_id}, status_code=202)


async def get_task(request: Request) -> JSONResponse:
    """Status (and result, once done) of a queued workflow run."""
    svc = _svc(request)
    task_id = request.path_params["task_id"]
    if task_id not in svc.run_tasks.values():
        raise NotFound("No such task.")
    result = svc.queue.result(task_id, svc.simulate.name)
    body: dict[str, Any] = {"task_id": task_id, "status": str(result.status)}
    if result.ready():
        try:
            body["result"] = await result.aget(timeout=0)
        except Exception:  # the task failed: report it without the traceback
            body["error"] = "The run failed."
    return JSONResponse(body)


async def list_audit(request: Request) -> JSONResponse:
    """The audit trail (admin): who changed what, newest last."""
    svc = _svc(request)
    try:
        since = int(request.query_params.get("from", "1"))
    except ValueError:
        raise BadRequest("from must be an integer position.") from None
    events = await svc.audit.read_all(from_position=max(since, 1), limit=200)
    return JSONResponse(
        {
            "items": [
                {"position": e.position, "type": e.type, "actor": e.actor, "data": e.data}
                for e in events
            ]
        }
    )


async def live(websocket: WebSocket) -> None:
    """Live updates of one network: every write is pushed as JSON."""
    svc = _svc(websocket)
    room = f"network:{_network_id(websocket)}"
    async with svc.live.session(websocket, rooms=[room]):
        async for _ in svc.live.iter_json(websocket):
            pass  # listeners only receive


async def create_key(request: Request) -> JSONResponse:
    """Issue an API key for ``{"owner": ..., "role": "viewer"|"editor"|"admin"}`` (admin)."""
    body = await request.json()
    if not isinstance(body, dict) or body.get("role") not in ("viewer", "editor", "admin"):
        raise BadRequest('Send {"owner": ..., "role": "viewer" | "editor" | "admin"}.')
    key = await _svc(request).issue_key(str(body.get("owner", "")), body["role"])
    return JSONResponse({"key": key, "role": body["role"]}, status_code=201)


routes = [
    Route("/keys", create_key, methods=["POST"]),
    Route("/networks", list_networks, methods=["GET"]),
    Route("/networks", create_network, methods=["POST"]),
    Route("/networks/{network_id:int}", get_network, methods=["GET"]),
    Route("/networks/{network_id:int}/genes", list_genes, methods=["GET"]),
    Route("/networks/{network_id:int}/genes", create_gene, methods=["POST"]),
    Route("/networks/{network_id:int}/interactions", list_interactions, methods=["GET"]),
    Route("/networks/{network_id:int}/interactions", create_interaction, methods=["POST"]),
    Route("/networks/{network_id:int}/interactions/batch", batch_interactions, methods=["POST"]),
    Route("/genes/{symbol}/annotation", lookup_gene, methods=["GET"]),
    Route("/workflows", list_templates, methods=["GET"]),
    Route("/workflows/{name}/runs", start_run, methods=["POST"]),
    Route("/tasks/{task_id}", get_task, methods=["GET"]),
    Route("/audit", list_audit, methods=["GET"]),
    WebSocketRoute("/networks/{network_id:int}/live", live),
]
