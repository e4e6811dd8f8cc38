"""Roles, conditional grants and the predefined roles of the GRN domain."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from gennet_toolkit.exceptions import ConfigurationError
from gennet_toolkit.rbac._permission import Permission

__all__ = ["ADMIN", "DEFAULT_ROLES", "EDITOR", "VIEWER", "Condition", "Grant", "Role", "owns"]

#: ``condition(principal, resource) -> bool``: a per-instance check (ownership, sharing).
Condition = Callable[[Any, Any], bool]

_MAX_NAME = 128


def _role_name(value: object, what: str) -> str:
    if isinstance(value, Role):
        return value.name
    if not isinstance(value, str) or not value or value != value.strip() or len(value) > _MAX_NAME:
        raise ConfigurationError(
            f"{what} must be a non-empty role name without surrounding spaces "
            f"(at most {_MAX_NAME} characters), got {value!r}"
        )
    return value


class Grant:
    """A permission granted only when ``when(principal, resource)`` is true.

        Role("author", [Grant("network:write", when=owns("owner_id"))])

    ``name`` labels the condition in :meth:`RBAC.explain` and in policy files. The
    condition runs only for checks that no unconditional grant settles; an exception
    it raises propagates (the check does not pass).
    """

    __slots__ = ("name", "permission", "when")

    def __init__(self, permission: str | Permission, *, when: Condition, name: str = "") -> None:
        if not callable(when):
            raise ConfigurationError("Grant(when=...) must be callable(principal, resource)")
        self.permission = Permission.parse(permission)
        self.when = when
        self.name = name or getattr(when, "__name__", "condition")

    def __repr__(self) -> str:
        return f"Grant({str(self.permission)!r}, when={self.name})"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Grant):
            return (self.permission, self.when) == (other.permission, other.when)
        return NotImplemented

    def __hash__(self) -> int:
        return hash((self.permission, id(self.when)))


class Role:
    """A named set of permissions, optionally inheriting other roles' and denying some.

        Role("curator", ["network:write", "gene:*"], inherits=("viewer",), deny=("audit:*",))

    ``permissions`` are permission strings, :class:`Permission` or :class:`Grant`
    objects; ``inherits`` names (or gives) roles whose permissions and denials this role
    takes over; ``deny`` lists permissions refused to anyone holding the role, whatever
    else they hold (deny overrides allow). Roles are compared by value.
    """

    __slots__ = ("deny", "grants", "inherits", "name", "permissions")

    def __init__(
        self,
        name: str,
        permissions: Iterable[str | Permission | Grant] = (),
        *,
        inherits: Iterable[str | Role] = (),
        deny: Iterable[str | Permission] = (),
    ) -> None:
        if isinstance(permissions, str) or isinstance(deny, str) or isinstance(inherits, str):
            raise ConfigurationError(
                f"role {name!r}: permissions, inherits and deny are lists, not a single string"
            )
        self.name = _role_name(name, "a role name")
        perms: list[Permission] = []
        grants: list[Grant] = []
        for item in permissions:
            if isinstance(item, Grant):
                grants.append(item)
            else:
                perms.append(Permission.parse(item))
        self.permissions: frozenset[Permission] = frozenset(perms)
        self.grants: tuple[Grant, ...] = tuple(dict.fromkeys(grants))
        self.inherits: tuple[str, ...] = tuple(
            dict.fromkeys(_role_name(r, f"role {name!r}: inherited role") for r in inherits)
        )
        self.deny: frozenset[Permission] = frozenset(Permission.parse(p) for p in deny)

    def __repr__(self) -> str:
        perms = sorted(str(p) for p in self.permissions) + [repr(g) for g in self.grants]
        extra = f", inherits={self.inherits!r}" if self.inherits else ""
        if self.deny:
            extra += f", deny={sorted(str(p) for p in self.deny)!r}"
        return f"Role({self.name!r}, {perms!r}{extra})"

    def _key(self) -> tuple[Any, ...]:
        return (self.name, self.permissions, frozenset(self.grants), self.inherits, self.deny)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Role):
            return self._key() == other._key()
        return NotImplemented

    def __hash__(self) -> int:
        return hash((self.name, self.permissions, self.inherits, self.deny))


def owns(field: str = "owner_id", *, principal_field: str = "id") -> Condition:
    """A condition: ``resource.<field>`` (or ``resource[field]``) equals the principal's id.

    ``Grant("network:delete", when=owns("owner_id"))``. A missing resource, a missing
    field or a principal without ``principal_field`` never matches.
    """
    missing = object()

    def _get(obj: Any, name: str) -> Any:
        if isinstance(obj, Mapping):
            return obj.get(name, missing)
        return getattr(obj, name, missing)

    def owner(principal: Any, resource: Any) -> bool:
        if resource is None or principal is None:
            return False
        mine = _get(principal, principal_field)
        theirs = _get(resource, field)
        return mine is not missing and mine is not None and mine == theirs

    owner.__name__ = f"owns({field})"
    return owner


_READ = ("network:read", "gene:read", "interaction:read", "template:read")

#: Read networks, genes, interactions and workflow templates.
VIEWER = Role("viewer", _READ)
#: Viewer, plus create/update/delete of networks, genes and interactions, writing
#: templates and instantiating them. Not the audit trail, API keys or roles.
EDITOR = Role(
    "editor",
    [
        "network:write",
        "network:delete",
        "gene:write",
        "gene:delete",
        "interaction:write",
        "interaction:delete",
        "template:write",
        "template:instantiate",
    ],
    inherits=("viewer",),
)
#: Everything (``*:*``), including ``audit:read``, ``apikey:manage`` and ``role:manage``.
ADMIN = Role("admin", ["*:*"], inherits=("editor",))
#: The predefined roles, the default of :class:`RBAC`.
DEFAULT_ROLES: tuple[Role, ...] = (VIEWER, EDITOR, ADMIN)
