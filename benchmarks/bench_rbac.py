"""rbac: one permission check, ours vs pycasbin on the same role hierarchy and policy.

Suites:

- ``rbac-check-grn``: the predefined GRN roles (viewer < editor < admin, 13 grants). A
  user holding ``editor`` asks for ``interaction:read`` (granted through ``viewer``) and
  for ``audit:read`` (refused). casbin gets the same grants as ``p`` lines (``admin``'s
  ``*:*`` written as a ``keyMatch`` pair) and the same ``g`` lines, user to role included.
- ``rbac-check-large``: 100 roles in chains of depth 5, 100 grants each (10,000 grants,
  the research brief's sizing); the user holds the chain-top role of one chain, asks for
  a grant of the chain's bottom role (allowed) and for one of another chain (refused).
  casbin uses the plain RBAC model (exact matches, ``g(r.sub, p.sub)``).
- ``rbac-middleware``: one GET ``/items/{item_id}`` through a 30-route Starlette app,
  bare and behind ``RBACMiddleware`` with one rule per route (principal in
  ``scope["user"]``); the difference is the per-request cost of route-level rules.
- ``rbac-load-large``: building the enforcer from the 10,000-grant policy (ours:
  ``RBAC(roles=...)`` including cycle checks and compilation; casbin: model + CSV file).

Our checks go through ``is_allowed(user, permission)`` with ``user.roles``: principal
resolution and the per-role-set verdict cache included. Goal: at least 5x cheaper per
check than casbin. ``ours allowed, cold cache`` empties our per-role-set cache before
every call (the first request of a user whose role set was not seen yet). Without
casbin installed only our cases run.
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from benchmarks._asgi import make_scope, request_driver, thirty_route_app
from benchmarks._harness import QUICK, Suite
from gennet_toolkit.rbac import DEFAULT_ROLES, RBAC, Principal, RBACMiddleware, Role

try:
    import casbin
except ImportError:  # the bench extra may not have it yet
    casbin = None

ROLES = 100
DEPTH = 5
GRANTS_PER_ROLE = 100

RBAC_MODEL = """
[request_definition]
r = sub, obj, act

[policy_definition]
p = sub, obj, act

[role_definition]
g = _, _

[policy_effect]
e = some(where (p.eft == allow))

[matchers]
m = g(r.sub, p.sub) && keyMatch(r.obj, p.obj) && keyMatch(r.act, p.act)
"""

EXACT_MODEL = RBAC_MODEL.replace(
    "keyMatch(r.obj, p.obj) && keyMatch(r.act, p.act)", "r.obj == p.obj && r.act == p.act"
)


def _casbin(tmp: Path, name: str, model: str, roles: list[Role], user_role: str) -> Any:
    """An enforcer whose policy lists exactly ``roles``' grants and inheritance."""
    lines = []
    for role in roles:
        for perm in sorted(role.permissions):
            lines.append(f"p, {role.name}, {perm.resource}, {perm.action}")
        for parent in role.inherits:
            lines.append(f"g, {role.name}, {parent}")
    lines.append(f"g, alice, {user_role}")
    (tmp / f"{name}.conf").write_text(model)
    (tmp / f"{name}.csv").write_text("\n".join(lines) + "\n")
    return casbin.Enforcer(str(tmp / f"{name}.conf"), str(tmp / f"{name}.csv"))


def large_roles() -> list[Role]:
    """100 roles in chains of DEPTH (role i inherits i-1 inside its chain), 100 grants each."""
    roles = []
    for i in range(ROLES):
        inherits = [f"role{i - 1}"] if i % DEPTH else []
        perms = [f"res{i}:act{j}" for j in range(GRANTS_PER_ROLE)]
        roles.append(Role(f"role{i}", perms, inherits=inherits))
    return roles


