"""rbac properties: is_allowed equals a naive reference evaluator; grants are monotonic."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gennet_toolkit.exceptions import ConfigurationError
from gennet_toolkit.rbac import RBAC, Role

RESOURCES = ["network", "gene", "audit", "*"]
ACTIONS = ["read", "write", "*"]
UNIVERSE = [f"{r}:{a}" for r in RESOURCES for a in ACTIONS]

perm = st.sampled_from(UNIVERSE)


@st.composite
def role_graphs(draw: Any, *, with_deny: bool, acyclic: bool = True) -> dict[str, Any]:
    """{name: (permissions, inherits, deny)}; acyclic graphs inherit only earlier roles."""
    n = draw(st.integers(1, 7))
    names = [f"r{i}" for i in range(n)]
    graph: dict[str, Any] = {}
    for i, name in enumerate(names):
        parents_pool = names[:i] if acyclic else names
        parents = draw(st.lists(st.sampled_from(parents_pool), max_size=3)) if parents_pool else []
        deny = draw(st.lists(perm, max_size=2)) if with_deny else []
        graph[name] = (draw(st.lists(perm, max_size=4)), parents, deny)
    return graph


def _build(graph: dict[str, Any]) -> RBAC:
    return RBAC(roles=[Role(n, p, inherits=i, deny=d) for n, (p, i, d) in graph.items()])


# ------------------------------------------------------------ the reference, by the book


def _seg_covers(grant: str, required: str) -> bool:
    return grant in ("*", required)


def _ref_implies(grant: str, required: str) -> bool:
    (gr, ga), (rr, ra) = grant.split(":"), required.split(":")
    return _seg_covers(gr, rr) and _seg_covers(ga, ra)


def _ref_overlaps(deny: str, required: str) -> bool:
    """Some concrete permission (no wildcards) is covered by both."""
    concrete = [f"{r}:{a}" for r in [*RESOURCES[:-1], "zzz"] for a in [*ACTIONS[:-1], "zzz"]]
    return any(_ref_implies(deny, c) and _ref_implies(required, c) for c in concrete)


def _closure(graph: dict[str, Any], roles: list[str]) -> set[str]:
    seen: set[str] = set()
    todo = [r for r in roles if r in graph]
    while todo:
        r = todo.pop()
        if r not in seen:
            seen.add(r)
            todo.extend(graph[r][1])
    return seen


def _reference(graph: dict[str, Any], roles: list[str], required: str) -> bool:
    closure = _closure(graph, roles)
    grants = [p for r in closure for p in graph[r][0]]
    denies = [d for r in closure for d in graph[r][2]]
    if any(_ref_overlaps(d, required) for d in denies):
        return False
    return any(_ref_implies(g, required) for g in grants)


def _has_cycle(graph: dict[str, Any]) -> bool:
    def reach(start: str, node: str, seen: set[str]) -> bool:
        for parent in graph[node][1]:
            if parent == start:
                return True
            if parent not in seen:
                seen.add(parent)
                if reach(start, parent, seen):
                    return True
        return False

    return any(reach(n, n, set()) for n in graph)


# ------------------------------------------------------------ properties


@settings(max_examples=300, deadline=None)
@given(
    graph=role_graphs(with_deny=True),
    data=st.data(),
)
def test_is_allowed_matches_the_reference_evaluator(graph: dict[str, Any], data: Any) -> None:
    rbac = _build(graph)
    roles = data.draw(st.lists(st.sampled_from([*graph, "ghost"]), max_size=3))
    for required in UNIVERSE:
        expected = _reference(graph, roles, required)
        assert rbac.is_allowed(roles, required) is expected, (roles, required)
        assert rbac.is_allowed(roles, required) is expected  # cached verdict agrees
        assert rbac.explain(roles, required).allowed is expected


@settings(max_examples=200, deadline=None)
@given(graph=role_graphs(with_deny=False), data=st.data())
def test_adding_a_role_never_removes_a_permission_without_deny_rules(
    graph: dict[str, Any], data: Any
) -> None:
    rbac = _build(graph)
    roles = data.draw(st.lists(st.sampled_from(list(graph)), max_size=3))
    extra = data.draw(st.sampled_from(list(graph)))
    for required in UNIVERSE:
        if rbac.is_allowed(roles, required):
            assert rbac.is_allowed([*roles, extra], required)
            assert rbac.is_allowed([extra, *roles], required)


@settings(max_examples=200, deadline=None)
@given(graph=role_graphs(with_deny=False), data=st.data())
def test_adding_a_grant_to_a_role_never_removes_a_permission(
    graph: dict[str, Any], data: Any
) -> None:
    name = data.draw(st.sampled_from(list(graph)))
    added = data.draw(perm)
    bigger = dict(graph)
    perms, inherits, deny = graph[name]
    bigger[name] = ([*perms, added], inherits, deny)
    before, after = _build(graph), _build(bigger)
    roles = data.draw(st.lists(st.sampled_from(list(graph)), min_size=1, max_size=3))
    for required in UNIVERSE:
        if before.is_allowed(roles, required):
            assert after.is_allowed(roles, required)


@settings(max_examples=200, deadline=None)
@given(graph=role_graphs(with_deny=False, acyclic=False))
def test_construction_fails_exactly_when_inheritance_has_a_cycle(graph: dict[str, Any]) -> None:
    if _has_cycle(graph):
        with pytest.raises(ConfigurationError, match="cycle"):
            _build(graph)
    else:
        _build(graph)
