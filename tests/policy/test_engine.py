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
    # In order of precedence: deny rules, then require_scopes, then allow.
    assert ids == ["no-secrets", "write-scope", "writers"]
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


def test_converted_bindings_follow_the_principal_and_the_arguments() -> None:
    # Principal and action are converted once per (principal, target) and reused; nothing a
    # previous decision bound may leak into the next one.
    policy = parse_policy(RULES, source="t")
    admin = Principal(issuer="https://as", subject="root", client_id="c",
                      scopes=frozenset(), audience=("r",), expires_at=0)
    intern = Principal(issuer="https://as", subject="intern-1", client_id="c",
                       scopes=frozenset(), audience=("r",), expires_at=0)
    admin_claims, intern_claims = {"roles": ["admin"]}, {"roles": []}
    for _ in range(3):
        assert policy.decide(Facts(principal=admin, mount="files", method="tools/call",
                                   name="delete_user", claims=admin_claims)).allowed
        assert not policy.decide(Facts(principal=intern, mount="files", method="tools/call",
                                       name="delete_user", claims=intern_claims)).allowed
        for amount, allowed in ((5, True), (500, False), (100, True), ("x", False)):
            d = policy.decide(Facts(principal=admin, mount="files", method="tools/call",
                                    name="pay", arguments={"amount": amount}))
            assert d.allowed is allowed, (amount, d)
        # A call without the argument must not see the previous call's value.
        assert not policy.decide(Facts(principal=admin, mount="files", method="tools/call",
                                       name="pay", arguments={})).allowed


def test_bindings_cache_is_bounded_and_recreated_for_a_new_principal_object() -> None:
    policy = parse_policy(RULES, source="t")
    for i in range(5000):
        p = Principal(issuer="https://as", subject=f"intern-{i}" if i % 2 else f"u{i}",
                      client_id="c", scopes=frozenset(), audience=("r",), expires_at=0)
        d = policy.decide(Facts(principal=p, mount="files", method="completion/complete"))
        assert d.allowed is (i % 2 == 0)
    assert len(policy._bindings._contexts) <= 4096


@pytest.mark.parametrize(("source", "fields"), [
    ('args.path.startsWith("/data/")', frozenset({"path"})),
    ("has(args.path) && args . amount <= 3", frozenset({"path", "amount"})),
    ("size(args) > 1", None),
    ('args.exists(k, k == "x")', None),
    ('args["path"] == "x"', None),
    ('"path" in args', None),
    ('args.path == "args"', None),  # any other mention keeps the whole map
])
def test_argument_fields_read_by_a_condition(source: str, fields: frozenset[str] | None) -> None:
    from bastion.policy.engine import _arg_fields
    assert _arg_fields(source) == fields


@pytest.mark.parametrize(("when", "args", "allowed"), [
    ("size(args) <= 1", {"a": 1}, True),
    ("size(args) <= 1", {"a": 1, "content": "x" * 1000}, False),
    ('args.exists(k, k == "content")', {"a": 1, "content": "x"}, True),
    ('!("content" in args)', {"a": 1, "content": "x"}, False),
    ("args.a == 1", {"a": 1, "content": "x" * 100_000}, True),
])
def test_conditions_see_every_argument_they_can_observe(when: str, args: dict[str, Any],
                                                        allowed: bool) -> None:
    policy = parse_policy({"rules": [{"effect": "allow", "tools": "t", "when": when},
                                     {"effect": "deny", "tools": "t", "when": "has(args.b)"}]},
                          source="t")
    d = policy.decide(Facts(principal=principal(), mount="m", method="tools/call", name="t",
                            arguments=args))
    assert d.allowed is allowed


@settings(max_examples=400, deadline=None)
@given(tool=st.sampled_from([*TOOLS, "unlisted"]),
       scopes=st.sets(st.sampled_from(["files:read", "files:write", "files:admin"])),
       roles=st.sets(st.sampled_from(["admin", "dev"])),
       args=st.dictionaries(st.sampled_from(["path", "amount", "other"]),
                            st.one_of(st.integers(-10, 1000), st.none(),
                                      st.sampled_from(["/data/a", "/etc/x", "/data/secrets/k"]))),
       method=st.sampled_from(["tools/call", "completion/complete", "resources/read"]),
       sub=st.sampled_from(["alice", "intern-3"]))
def test_property_the_fast_path_decides_as_explain_does(
    tool: str, scopes: set[str], roles: set[str], args: dict[str, Any], method: str, sub: str
) -> None:
    # decide() takes a shortcut when nobody asks for the reasons; explain's full path must give
    # the same effect, rule and scopes for any request, including conditions that fail to
    # evaluate (an argument of the wrong type, a missing one).
    f = facts(tool, args, " ".join(scopes), method=method, roles=tuple(roles), sub=sub)
    quick, full = POLICY.decide(f), POLICY.decide(f, Trace())
    assert (quick.effect, quick.rule, quick.scopes, quick.message) == \
        (full.effect, full.rule, full.scopes, full.message)
