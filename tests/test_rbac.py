"""rbac: permission grammar and wildcards, inheritance, deny rules, principals, explain.

The decorator on functions and endpoints is in test_rbac_http.py; property tests against
a naive reference evaluator in test_rbac_properties.py.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

import gennet_toolkit.rbac as rbac_module
from gennet_toolkit.exceptions import ConfigurationError, Forbidden, Unauthorized
from gennet_toolkit.rbac import (
    ADMIN,
    DEFAULT_ROLES,
    EDITOR,
    RBAC,
    VIEWER,
    Grant,
    Permission,
    Principal,
    Role,
    owns,
)


def test_public_names_are_exactly_all() -> None:
    public = {n for n in dir(rbac_module) if not n.startswith("_")}
    assert public - {"annotations"} == set(rbac_module.__all__)


# ---------------------------------------------------------------- permission grammar


@pytest.mark.parametrize(
    "text",
    ["network:read", "network:*", "*:read", "*:*", "network.export:read", "api-key:manage_all"],
)
def test_valid_permissions_parse_and_round_trip(text: str) -> None:
    assert str(Permission(text)) == text
    assert Permission(Permission(text)) == Permission(text)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "network",
        "*",
        ":read",
        "network:",
        "network:read:extra",
        "net*:read",
        "network:re*",
        "**:read",
        "Network:read",
        "network:READ",
        " network:read",
        "network:read ",
        "network :read",
        "network..x:read",
        ".network:read",
        "9network:read",
        "network/read:x",
        "net.*:read",
        "a" * 65 + ":read",
    ],
)
def test_malformed_permissions_are_configuration_errors(text: str) -> None:
    with pytest.raises(ConfigurationError):
        Permission(text)


def test_non_string_permission_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError):
        Permission(42)  # type: ignore[arg-type]


# (grant, required, granted?) — the wildcard semantics, one row per rule.
WILDCARD_TABLE = [
    ("network:read", "network:read", True),
    ("network:read", "network:write", False),
    ("network:read", "gene:read", False),
    ("network:*", "network:read", True),
    ("network:*", "network:delete", True),
    ("network:*", "network:*", True),
    ("network:*", "gene:read", False),
    ("*:read", "network:read", True),
    ("*:read", "audit:read", True),
    ("*:read", "network:write", False),
    ("*:read", "*:read", True),
    ("*:*", "network:read", True),
    ("*:*", "*:read", True),
    ("*:*", "network:*", True),
    ("*:*", "*:*", True),
    # a requirement with a wildcard asks for *every* action (or resource)
    ("network:read", "network:*", False),
    ("network:read", "*:read", False),
    ("network:*", "*:*", False),
    ("*:read", "*:*", False),
    ("network:*", "*:read", False),
    # no prefix matching, no hierarchy through dots
    ("network:*", "network.export:read", False),
    ("network.export:*", "network:read", False),
    ("gene:read", "genes:read", False),
]


@pytest.mark.parametrize(("grant", "required", "expected"), WILDCARD_TABLE)
def test_wildcard_semantics(grant: str, required: str, expected: bool) -> None:
    assert Permission(grant).implies(required) is expected
    rbac = RBAC(roles=[Role("r", [grant])])
    assert rbac.is_allowed(["r"], required) is expected
    assert rbac.explain(["r"], required).allowed is expected


# (deny rule, required, blocked?)
DENY_TABLE = [
    ("network:delete", "network:delete", True),
    ("network:delete", "network:read", False),
    ("network:delete", "network:*", True),
    ("network:delete", "*:delete", True),
    ("network:delete", "*:*", True),
    ("network:*", "network:read", True),
    ("network:*", "gene:read", False),
    ("*:delete", "gene:delete", True),
    ("*:delete", "gene:read", False),
    ("*:delete", "gene:*", True),
    ("*:*", "gene:read", True),
]


@pytest.mark.parametrize(("deny", "required", "blocked"), DENY_TABLE)
def test_explicit_deny_overrides_every_allow(deny: str, required: str, blocked: bool) -> None:
    rbac = RBAC(roles=[Role("root", ["*:*"]), Role("limited", deny=[deny])])
    assert rbac.is_allowed(["root"], required)
    assert rbac.is_allowed(["root", "limited"], required) is not blocked
    assert rbac.is_allowed(["limited", "root"], required) is not blocked
    decision = rbac.explain(["root", "limited"], required)
    assert decision.allowed is not blocked
    if blocked:
        assert decision.denied_by == (deny, "limited")


def test_deny_is_inherited_and_beats_the_child_s_own_grant() -> None:
    rbac = RBAC(
        roles=[
            Role("no-audit", deny=["audit:*"]),
            Role("auditor-ish", ["audit:read"], inherits=["no-audit"]),
        ]
    )
    assert not rbac.is_allowed("auditor-ish", "audit:read")
    assert "deny overrides allow" in rbac.explain("auditor-ish", "audit:read").reason


# ---------------------------------------------------------------- deny by default


def test_everything_is_denied_by_default() -> None:
    rbac = RBAC(roles=[])
    assert not rbac.is_allowed(["admin"], "network:read")
    assert not RBAC().is_allowed([], "network:read")
    assert not RBAC().is_allowed(None, "network:read")
    assert not RBAC().is_allowed(["no-such-role"], "network:read")
    assert not RBAC().is_allowed(SimpleNamespace(), "network:read")


def test_malformed_permission_in_a_check_is_an_error_not_a_denial() -> None:
    with pytest.raises(ConfigurationError):
        RBAC().is_allowed(["admin"], "network*:read")
    # still an error the second time (errors are never cached as decisions)
    with pytest.raises(ConfigurationError):
        RBAC().is_allowed(["admin"], "network*:read")


def test_unknown_role_names_grant_nothing_and_are_explained() -> None:
    decision = RBAC().explain(["viewr"], "network:read")
    assert not decision.allowed
    assert decision.unknown_roles == ("viewr",)
    assert "no known role" in decision.reason


# ---------------------------------------------------------------- predefined roles


@pytest.mark.parametrize(
    ("role", "permission", "expected"),
    [
        ("viewer", "network:read", True),
        ("viewer", "interaction:read", True),
        ("viewer", "template:read", True),
        ("viewer", "network:write", False),
        ("viewer", "audit:read", False),
        ("editor", "network:read", True),
        ("editor", "gene:write", True),
        ("editor", "interaction:delete", True),
        ("editor", "template:instantiate", True),
        ("editor", "audit:read", False),
        ("editor", "apikey:manage", False),
        ("admin", "audit:read", True),
        ("admin", "apikey:manage", True),
        ("admin", "*:*", True),
    ],
)
def test_predefined_grn_roles(role: str, permission: str, expected: bool) -> None:
    assert RBAC().is_allowed([role], permission) is expected


def test_predefined_roles_are_the_default() -> None:
    assert RBAC().roles == {r.name: r for r in (VIEWER, EDITOR, ADMIN)}
    assert tuple(DEFAULT_ROLES) == (VIEWER, EDITOR, ADMIN)


# ---------------------------------------------------------------- inheritance


def test_diamond_inheritance_unions_both_branches() -> None:
    rbac = RBAC(
        roles=[
            Role("base", ["network:read"]),
            Role("left", ["gene:write"], inherits=["base"]),
            Role("right", ["interaction:write"], inherits=["base"]),
            Role("top", inherits=["left", "right"]),
        ]
    )
    for perm in ("network:read", "gene:write", "interaction:write"):
        assert rbac.is_allowed("top", perm)
    assert rbac.permissions_of("top") == {
        Permission("network:read"),
        Permission("gene:write"),
        Permission("interaction:write"),
    }
    assert rbac.explain("top", "network:read").granted_by == ("network:read", "base")


def test_deep_inheritance_has_no_silent_depth_limit() -> None:
    roles = [Role("r0", ["network:read"])]
    roles += [Role(f"r{i}", inherits=[f"r{i - 1}"]) for i in range(1, 60)]
    rbac = RBAC(roles=reversed(roles))  # definition order does not matter
    assert rbac.is_allowed("r59", "network:read")
    assert rbac.explain("r59", "network:read").granted_by == ("network:read", "r0")


@pytest.mark.parametrize(
    "roles",
    [
        [Role("a", inherits=["a"])],
        [Role("a", inherits=["b"]), Role("b", inherits=["a"])],
        [
            Role("a", inherits=["b"]),
            Role("b", inherits=["c"]),
            Role("c", inherits=["d"]),
            Role("d", inherits=["b"]),
        ],
    ],
    ids=["self", "pair", "deep"],
)
def test_inheritance_cycles_are_rejected_at_construction(roles: list[Role]) -> None:
    with pytest.raises(ConfigurationError, match="cycle"):
        RBAC(roles=roles)


def test_inheriting_an_unknown_role_is_rejected() -> None:
    with pytest.raises(ConfigurationError, match="unknown role 'ghost'"):
        RBAC(roles=[Role("a", inherits=["ghost"])])


def test_duplicate_role_names_are_rejected() -> None:
    with pytest.raises(ConfigurationError, match="twice"):
        RBAC(roles=[Role("a"), Role("a", ["network:read"])])


@pytest.mark.parametrize("bad", ["", " admin", "x" * 129, 3])
def test_bad_role_names_are_rejected(bad: Any) -> None:
    with pytest.raises(ConfigurationError):
        Role(bad)


def test_single_strings_where_lists_belong_are_rejected() -> None:
    # "network:read" iterated would be a list of letters
    with pytest.raises(ConfigurationError):
        Role("a", "network:read")
    with pytest.raises(ConfigurationError):
        Role("a", inherits="viewer")


def test_roles_compare_by_value() -> None:
    assert Role("a", ["network:read"]) == Role("a", ["network:read"])
    assert Role("a", ["network:read"]) != Role("a", ["network:write"])
    assert "network:read" in repr(Role("a", ["network:read"]))


# ---------------------------------------------------------------- principals


def test_principal_forms() -> None:
    rbac = RBAC()
    assert rbac.is_allowed("editor", "gene:write")
    assert rbac.is_allowed(["viewer", "editor"], "gene:write")
    assert rbac.is_allowed(("editor",), "gene:write")
    assert rbac.is_allowed({"editor"}, "gene:write")
    assert rbac.is_allowed(frozenset({"editor"}), "gene:write")
    assert rbac.is_allowed(EDITOR, "gene:write")
    assert rbac.is_allowed([EDITOR], "gene:write")
    assert rbac.is_allowed(SimpleNamespace(roles=["editor"]), "gene:write")
    assert rbac.is_allowed(SimpleNamespace(roles="editor"), "gene:write")
    assert rbac.is_allowed({"sub": "u1", "roles": ["editor"]}, "gene:write")
    assert not rbac.is_allowed(SimpleNamespace(roles=None), "gene:read")
    assert not rbac.is_allowed(SimpleNamespace(roles=7), "gene:read")
    assert not rbac.is_allowed([["editor"]], "gene:read")  # unhashable junk grants nothing


def test_unauthenticated_users_are_never_allowed() -> None:
    anon = SimpleNamespace(is_authenticated=False, roles=["admin"])
    assert not RBAC().is_allowed(anon, "network:read")
    assert RBAC().explain(anon, "network:read").reason.startswith("no authenticated principal")


def test_asgi_scope_principal_is_found_in_state_then_user() -> None:
    rbac = RBAC()
    base: dict[str, Any] = {"type": "http", "headers": []}
    assert rbac.is_allowed({**base, "state": {"principal": ["admin"]}}, "audit:read")
    assert rbac.is_allowed({**base, "state": {"user": {"roles": ["admin"]}}}, "audit:read")
    assert rbac.is_allowed({**base, "user": SimpleNamespace(roles=["admin"])}, "audit:read")
    assert not rbac.is_allowed(base, "network:read")
    assert not rbac.is_allowed({**base, "state": {}}, "network:read")
    assert rbac.is_allowed({"type": "websocket", "state": {"principal": "admin"}}, "audit:read")
    assert not rbac.is_allowed({**base, "user": {**base, "roles": ["admin"]}}, "audit:read")


def test_scopes_restrict_a_principal_to_their_intersection_with_its_roles() -> None:
    rbac = RBAC()
    key = SimpleNamespace(roles=["editor"], scopes=["network:read", "gene:*"])
    assert rbac.is_allowed(key, "network:read")
    assert rbac.is_allowed(key, "gene:write")
    assert not rbac.is_allowed(key, "network:write")  # the role has it, the key does not
    assert not rbac.is_allowed(key, "audit:read")  # the key asks for it? the role lacks it
    wide = SimpleNamespace(roles=["viewer"], scopes="*:*")
    assert rbac.is_allowed(wide, "network:read")
    assert not rbac.is_allowed(wide, "network:write")  # scopes never add permissions
    assert "outside the principal's scopes" in rbac.explain(key, "network:write").reason


def test_principal_narrows_owner_roles_by_key_scopes() -> None:
    rbac = RBAC()
    key = Principal(id="alice", roles=["editor"], scopes=frozenset({"network:*", "audit:read"}))
    assert rbac.is_allowed(key, "network:delete")
    assert not rbac.is_allowed(key, "gene:write")  # outside the key's scopes
    assert not rbac.is_allowed(key, "audit:read")  # the owner's roles lack it
    assert rbac.is_allowed(Principal("alice", ["editor"]), "gene:write")  # no narrowing
    assert not rbac.is_allowed(Principal("alice", ["editor"], scopes=()), "gene:read")
    assert rbac.is_allowed(Principal("alice", "admin", scopes=["*"]), "audit:read")  # "*": all
    assert Principal("a", ["x"]) == Principal("a", ("x",))
    assert "roles=('x',)" in repr(Principal("a", ["x"]))
    # An API key principal carries scopes but no roles: it grants nothing by itself.
    api_key_user = SimpleNamespace(owner="alice", scopes=frozenset({"*"}), is_authenticated=True)
    assert not rbac.is_allowed(api_key_user, "network:read")


def test_malformed_scopes_grant_nothing_instead_of_failing() -> None:
    key = SimpleNamespace(roles=["admin"], scopes=["net*:read", "NETWORK:READ", 5])
    assert not RBAC().is_allowed(key, "network:read")
    assert not RBAC().is_allowed(SimpleNamespace(roles=["admin"], scopes=[]), "network:read")
    assert not RBAC().is_allowed(SimpleNamespace(roles=["admin"], scopes=5), "network:read")


# ---------------------------------------------------------------- conditions


class _Net:
    def __init__(self, owner_id: int) -> None:
        self.owner_id = owner_id


def _author_rbac() -> RBAC:
    return RBAC(
        roles=[
            *DEFAULT_ROLES,
            Role("author", [Grant("network:write", when=owns("owner_id"))], inherits=["viewer"]),
        ]
    )


def test_conditional_grant_checks_the_instance() -> None:
    rbac = _author_rbac()
    alice = SimpleNamespace(id=1, roles=["author"])
    assert rbac.is_allowed(alice, "network:write", resource=_Net(1))
    assert not rbac.is_allowed(alice, "network:write", resource=_Net(2))
    assert not rbac.is_allowed(alice, "network:write")  # no resource, no ownership
    assert rbac.is_allowed(alice, "network:write", resource={"owner_id": 1})
    assert not rbac.is_allowed(SimpleNamespace(roles=["author"]), "network:write", _Net(1))
    decision = rbac.explain(alice, "network:write", resource=_Net(1))
    assert decision.allowed
    assert decision.condition == "owns(owner_id)"
    assert not rbac.explain(alice, "network:write", resource=_Net(2)).allowed


def test_condition_does_not_override_a_deny() -> None:
    rbac = RBAC(
        roles=[Role("a", [Grant("network:write", when=lambda p, r: True)], deny=["network:*"])]
    )
    assert not rbac.is_allowed("a", "network:write", resource=object())


def test_unconditional_grant_skips_the_condition() -> None:
    calls: list[Any] = []

    def never(principal: Any, resource: Any) -> bool:
        calls.append(resource)
        return False

    rbac = RBAC(roles=[Role("a", ["network:write", Grant("network:write", when=never)])])
    assert rbac.is_allowed("a", "network:write", resource=1)
    assert calls == []


def test_check_raises_unauthorized_or_forbidden_without_naming_the_permission() -> None:
    rbac = RBAC()
    rbac.check(["viewer"], "network:read")
    with pytest.raises(Unauthorized):
        rbac.check(None, "network:read")
    with pytest.raises(Forbidden) as info:
        rbac.check(["viewer"], "apikey:manage")
    assert "apikey" not in json.dumps(info.value.to_problem())


# ---------------------------------------------------------------- policy loading

POLICY: dict[str, Any] = {
    "include_defaults": True,
    "roles": {
        "curator": {
            "description": "curates genes of any network",
            "permissions": ["gene:*"],
            "inherits": ["viewer"],
            "deny": ["gene:delete"],
            "grants": [{"permission": "network:delete", "when": "owner"}],
        }
    },
}


def _check_policy(rbac: RBAC) -> None:
    me = SimpleNamespace(id=5, roles=["curator"])
    assert rbac.is_allowed(me, "gene:write")
    assert rbac.is_allowed(me, "network:read")
    assert not rbac.is_allowed(me, "gene:delete")
    assert rbac.is_allowed(me, "network:delete", {"owner_id": 5})
    assert not rbac.is_allowed(me, "network:delete", {"owner_id": 6})
    assert rbac.is_allowed(["admin"], "audit:read")


def test_policy_from_dict() -> None:
    _check_policy(RBAC.from_dict(POLICY, conditions={"owner": owns()}))


def test_policy_from_json_file_and_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "policy.json"
    path.write_text(json.dumps(POLICY))
    _check_policy(RBAC.from_json(path, conditions={"owner": owns()}))
    monkeypatch.setenv("APP_RBAC_POLICY", str(path))
    _check_policy(RBAC.from_env("APP_", conditions={"owner": owns()}))
    monkeypatch.delenv("APP_RBAC_POLICY")
    assert RBAC.from_env("APP_").roles == RBAC().roles


def test_policy_without_defaults_has_only_its_roles() -> None:
    rbac = RBAC.from_dict({"roles": {"reader": {"permissions": ["*:read"]}}})
    assert set(rbac.roles) == {"reader"}
    assert not rbac.is_allowed(["admin"], "network:read")


def test_policy_role_replaces_a_default_of_the_same_name() -> None:
    rbac = RBAC.from_dict({"include_defaults": True, "roles": {"viewer": {"permissions": []}}})
    assert not rbac.is_allowed(["viewer"], "network:read")
    assert rbac.is_allowed(["editor"], "network:write")
    assert not rbac.is_allowed(["editor"], "network:read")  # it inherited viewer's grants


@pytest.mark.parametrize(
    "policy",
    [
        [],
        {"role": {}},
        {"include_defaults": "yes"},
        {"roles": []},
        {"roles": {"a": []}},
        {"roles": {"a": {"permisions": ["network:read"]}}},
        {"roles": {"a": {"permissions": "network:read"}}},
        {"roles": {"a": {"permissions": ["network*:read"]}}},
        {"roles": {"a": {"inherits": ["b"]}}},
        {"roles": {"a": {"inherits": ["b"]}, "b": {"inherits": ["a"]}}},
        {"roles": {"a": {"deny": [1]}}},
        {"roles": {"a": {"grants": [{"permission": "network:write", "when": "nope"}]}}},
        {"roles": {"a": {"grants": [{"permission": "network:write"}]}}},
        {"roles": {"a": {"grants": {"permission": "network:write"}}}},
    ],
)
def test_bad_policies_are_configuration_errors(policy: Any) -> None:
    with pytest.raises(ConfigurationError):
        RBAC.from_dict(policy, conditions={"owner": owns()})


def test_unreadable_or_invalid_policy_files_are_configuration_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="cannot read"):
        RBAC.from_json(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{roles: ")
    with pytest.raises(ConfigurationError, match="not valid JSON"):
        RBAC.from_json(bad)


# ---------------------------------------------------------------- caches and misc


def test_decisions_stay_correct_past_the_cache_bound() -> None:
    rbac = RBAC(roles=[Role(f"r{i}", [f"res{i}:read"]) for i in range(50)])
    for rounds in range(2):
        for i in range(50):
            for j in range(0, 50, 7):
                combo = [f"r{i}", f"r{j}"] if rounds else (f"r{j}", f"r{i}")
                assert rbac.is_allowed(combo, f"res{i}:read")
                assert rbac.is_allowed(combo, f"res{(i + 1) % 50}:read") is ((i + 1) % 50 == j)
    for n in range(5000):  # more distinct permissions than the verdict cache holds
        assert not rbac.is_allowed(["r0"], f"x{n}:read")
    assert rbac.is_allowed(["r0"], "res0:read")


def test_permission_objects_and_strings_are_interchangeable() -> None:
    rbac = RBAC()
    assert rbac.is_allowed(["viewer"], Permission("network:read"))
    assert Permission("network:read") == Permission("network:read")
    assert Permission("network:read") != "network:read"
    assert hash(Permission("network:read")) == hash(Permission("network:read"))
    assert sorted([Permission("b:x"), Permission("a:x")])[0] == Permission("a:x")
    assert Permission("network:*").is_wildcard
    assert not Permission("network:read").is_wildcard


def test_decision_str_is_readable() -> None:
    text = str(RBAC().explain(["editor"], "network:read"))
    assert text == "network:read: allowed (granted by 'network:read' of role 'viewer')"
    assert "RBAC(roles=" in repr(RBAC())
