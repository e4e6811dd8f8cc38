"""Background work: workflow runs execute on the task queue (in-process by default)."""

from __future__ import annotations

from typing import Any

from gennet_toolkit.task_queue import TaskQueue
from gennet_toolkit.workflow_templates import Step, Template

__all__ = ["KNOCKOUT", "make_queue", "simulate"]

#: The published workflow: load a network, simulate knockouts, report the steady state.
KNOCKOUT = Template(
    "grn-knockout-sim",
    "1.0.0",
    steps=(
        Step("load", uses="grn.load", inputs={"network": "${params.network}"}),
        Step(
            "simulate",
            uses="grn.simulate",
            inputs={"knockouts": "${params.knockouts}", "steps": "${params.steps}"},
            depends_on=("load",),
        ),
        Step(
            "report",
            uses="grn.report",
            inputs={"network": "${params.network}"},
            depends_on=("simulate",),
        ),
    ),
    parameters={
        "type": "object",
        "additionalProperties": False,
        "required": ["network"],
        "properties": {
            "network": {"type": "string", "pattern": "^[A-Za-z0-9_.-]{1,128}$"},
            "knockouts": {
                "type": "array",
                "items": {"type": "string", "maxLength": 64},
                "maxItems": 50,
                "default": [],
            },
            "steps": {"type": "integer", "minimum": 1, "maximum": 100, "default": 20},
        },
    },
    tags=("grn", "simulation"),
    description="Boolean knockout simulation of a regulatory network",
)


def simulate(
    run: dict[str, Any], genes: list[str], edges: list[tuple[str, str, str]]
) -> dict[str, Any]:
    """Synchronous Boolean update: a gene is on when an activator is on and no repressor is.

    Genes without regulators keep their state (all start on); knocked-out genes stay off.
    """
    params = run["params"]
    off = set(params.get("knockouts", []))
    state = {g: g not in off for g in genes}
    regulators: dict[str, list[tuple[str, str]]] = {}
    for reg, target, sign in edges:
        regulators.setdefault(target, []).append((reg, sign))
    steps = 0
    for _ in range(int(params.get("steps", 20))):
        steps += 1
        new = {}
        for gene, on in state.items():
            regs = regulators.get(gene)
            if gene in off:
                new[gene] = False
            elif not regs:
                new[gene] = on
            else:
                acts = [state.get(r, False) for r, s in regs if s == "activation"]
                reps = [state.get(r, False) for r, s in regs if s == "repression"]
                new[gene] = (not acts or any(acts)) and not any(reps)
        if new == state:
            break
        state = new
    return {
        "template": run["template"],
        "version": run["version"],
        "network": params["network"],
        "knockouts": sorted(off),
        "steps": steps,
        "on": sorted(g for g, on in state.items() if on),
    }


def make_queue(url: str) -> tuple[TaskQueue, Any]:
    """The service's queue (``inprocess://`` by default; RQ or Celery by URL) and its task."""
    queue = TaskQueue.from_url(url)
    return queue, queue.task(simulate)
