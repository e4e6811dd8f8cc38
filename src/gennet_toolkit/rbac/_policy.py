"""The RBAC engine: roles compiled once into permission sets, checked in a few dict lookups."""

from __future__ import annotations

import json
import os
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final

from gennet_toolkit._env import env_str
from gennet_toolkit.exceptions import ConfigurationError, Forbidden, Unauthorized
from gennet_toolkit.rbac._permission import WILDCARD, Permission
from gennet_toolkit.rbac._principal import resolve_principal
from gennet_toolkit.rbac._roles import DEFAULT_ROLES, Condition, Grant, Role

__all__ = ["RBAC", "Decision"]

_CACHE_SIZE: Final = 4096
_POLICY_KEYS: Final = frozenset({"include_defaults", "roles"})
_ROLE_KEYS: Final = frozenset({"permissions", "inherits", "deny", "grants", "description"})
_GRANT_KEYS: Final = frozenset({"permission", "when"})


class _Verdict:
    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name


_ALLOW: Final = _Verdict("allow")
_DENY: Final = _Verdict("deny")


@dataclass(frozen=True)
class Decision:
    """Why :meth:`RBAC.explain` decided as it did. For logs and debugging, never for clients.

    ``granted_by`` and ``denied_by`` are ``(rule, role)`` pairs: the grant or deny rule
    that decided and the role that declares it (which may be inherited).
    """

    allowed: bool
    permission: str
    reason: str
    roles: tuple[str, ...] = ()
    unknown_roles: tuple[str, ...] = ()
    granted_by: tuple[str, str] | None = None
    denied_by: tuple[str, str] | None = None
    condition: str | None = None

    def __str__(self) -> str:
        verdict = "allowed" if self.allowed else "denied"
        return f"{self.permission}: {verdict} ({self.reason})"


@dataclass
class _Compiled:
    """One role after inheritance: every rule with the role that declares it."""

    allow: dict[str, str] = field(default_factory=dict)  # grant text -> declaring role
    deny: dict[str, str] = field(default_factory=dict)
    grants: list[tuple[Grant, str]] = field(default_factory=list)


class _Effective:
    """The union of a principal's roles, with a per-permission verdict cache."""

    __slots__ = ("allow", "deny", "deny_act", "deny_res", "grants", "verdicts")

    def __init__(self, compiled: Iterable[_Compiled]) -> None:
        allow: set[str] = set()
        deny: set[str] = set()
        grants: dict[Grant, None] = {}
        for c in compiled:
            allow.update(c.allow)
            deny.update(c.deny)
            grants.update((g, None) for g, _ in c.grants)
        self.allow = frozenset(allow)
        self.deny = frozenset(deny)
        self.deny_res = frozenset(d.split(":", 1)[0] for d in deny)
        self.deny_act = frozenset(d.split(":", 1)[1] for d in deny)
        self.grants = tuple(grants)
        # permission text -> _ALLOW, _DENY or the conditional grants that could allow it
        self.verdicts: dict[str, _Verdict | tuple[Grant, ...]] = {}

    def denies(self, req: Permission) -> bool:
        if not self.deny:
            return False
        r, a = req.resource, req.action
        if r == WILDCARD and a == WILDCARD:
            return True
        if r == WILDCARD:
            return a in self.deny_act or WILDCARD in self.deny_act
        if a == WILDCARD:
            return r in self.deny_res or WILDCARD in self.deny_res
        return any(c in self.deny for c in req.candidates())

    def decide(self, req: Permission) -> _Verdict | tuple[Grant, ...]:
        if self.denies(req):
            return _DENY
        if any(c in self.allow for c in req.candidates()):
            return _ALLOW
        conditional = tuple(g for g in self.grants if g.permission.implies(req))
        return conditional or _DENY


