"""Policy as code: one definition decides what each principal may list and call. Pure.

Rules are data (TOML) with conditions in CEL (Common Expression Language), compiled once and
indexed by MCP method and target name, so a decision evaluates only the rules that apply.
"""

from bastion.policy.engine import Decision, Policy, Trace
from bastion.policy.facts import Facts
from bastion.policy.load import PolicyError, load_policy, parse_policy

__all__ = ["Decision", "Facts", "Policy", "PolicyError", "Trace", "load_policy", "parse_policy"]