def check_suite(
    name: str,
    description: str,
    *,
    rbac: RBAC,
    enforcer: Any,
    user_role: str,
    cases: dict[str, str],
) -> Suite:
    suite = Suite(name, description=description)
    user = SimpleNamespace(id="alice", roles=[user_role])
    for label, perm in cases.items():
        expected = label == "allowed"
        assert rbac.is_allowed(user, perm) is expected, (name, perm)
        suite.add(f"ours {label}", lambda perm=perm: rbac.is_allowed(user, perm))
        if enforcer is not None:
            obj, act = perm.split(":")
            assert enforcer.enforce("alice", obj, act) is expected, (name, perm)
            suite.add(
                f"casbin {label}", lambda obj=obj, act=act: enforcer.enforce("alice", obj, act)
            )
            suite.compare(f"ours {label}", f"casbin {label}")
    cold_perm = cases["allowed"]

    def cold() -> bool:
        # First check for this role set: union of compiled roles + decision, no cache.
        rbac._effective.clear()
        return rbac.is_allowed(user, cold_perm)

    suite.add("ours allowed, cold cache", cold)
    if enforcer is not None:
        suite.compare("ours allowed, cold cache", "casbin allowed")
    if enforcer is None:
        suite.note("casbin is not installed: pip install casbin")
    return suite


async def _status(app: Any, scope: dict[str, Any]) -> int:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(dict(scope), receive, send)
    return int(sent[0]["status"])


def middleware_suite(rbac: RBAC) -> Suite:
    """A 30-route app, bare and behind RBACMiddleware with one rule per route."""
    app = thirty_route_app()
    rules: dict[str, Any] = {f"GET /r{i}/{{x}}": "network:read" for i in range(28)}
    rules["GET /health"] = None
    rules["GET /items/{item_id}"] = "interaction:read"
    guarded = RBACMiddleware(app, rbac=rbac, rules=rules)
    scope = make_scope("/items/42")
    scope["user"] = Principal(id="alice", roles=["editor"])
    assert asyncio.run(_status(guarded, scope)) == 200
    assert asyncio.run(_status(guarded, make_scope("/items/42"))) == 401
    suite = Suite(
        "rbac-middleware",
        description="One GET /items/{item_id} through a 30-route Starlette app; "
        "RBACMiddleware holds one rule per route.",
        baseline="bare app",
    )
    suite.add("bare app", request_driver(app, scope))
    suite.add("RBACMiddleware", request_driver(guarded, scope))
    suite.compare("RBACMiddleware", "bare app")
    return suite


def main() -> None:
    """Run the three suites."""
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        grn = RBAC()
        grn_enforcer = (
            _casbin(tmp, "grn", RBAC_MODEL, list(DEFAULT_ROLES), "editor") if casbin else None
        )
        check_suite(
            "rbac-check-grn",
            "One check on the predefined GRN roles (user holds `editor`, which inherits "
            "`viewer`): `interaction:read` (allowed, inherited) and `audit:read` (refused).",
            rbac=grn,
            enforcer=grn_enforcer,
            user_role="editor",
            cases={"allowed": "interaction:read", "refused": "audit:read"},
        ).run()

        middleware_suite(grn).run()

        roles = large_roles()
        top = f"role{DEPTH * 3 - 1}"  # the top of the third chain (role10..role14)
        large = RBAC(roles=roles)
        large_enforcer = _casbin(tmp, "large", EXACT_MODEL, roles, top) if casbin else None
        suite = check_suite(
            "rbac-check-large",
            f"One check with {ROLES} roles in chains of depth {DEPTH}, {GRANTS_PER_ROLE} "
            f"grants each ({ROLES * GRANTS_PER_ROLE:,} grants); the user holds the top of "
            "one chain and asks for a grant of its bottom role (allowed) or of another "
            "chain (refused).",
            rbac=large,
            enforcer=large_enforcer,
            user_role=top,
            cases={"allowed": f"res{DEPTH * 2}:act{GRANTS_PER_ROLE - 1}", "refused": "res50:act3"},
        )
        if QUICK:
            suite.rounds = 3
        suite.run()

        load = Suite(
            "rbac-load-large",
            description=f"Build the checker from {ROLES * GRANTS_PER_ROLE:,} grants and "
            f"{ROLES} roles (inheritance resolved, cycles checked).",
            rounds=5,
            number=1,
        )
        load.add("ours", lambda: RBAC(roles=roles))
        if casbin:
            load.add("casbin", lambda: _casbin(tmp, "load", EXACT_MODEL, roles, top))
            load.compare("ours", "casbin")
        load.run()


if __name__ == "__main__":
    main()