class RBAC:
    """Role-based access control: deny by default, explicit deny overrides any allow.

        rbac = RBAC(roles=[*DEFAULT_ROLES, Role("curator", ["gene:*"], inherits=["viewer"])])
        rbac.is_allowed(["curator"], "gene:write")          # True
        rbac.is_allowed(user, "network:delete", resource=net)  # user.roles, conditions
        rbac.explain(user, "audit:read")                     # Decision, for logs only

    Inheritance is resolved once here: an unknown inherited role or a cycle raises
    :class:`~gennet_toolkit.exceptions.ConfigurationError`; depth is unbounded (no silent
    cut-off). A principal is a role name, a list of names, an object with ``.roles``
    (and optionally ``.scopes``, which further restrict it, as an API key's scopes do), or
    an ASGI scope (its ``state.principal``, ``state.user`` or ``user``). Unknown role
    names grant nothing. Checks are cached per role combination and permission.
    """

    def __init__(self, roles: Iterable[Role] = DEFAULT_ROLES) -> None:
        if isinstance(roles, Role):
            roles = (roles,)
        table: dict[str, Role] = {}
        for role in roles:
            if not isinstance(role, Role):
                raise ConfigurationError(f"roles must be Role objects, got {type(role).__name__}")
            if role.name in table:
                raise ConfigurationError(f"role {role.name!r} is defined twice")
            table[role.name] = role
        self._roles = table
        self._compiled: dict[str, _Compiled] = {}
        for name in table:
            self._compile(name, ())
        self._effective: dict[Hashable, _Effective] = {}
        self._scoped: dict[tuple[Hashable, str], bool] = {}

    # ------------------------------------------------------------------ construction

    def _compile(self, name: str, path: tuple[str, ...]) -> _Compiled:
        done = self._compiled.get(name)
        if done is not None:
            return done
        if name in path:
            cycle = " -> ".join((*path[path.index(name) :], name))
            raise ConfigurationError(f"role inheritance cycle: {cycle}")
        role = self._roles[name]
        out = _Compiled()
        for p in role.permissions:
            out.allow[str(p)] = name
        for p in role.deny:
            out.deny[str(p)] = name
        out.grants.extend((g, name) for g in role.grants)
        for parent in role.inherits:
            if parent not in self._roles:
                raise ConfigurationError(f"role {name!r} inherits unknown role {parent!r}")
            inherited = self._compile(parent, (*path, name))
            for text, origin in inherited.allow.items():
                out.allow.setdefault(text, origin)
            for text, origin in inherited.deny.items():
                out.deny.setdefault(text, origin)
            known = {g for g, _ in out.grants}
            out.grants.extend((g, o) for g, o in inherited.grants if g not in known)
        self._compiled[name] = out
        return out

    @classmethod
    def from_dict(
        cls, policy: Mapping[str, Any], *, conditions: Mapping[str, Condition] | None = None
    ) -> RBAC:
        """Build from a policy mapping (the shape of a JSON policy file).

            {"include_defaults": true,
             "roles": {"curator": {"permissions": ["gene:*"], "inherits": ["viewer"],
                                   "deny": ["audit:*"],
                                   "grants": [{"permission": "network:delete", "when": "owner"}]}}}

        ``when`` names a callable in ``conditions``. With ``include_defaults`` the
        predefined roles are added first; a role of the same name in ``roles`` replaces
        one. Unknown keys are errors, so a typo never silently grants or drops a rule.
        """
        if not isinstance(policy, Mapping):
            raise ConfigurationError("an RBAC policy must be a JSON object")
        unknown = set(policy) - _POLICY_KEYS
        if unknown:
            raise ConfigurationError(f"unknown RBAC policy keys: {sorted(map(str, unknown))}")
        include = policy.get("include_defaults", False)
        if not isinstance(include, bool):
            raise ConfigurationError("RBAC policy 'include_defaults' must be true or false")
        spec = policy.get("roles", {})
        if not isinstance(spec, Mapping):
            raise ConfigurationError("RBAC policy 'roles' must map role names to objects")
        table: dict[str, Role] = {r.name: r for r in DEFAULT_ROLES} if include else {}
        for name, body in spec.items():
            table[str(name)] = _role_from_dict(name, body, conditions or {})
        return cls(roles=table.values())

    @classmethod
    def from_json(
        cls, path: str | os.PathLike[str], *, conditions: Mapping[str, Condition] | None = None
    ) -> RBAC:
        """Build from a JSON policy file (see :meth:`from_dict` for its shape)."""
        try:
            with open(path, encoding="utf-8") as fh:
                policy = json.load(fh)
        except OSError as exc:
            raise ConfigurationError(f"cannot read RBAC policy file {os.fspath(path)!r}") from exc
        except ValueError as exc:
            raise ConfigurationError(
                f"RBAC policy file {os.fspath(path)!r} is not valid JSON"
            ) from exc
        return cls.from_dict(policy, conditions=conditions)

    @classmethod
    def from_env(
        cls, prefix: str = "GENNET_", *, conditions: Mapping[str, Condition] | None = None
    ) -> RBAC:
        """``{prefix}RBAC_POLICY``: path of a JSON policy file; unset: the predefined roles."""
        path = env_str(f"{prefix}RBAC_POLICY")
        return cls() if path is None else cls.from_json(path, conditions=conditions)

    # ------------------------------------------------------------------ queries

    @property
    def roles(self) -> Mapping[str, Role]:
        """The roles by name (read-only)."""
        return MappingProxyType(self._roles)

    def _effective_for(self, key: Hashable, names: Iterable[Any]) -> _Effective:
        compiled = []
        for item in names:
            name = item.name if isinstance(item, Role) else item
            c = self._compiled.get(name) if isinstance(name, str) else None
            if c is not None:
                compiled.append(c)
        eff = _Effective(compiled)
        if len(self._effective) >= _CACHE_SIZE:
            self._effective.clear()
        self._effective[key] = eff
        return eff

    def is_allowed(
        self, principal: Any, permission: str | Permission, resource: Any = None
    ) -> bool:
        """True if ``principal`` holds ``permission`` (on ``resource``, for conditional grants).

        An unauthenticated principal (``None``, or ``is_authenticated`` false) is never
        allowed. A malformed ``permission`` raises ``ConfigurationError`` (a bug in the
        caller, not a denial). Requiring ``network:*`` asks for *every* action on networks.
        """
        subject, key, names, scopes = resolve_principal(principal)
        if key is None:
            return False
        try:
            eff = self._effective.get(key)
        except TypeError:  # unhashable items in a roles list
            key = tuple(n for n in names if isinstance(n, str))
            eff = self._effective.get(key)
        if eff is None:
            eff = self._effective_for(key, names)
        text = permission if type(permission) is str else str(permission)
        verdict = eff.verdicts.get(text)
        if verdict is None:
            verdict = eff.decide(Permission.parse(permission))
            if len(eff.verdicts) >= _CACHE_SIZE:
                eff.verdicts.clear()
            eff.verdicts[text] = verdict
        if verdict is _DENY:
            return False
        if verdict is not _ALLOW and not any(
            g.when(subject, resource)
            for g in verdict  # type: ignore[union-attr]
        ):
            return False
        return scopes is None or self._scope_allows(scopes, text)

    def _scope_allows(self, scopes: tuple[Any, ...], text: str) -> bool:
        ck = (scopes, text)
        hit = self._scoped.get(ck)
        if hit is None:
            hit = any(_implies(s, text) for s in scopes)
            if len(self._scoped) >= _CACHE_SIZE:
                self._scoped.clear()
            self._scoped[ck] = hit
        return hit

    def check(self, principal: Any, permission: str | Permission, resource: Any = None) -> None:
        """Return if allowed; else raise ``Unauthorized`` (no principal) or ``Forbidden``.

        Both carry the generic message of their class, never the permission's name.
        """
        if self.is_allowed(principal, permission, resource):
            return
        if resolve_principal(principal)[1] is None:
            raise Unauthorized()
        raise Forbidden()

    def permissions_of(self, principal: Any) -> frozenset[Permission]:
        """The unconditional grants of ``principal``'s roles (denials not subtracted)."""
        _, key, names, _ = resolve_principal(principal)
        if key is None:
            return frozenset()
        eff = self._effective_for(tuple(n for n in names if isinstance(n, str | Role)), names)
        return frozenset(Permission(t) for t in eff.allow)

    def explain(
        self, principal: Any, permission: str | Permission, resource: Any = None
    ) -> Decision:
        """The decision and the rule and role behind it. Log it; never send it to clients."""
        req = Permission.parse(permission)
        text = str(req)
        subject, key, names, scopes = resolve_principal(principal)
        if key is None:
            return Decision(False, text, "no authenticated principal (deny by default)")
        known: list[str] = []
        unknown: list[str] = []
        for item in names:
            name = item.name if isinstance(item, Role) else item
            if isinstance(name, str) and name in self._compiled:
                known.append(name)
            else:
                unknown.append(name if isinstance(name, str) else repr(name))

        def decision(allowed: bool, reason: str, **found: Any) -> Decision:
            return Decision(allowed, text, reason, tuple(known), tuple(unknown), **found)

        compiled = [self._compiled[n] for n in known]
        for c in compiled:
            for rule, origin in c.deny.items():
                if Permission(rule).overlaps(req):
                    return decision(
                        False,
                        reason=f"denied by {rule!r} of role {origin!r} (deny overrides allow)",
                        denied_by=(rule, origin),
                    )
        granted: tuple[str, str] | None = None
        condition: str | None = None
        for c in compiled:
            for rule, origin in c.allow.items():
                if Permission(rule).implies(req):
                    granted = (rule, origin)
                    break
            if granted:
                break
        if granted is None:
            for c in compiled:
                for grant, origin in c.grants:
                    if grant.permission.implies(req) and grant.when(subject, resource):
                        granted, condition = (str(grant.permission), origin), grant.name
                        break
                if granted:
                    break
        if granted is None:
            why = "no role grants it (deny by default)"
            if not known:
                why = "the principal has no known role (deny by default)"
            return decision(False, why)
        if scopes is not None and not any(_implies(s, text) for s in scopes):
            return decision(
                False,
                reason="granted by a role but outside the principal's scopes",
                granted_by=granted,
                condition=condition,
            )
        how = f" when {condition}" if condition else ""
        return decision(
            True,
            reason=f"granted by {granted[0]!r} of role {granted[1]!r}{how}",
            granted_by=granted,
            condition=condition,
        )

    def __repr__(self) -> str:
        return f"RBAC(roles={sorted(self._roles)!r})"


