"""Role-based access control: ``resource:action`` permissions, roles, deny by default.

:class:`Permission` strings such as ``network:read`` take ``*`` as a whole-segment
wildcard (``network:*``, ``*:read``). A :class:`Role` grants permissions, inherits other
roles and may deny permissions (deny overrides allow). :class:`RBAC` resolves inheritance
once (cycles are configuration errors) and answers :meth:`RBAC.is_allowed` from compiled
sets; :meth:`RBAC.explain` says why. :func:`require_permission` guards Starlette/FastAPI
endpoints (401/403 problem+json) and plain sync/async functions;
:class:`RBACMiddleware` maps ``METHOD /route/{template}`` to permissions before the app.
:data:`VIEWER`, :data:`EDITOR` and :data:`ADMIN` are predefined for the GRN domain;
policies also load from a dict, a JSON file or ``GENNET_RBAC_POLICY``.
"""

from __future__ import annotations

from gennet_toolkit.exceptions import ConfigurationError, Forbidden, Unauthorized
from gennet_toolkit.rbac._decorator import require_permission
from gennet_toolkit.rbac._middleware import RBACMiddleware
from gennet_toolkit.rbac._permission import WILDCARD, Permission
from gennet_toolkit.rbac._policy import RBAC, Decision
from gennet_toolkit.rbac._principal import Principal, principal_from_scope
from gennet_toolkit.rbac._roles import (
    ADMIN,
    DEFAULT_ROLES,
    EDITOR,
    VIEWER,
    Condition,
    Grant,
    Role,
    owns,
)

__all__ = [
    "ADMIN",
    "DEFAULT_ROLES",
    "EDITOR",
    "RBAC",
    "RBACMiddleware",
    "VIEWER",
    "WILDCARD",
    "Condition",
    "ConfigurationError",
    "Decision",
    "Forbidden",
    "Grant",
    "Permission",
    "Principal",
    "Role",
    "Unauthorized",
    "owns",
    "principal_from_scope",
    "require_permission",
]
