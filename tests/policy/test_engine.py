"""The policy engine: effects, deny-overrides, step-up, fail-closed conditions, visibility."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.oauth.scopes import ScopeHierarchy
from bastion.policy import Facts, PolicyError, Trace, parse_policy
from bastion.principal import Principal

RULES: dict[str, Any] = {"rules": [
    {"id": "readers", "effect": "allow", "tools": ["read_file", "list_dir"]},
    {"id": "writers", "effect": "allow", "tools": "write_file",
     "when": 'args.path.startsWith("/data/")'},
    {"id": "write-scope", "effect": "require_scopes", "tools": "write_file",
     "scopes": ["files:write"]},
    {"id": "no-secrets", "effect": "deny", "tools": "*",
     "when": 'has(args.path) && args.path.contains("/secrets/")',
     "message": "That path is off limits."},
    {"id": "payments", "effect": "allow", "tools": "pay", "when": "args.amount <= 100"},
    {"id": "admins-only", "effect": "allow", "tools": "delete_*",
     "when": '"admin" in principal.claims.roles'},
    {"id": "no-interns", "effect": "deny", "methods": "completion/complete",
     "when": 'principal.sub.startsWith("intern-")'},
    {"id": "docs", "effect": "allow", "resources": "docs://*"},
]}


def principal(scopes: str = "", sub: str = "alice") -> Principal:
    return Principal(issuer="https://as", subject=sub, client_id="c",
                     scopes=frozenset(scopes.split()), audience=("r",), expires_at=0)


def facts(name: str | None, args: dict[str, Any] | None = None, scopes: str = "",
          method: str = "tools/call", roles: tuple[str, ...] = (), sub: str = "alice") -> Facts:
    return Facts(principal=principal(scopes, sub), mount="files", method=method, name=name,
                 arguments=args or {}, claims={"roles": list(roles)})


POLICY = parse_policy(RULES, source="test.toml",
                      hierarchy=ScopeHierarchy({"files:admin": ["files:write"]}))


def test_allow_by_name() -> None:
    d = POLICY.decide(facts("read_file"))
    assert (d.effect, d.rule) == ("allow", "readers")


def test_default_deny_for_unlisted_tool() -> None:
    d = POLICY.decide(facts("format_disk"))
    assert d.effect == "deny"
    assert d.rule is None
    assert d.message == "This operation is not permitted."


def test_argument_rule_refuses_path_outside_root() -> None:
    assert POLICY.decide(facts("write_file", {"path": "/etc/passwd"},
                               "files:write")).effect == "deny"
    assert POLICY.decide(facts("write_file", {"path": "/data/a"}, "files:write")).allowed


def test_argument_bound_refuses_amount_above_limit() -> None:
    assert POLICY.decide(facts("pay", {"amount": 100})).allowed
    assert POLICY.decide(facts("pay", {"amount": 101})).effect == "deny"


def test_deny_overrides_allow_and_its_message_hides_internals() -> None:
    d = POLICY.decide(facts("read_file", {"path": "/data/secrets/k"}))
    assert (d.effect, d.rule) == ("deny", "no-secrets")
    assert d.message == "That path is off limits."
    assert "no-secrets" not in d.message


def test_missing_scope_is_step_up_with_every_needed_scope() -> None:
    d = POLICY.decide(facts("write_file", {"path": "/data/a"}, "files:read"))
    assert d.effect == "step_up"
    assert d.scopes == ("files:write",)


def test_scope_hierarchy_satisfies_require_scopes() -> None:
    assert POLICY.decide(facts("write_file", {"path": "/data/a"}, "files:admin")).allowed


def test_condition_on_claims() -> None:
    assert POLICY.decide(facts("delete_user", roles=("admin",))).allowed
    assert POLICY.decide(facts("delete_user", roles=("dev",))).effect == "deny"


def test_deny_condition_that_cannot_evaluate_fails_closed() -> None:
    # "amount" is missing: the allow condition errors (not allowed) -> default deny.
    assert POLICY.decide(facts("pay", {})).effect == "deny"
    broken = parse_policy({"rules": [
        {"id": "all", "effect": "allow", "tools": "*"},
        {"id": "odd", "effect": "deny", "tools": "*", "when": "args.n % 2 == 1"}]},
        source="t")
    d = broken.decide(facts("x", {}))
    assert (d.effect, d.rule) == ("deny", "odd")


def test_methods_without_target_pass_unless_denied() -> None:
    assert POLICY.decide(facts(None, method="tools/list")).allowed
    assert POLICY.decide(facts(None, method="completion/complete")).allowed
    d = POLICY.decide(facts(None, method="completion/complete", sub="intern-7"))
    assert (d.effect, d.rule) == ("deny", "no-interns")


def test_resources_by_pattern() -> None:
    assert POLICY.decide(facts("docs://guide", method="resources/read")).allowed
    assert POLICY.decide(facts("file:///etc/passwd", method="resources/read")).effect == "deny"


def test_mount_restriction() -> None:
    p = parse_policy({"rules": [{"effect": "allow", "tools": "*", "mounts": "other"}]},
                     source="t")
    assert p.decide(facts("x")).effect == "deny"


def test_explain_trace_names_each_rule_considered() -> None:
    trace = Trace()
    POLICY.decide(facts("write_file", {"path": "/data/a"}, "files:write"), trace)
    ids = [rule for rule, _ in trace.steps]
    assert ids == ["no-secrets", "writers", "write-scope"]
    assert "is true" in dict(trace.steps)["writers"]


def test_visibility() -> None:
    assert POLICY.visible(facts("read_file"))
    assert POLICY.visible(facts("write_file", scopes="files:write"))  # depends on args
    assert not POLICY.visible(facts("write_file", scopes=""))  # scope missing
    assert not POLICY.visible(facts("format_disk"))
    assert not POLICY.visible(facts("delete_user", roles=("dev",)))


@pytest.mark.parametrize(("rules", "problem"), [
    ({"rules": [{"effect": "maybe", "tools": "x"}]}, "effect must be one of"),
    ({"rules": [{"effect": "allow"}]}, "name what it applies to"),
    ({"rules": [{"effect": "allow", "tools": "x", "when": "args.("}]}, "not valid CEL"),
    ({"rules": [{"effect": "allow", "tools": "x", "when": "env.HOME == 'x'"}]},
     "unknown variables"),
    ({"rules": [{"effect": "require_scopes", "tools": "x"}]}, "scopes"),
    ({"rules": [{"effect": "allow", "tools": "x", "color": "red"}]}, "unknown keys"),
    ({"rules": [{"id": "a", "effect": "allow", "tools": "x"},
                {"id": "a", "effect": "deny", "tools": "y"}]}, "unique"),
    ({"rules": [{"effect": "allow", "tools": "x", "prompts": "y"}]}, "at most one"),
])
def test_bad_policy_is_a_clear_error(rules: dict[str, Any], problem: str) -> None:
    with pytest.raises(PolicyError, match=problem) as err:
        parse_policy(rules, source="p.toml")
    assert str(err.value).startswith("p.toml: ")


# --- property: one definition, two uses ------------------------------------------------------

TOOLS = ["read_file", "list_dir", "write_file", "pay", "delete_user", "format_disk"]
SAFE_ARGS = {"write_file": {"path": "/data/x"}, "pay": {"amount": 5}}


@settings(max_examples=300, deadline=None)
@given(tool=st.sampled_from(TOOLS),
       scopes=st.sets(st.sampled_from(["files:read", "files:write", "files:admin"])),
       roles=st.sets(st.sampled_from(["admin", "dev"])),
       path=st.sampled_from(["/data/a", "/etc/x", "/data/secrets/k"]),
       amount=st.integers(-10, 1000))
def test_property_hidden_is_never_callable_and_listed_is_callable(
    tool: str, scopes: set[str], roles: set[str], path: str, amount: int
) -> None:
    scope_text = " ".join(scopes)
    listed = POLICY.visible(facts(tool, scopes=scope_text, roles=tuple(roles)))
    args = {"path": path, "amount": amount}
    decision = POLICY.decide(facts(tool, args, scope_text, roles=tuple(roles)))
    if not listed:
        assert decision.effect != "allow", (tool, scopes, roles, args)
    else:
        safe = POLICY.decide(facts(tool, SAFE_ARGS.get(tool, {}), scope_text,
                                   roles=tuple(roles)))
        assert safe.allowed, (tool, scopes, roles, safe)