def _implies(scope: Any, text: str) -> bool:
    # Scopes come from credentials (an API key row), not from our config: a malformed one
    # grants nothing rather than turning a request into a 500. A lone "*" is how API key
    # scopes spell "everything".
    try:
        return Permission.parse("*:*" if scope == "*" else scope).implies(text)
    except ConfigurationError:
        return False


def _str_list(value: Any, what: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigurationError(f"{what} must be a list of strings")
    return value


def _role_from_dict(name: Any, body: Any, conditions: Mapping[str, Condition]) -> Role:
    if not isinstance(body, Mapping):
        raise ConfigurationError(f"RBAC policy role {name!r} must be an object")
    unknown = set(body) - _ROLE_KEYS
    if unknown:
        raise ConfigurationError(f"RBAC policy role {name!r}: unknown keys {sorted(unknown)}")
    perms: list[str | Grant] = list(
        _str_list(body.get("permissions", []), f"role {name!r} 'permissions'")
    )
    grants = body.get("grants", [])
    if not isinstance(grants, list):
        raise ConfigurationError(f"role {name!r} 'grants' must be a list of objects")
    for spec in grants:
        if not isinstance(spec, Mapping) or set(spec) != _GRANT_KEYS:
            raise ConfigurationError(
                f"role {name!r}: each grant is {{'permission': ..., 'when': <condition name>}}"
            )
        when = spec["when"]
        if not isinstance(when, str) or when not in conditions:
            raise ConfigurationError(
                f"role {name!r}: unknown condition {when!r}; pass it in conditions={{...}}"
            )
        perms.append(Grant(spec["permission"], when=conditions[when], name=when))
    return Role(
        name,
        perms,
        inherits=_str_list(body.get("inherits", []), f"role {name!r} 'inherits'"),
        deny=_str_list(body.get("deny", []), f"role {name!r} 'deny'"),
    )
