"""What a principal is: role names, a user object, a claims mapping or an ASGI scope."""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping
from typing import Any

from gennet_toolkit.rbac._roles import Role

__all__ = ["Principal", "principal_from_scope", "resolve_principal"]


class Principal:
    """An authenticated principal: an id, role names and optional scopes that narrow them.

        # an API key may do what its scopes say *and* its owner's current roles allow
        Principal(id=key.owner, roles=roles_of(key.owner), scopes=key.scopes)

    ``scopes=None`` means no narrowing; ``scopes=()`` allows nothing.
    """

    __slots__ = ("id", "roles", "scopes")

    def __init__(
        self, id: Any = None, roles: Iterable[str] = (), scopes: Iterable[str] | None = None
    ) -> None:
        self.id = id
        self.roles: tuple[str, ...] = (roles,) if isinstance(roles, str) else tuple(roles)
        self.scopes: tuple[str, ...] | None = None if scopes is None else _scopes(scopes)

    @property
    def is_authenticated(self) -> bool:
        """Always true: build no Principal for anonymous callers."""
        return True

    def __repr__(self) -> str:
        return f"Principal(id={self.id!r}, roles={self.roles!r}, scopes={self.scopes!r})"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Principal):
            return (self.id, self.roles, self.scopes) == (other.id, other.roles, other.scopes)
        return NotImplemented

    def __hash__(self) -> int:
        return hash((self.roles, self.scopes))


# (subject passed to conditions, cache key or None if unauthenticated, role items, scopes)
Resolved = tuple[Any, Hashable | None, tuple[Any, ...], tuple[Any, ...] | None]

_NOBODY: Resolved = (None, None, (), None)


def principal_from_scope(scope: Mapping[str, Any]) -> Any:
    """The principal of an ASGI scope: ``state["principal"]``, ``state["user"]``, ``scope["user"]``.

    ``request.state.principal`` is where an authentication layer (an API key middleware)
    puts its result; ``scope["user"]`` is Starlette's ``AuthenticationMiddleware``'s.
    ``None`` when there is none.
    """
    state = scope.get("state")
    if isinstance(state, Mapping):
        for name in ("principal", "user"):
            found = state.get(name)
            if found is not None:
                return found
    return scope.get("user")


def _scopes(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, str):  # OAuth style: "network:read gene:read"
        return tuple(value.split())
    try:
        return tuple(value)
    except TypeError:
        return ()  # unusable scopes restrict to nothing


def _from_roles(subject: Any, roles: Any, scopes: Any) -> Resolved:
    if roles is None:
        names: tuple[Any, ...] = ()
    elif isinstance(roles, str):
        names = (roles,)
    else:
        try:
            names = tuple(roles)
        except TypeError:
            names = ()
    return subject, names, names, _scopes(scopes)


def resolve_principal(principal: Any) -> Resolved:
    """Split ``principal`` into (subject, cache key, role items, scopes); key ``None``: nobody."""
    kind = type(principal)
    if kind is list:
        key = tuple(principal)
        return principal, key, key, None
    if kind is tuple:
        return principal, principal, principal, None
    if kind is str:
        return principal, principal, (principal,), None
    if principal is None:
        return _NOBODY
    if isinstance(principal, set | frozenset):
        names = tuple(principal)
        return principal, frozenset(principal), names, None
    if isinstance(principal, str):
        return principal, str(principal), (str(principal),), None
    if isinstance(principal, Mapping):
        if principal.get("type") in ("http", "websocket"):
            found = principal_from_scope(principal)
            if found is None or (isinstance(found, Mapping) and "type" in found):
                return _NOBODY  # no principal, or a scope nested in a scope
            return resolve_principal(found)
        # Claims, e.g. a decoded token: {"sub": ..., "roles": [...], "scopes": "..."}
        return _from_roles(principal, principal.get("roles"), principal.get("scopes"))
    if getattr(principal, "is_authenticated", True) is False:
        return _NOBODY
    if isinstance(principal, Role):
        return principal, (principal.name,), (principal.name,), None
    return _from_roles(
        principal, getattr(principal, "roles", None), getattr(principal, "scopes", None)
    )
