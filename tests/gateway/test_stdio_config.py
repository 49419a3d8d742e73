"""The stdio settings of a mount: defaults, checks, and how they reach the upstream."""

from __future__ import annotations

import sys
import tomllib
from typing import Any

import pytest

from bastion.config.load import parse_config
from bastion.config.model import UpstreamConfig
from bastion.errors import ConfigError
from bastion.gateway.upstream_stdio import StdioUpstream
from bastion.runtime import _upstream


def config(upstream: str) -> Any:
    text = ('[[mounts]]\nname = "local"\npath = "/mcp/local"\n'
            f'[mounts.upstream]\n{upstream}\n')
    return parse_config(tomllib.loads(text), source="bastion.toml")


def test_the_defaults_isolate_principals_and_bound_processes() -> None:
    up = UpstreamConfig(command=("server",))
    assert up.isolation == "principal"
    assert (up.max_children_per_principal, up.max_children) == (8, 64)
    assert up.idle_timeout_seconds == 600
    assert up.protocol == "auto"


def test_settings_reach_the_stdio_upstream() -> None:
    cfg = config(f'command = ["{sys.executable}"]\nisolation = "shared"\nprotocol = "2026-07-28"\n'
                 "max_children = 10\nmax_children_per_principal = 2\n"
                 "idle_timeout_seconds = 30\nprobe_timeout_seconds = 1.5")
    upstream = _upstream(cfg, cfg.mounts[0], "bastion.toml")
    assert isinstance(upstream, StdioUpstream)
    assert (upstream.isolation, upstream.protocol) == ("shared", "2026-07-28")
    assert (upstream.pool.total, upstream.pool.per_owner) == (10, 2)
    assert (upstream.idle_timeout, upstream.probe_timeout) == (30, 1.5)


@pytest.mark.parametrize(("upstream", "key", "expected"), [
    ('url = "http://127.0.0.1:9/mcp"\nisolation = "shared"', "mounts[0].upstream",
     "no stdio-only setting for a url upstream (isolation)"),
    ('command = ["x"]\nisolation = "per-request"', "mounts[0].upstream.isolation", ""),
    ('command = ["x"]\nmax_children = 2\nmax_children_per_principal = 3',
     "mounts[0].upstream", "max_children_per_principal cannot exceed max_children"),
    ('command = ["x"]\nidle_timeout_seconds = 0', "mounts[0].upstream.idle_timeout_seconds", ""),
])
def test_bad_stdio_settings_are_configuration_errors(upstream: str, key: str,
                                                     expected: str) -> None:
    with pytest.raises(ConfigError) as failed:
        config(upstream)
    assert key in str(failed.value)
    assert expected in str(failed.value)
