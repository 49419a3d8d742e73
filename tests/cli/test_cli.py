"""The command line: --version, --help on every verb, init, and configuration errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bastion import __version__
from bastion.cli.main import VERBS, build_parser


def bastion(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bastion.cli.main", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=60, check=False)


def test_version() -> None:
    r = bastion("--version")
    assert r.returncode == 0
    assert r.stdout.strip() == f"bastion {__version__}"


def verbs() -> list[str]:
    sub = next(a for a in build_parser()._actions if a.dest == "verb")
    return sorted(sub.choices)  # type: ignore[arg-type]


def test_every_verb_module_is_registered() -> None:
    # One verb per module in VERBS, named after it, and nothing else.
    assert set(verbs()) == {module.rsplit(".", 1)[1] for module in VERBS}
    assert {"init", "serve", "demo", "connect", "policy", "audit"} <= set(verbs())


@pytest.mark.parametrize("verb", verbs())
def test_help_on_every_verb(verb: str) -> None:
    r = bastion(verb, "--help")
    assert r.returncode == 0
    assert "usage: bastion " + verb in r.stdout


def test_init_writes_a_valid_commented_config(tmp_path: Path) -> None:
    r = bastion("init", "--config", "bastion.toml", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    text = (tmp_path / "bastion.toml").read_text()
    assert text.count("#") > 20
    assert (tmp_path / "bastion-data").is_dir()
    again = bastion("init", "--config", "bastion.toml", cwd=tmp_path)
    assert again.returncode == 1
    assert "exists" in again.stderr


@pytest.mark.parametrize(("toml", "key", "expected"), [
    ("[server]\nport = \"eighty\"\n", "server.port", "integer"),
    ("[server]\nport = 70000\n", "server.port", "65535"),
    ("bogus = 1\n", "bogus", "Extra inputs are not permitted"),
    ("[[mounts]]\nname = \"a\"\npath = \"/mcp/a\"\n[mounts.upstream]\n", "mounts[0].upstream",
     "exactly one of url"),
    ("[[mounts]]\nname = \"a\"\npath = \"/token\"\n[mounts.upstream]\nurl = \"http://x/mcp\"\n",
     "mounts[0].path", "reserved"),
    ("[[mounts]]\nname = \"a\"\npath = \"/mcp/a\"\nscopes = [\"a b\"]\n"
     "[mounts.upstream]\nurl = \"http://x/mcp\"\n", "mounts[0].scopes[0]", "pattern"),
    ("[server\n", "(syntax)", "valid TOML"),
])
def test_config_errors_name_file_key_value_and_expectation(
    tmp_path: Path, toml: str, key: str, expected: str
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(toml)
    r = bastion("serve", "--config", str(path))
    assert r.returncode == 2
    assert str(path) in r.stderr
    assert key in r.stderr
    assert expected in r.stderr
    assert "Traceback" not in r.stderr


def test_missing_config_file_is_a_clear_error(tmp_path: Path) -> None:
    r = bastion("serve", "--config", str(tmp_path / "nope.toml"))
    assert r.returncode == 2
    assert "nope.toml" in r.stderr
    assert "readable file" in r.stderr


def test_missing_upstream_secret_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[authorization_server]\nenabled = false\n"
                    "[[mounts]]\nname = \"a\"\npath = \"/mcp/a\"\npublic = true\n"
                    "[mounts.upstream]\nurl = \"http://127.0.0.1:9/mcp\"\n"
                    "bearer = { env = \"BASTION_TEST_UNSET_VARIABLE\" }\n")
    r = bastion("serve", "--config", str(path))
    assert r.returncode == 2
    assert "mounts.a.upstream.bearer" in r.stderr
    assert "BASTION_TEST_UNSET_VARIABLE" in r.stderr


def test_init_writes_a_starter_policy_whose_tests_pass(tmp_path: Path) -> None:
    assert bastion("init", cwd=tmp_path).returncode == 0
    r = bastion("policy", "test", str(tmp_path / "policy.toml"))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "3 passed, 0 failed" in r.stdout
