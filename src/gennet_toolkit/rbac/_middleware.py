"""``RBACMiddleware``: permissions per (method, route template), checked before the app runs."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

from gennet_toolkit._problem import send_problem
from gennet_toolkit._routes import route_path
from gennet_toolkit.exceptions import ConfigurationError, Forbidden, Unauthorized
from gennet_toolkit.rbac._permission import Permission
from gennet_toolkit.rbac._policy import RBAC
from gennet_toolkit.rbac._principal import principal_from_scope, resolve_principal
from gennet_toolkit.types import ASGIApp, Receive, Scope, Send

__all__ = ["RBACMiddleware"]

_PARAM = re.compile(r"{([a-zA-Z_][a-zA-Z0-9_]*)(?::([a-zA-Z_]+))?}")
# Starlette's convertors, so a template matches exactly the paths its route does.
_CONVERTORS = {
    "str": "[^/]+",
    "path": ".*",
    "int": "[0-9]+",
    "float": r"[0-9]+(?:\.[0-9]+)?",
    "uuid": "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",
}
_METHOD = re.compile(r"[A-Z]+|\*")


class _Rule:
    __slots__ = ("methods", "pattern", "permissions", "template")

    def __init__(self, key: str, value: str | Sequence[str] | None) -> None:
        if not isinstance(key, str):
            raise ConfigurationError("RBACMiddleware rules are keyed by 'METHOD /template'")
        parts = key.split()
        if len(parts) == 1:
            parts = ["*", parts[0]]
        if len(parts) != 2 or not parts[1].startswith("/"):
            raise ConfigurationError(
                f"RBACMiddleware rule {key!r}: expected 'METHOD /template' or '/template'"
            )
        methods = parts[0].upper().split(",")
        if not all(_METHOD.fullmatch(m) for m in methods):
            raise ConfigurationError(f"RBACMiddleware rule {key!r}: bad method list")
        self.methods = None if "*" in methods else frozenset(methods)
        self.template = parts[1]
        regex, pos = "", 0
        for match in _PARAM.finditer(self.template):
            conv = match.group(2) or "str"
            if conv not in _CONVERTORS:
                raise ConfigurationError(
                    f"RBACMiddleware rule {key!r}: unknown convertor {conv!r} "
                    f"(one of {sorted(_CONVERTORS)})"
                )
            # Literal text is escaped: a '.' in a template never becomes a wildcard.
            regex += re.escape(self.template[pos : match.start()]) + f"(?:{_CONVERTORS[conv]})"
            pos = match.end()
        rest = self.template[pos:]
        if "{" in rest or "}" in rest:
            raise ConfigurationError(f"RBACMiddleware rule {key!r}: malformed parameter")
        self.pattern = re.compile(regex + re.escape(rest)) if regex else None
        if value is None:
            perms: tuple[str, ...] = ()
        elif isinstance(value, str | Permission):
            perms = (str(Permission.parse(value)),)
        else:
            perms = tuple(str(Permission.parse(p)) for p in value)
        self.permissions = perms

    def applies(self, method: str, path: str) -> bool:
        methods = self.methods
        if (
            methods is not None
            and method not in methods
            and (method != "HEAD" or "GET" not in methods)
        ):
            return False
        if self.pattern is None:
            return path == self.template
        return self.pattern.fullmatch(path) is not None


class RBACMiddleware:
    """Require permissions per route before the app runs: deny routes nobody listed.

        RBACMiddleware(app, rbac=rbac, rules={
            "GET /v1/networks": "network:read",
            "GET,HEAD /v1/networks/{network_id:int}": "network:read",
            "POST /v1/networks": "network:write",
            "/v1/audit/{rest:path}": "audit:read",      # any method
            "GET /health": None,                          # public
        })

    Templates use Starlette's syntax and convertors and match the path below
    ``root_path`` exactly (no prefix matching; literal text is escaped). ``HEAD`` follows
    ``GET`` rules. When several rules match a request, it needs the permissions of all
    of them. A request no rule matches gets ``default`` (``"deny"``: 401/403, so a route
    added without a rule is closed, not open). The principal is ``principal(scope)``
    (default: ``state.principal``, ``state.user`` or ``user`` of the scope): none gives
    401, not allowed gives 403, both ``application/problem+json`` without the
    permission's name. Only HTTP is checked; other scope types pass through.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        rbac: RBAC,
        rules: Mapping[str, str | Sequence[str] | None],
        default: Literal["deny", "allow"] = "deny",
        principal: Callable[[Scope], Any] | None = None,
    ) -> None:
        if not isinstance(rbac, RBAC):
            raise ConfigurationError("RBACMiddleware(rbac=...) must be an RBAC")
        if default not in ("deny", "allow"):
            raise ConfigurationError("RBACMiddleware(default=...) must be 'deny' or 'allow'")
        if principal is not None and not callable(principal):
            raise ConfigurationError("RBACMiddleware(principal=...) must be callable(scope)")
        self.app = app
        self.rbac = rbac
        self.default_allows = default == "allow"
        self.principal = principal or principal_from_scope
        compiled = [_Rule(k, v) for k, v in rules.items()]
        # Literal templates are found by dict lookup; the rest are scanned, but only
        # those whose first segment can match (literal first segment or a parameter).
        self._exact: dict[str, list[_Rule]] = {}
        self._by_head: dict[str, list[_Rule]] = {}
        self._generic: list[_Rule] = []
        for rule in compiled:
            if rule.pattern is None:
                self._exact.setdefault(rule.template, []).append(rule)
                continue
            head = rule.template.split("/", 2)[1]
            if "{" in head:
                self._generic.append(rule)
            else:
                self._by_head.setdefault(head, []).append(rule)

    def _required(self, method: str, path: str) -> tuple[str, ...] | None:
        """The permissions a request needs; ``None`` if no rule matches."""
        head = path.split("/", 2)[1] if path.count("/") else ""
        matched: list[_Rule] = []
        for group in (self._exact.get(path, ()), self._by_head.get(head, ()), self._generic):
            matched.extend(r for r in group if r.applies(method, path))
        if not matched:
            return None
        if len(matched) == 1:
            return matched[0].permissions
        return tuple(dict.fromkeys(p for r in matched for p in r.permissions))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = route_path(scope["path"], scope.get("root_path", ""))
        required = self._required(scope["method"], path)
        if required is None:
            if self.default_allows:
                await self.app(scope, receive, send)
                return
            # Nobody listed this route: closed to everyone, admins included.
            who = self.principal(scope)
            exc = Unauthorized() if resolve_principal(who)[1] is None else Forbidden()
            await send_problem(exc, scope, send)
            return
        if not required:
            await self.app(scope, receive, send)
            return
        who = self.principal(scope)
        if all(self.rbac.is_allowed(who, p) for p in required):
            await self.app(scope, receive, send)
            return
        exc = Unauthorized() if resolve_principal(who)[1] is None else Forbidden()
        await send_problem(exc, scope, send)
