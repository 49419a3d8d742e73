"""Speaking a stdio child's era: the probe, the handshake, and 2026-07-28 <-> 2025-11-25.

2026-07-28 basic/transports/stdio.mdx, "Backward Compatibility": probe with
``server/discover``; a ``DiscoverResult`` (or a recognised modern error) means the child is
modern; any other error, or no answer in a short time, means legacy, and then ``initialize``.

A legacy child serving 2026-07-28 callers is initialized once by the gateway (its own client
identity, no client capabilities: the modern era has no server-to-client requests for it to
honour), and then each modern request loses its ``io.modelcontextprotocol/*`` metadata on the
way in and each result gains ``resultType: "complete"`` on the way out; ``server/discover`` is
answered from the ``InitializeResult``.

Pure functions over JSON-RPC messages (dicts).
"""

from __future__ import annotations

from enum import Enum
from typing import Any

from bastion import __version__
from bastion.mcp.eras import LEGACY_VERSIONS, MODERN

__all__ = [
    "HANDSHAKE_VERSIONS",
    "Verdict",
    "discover_probe",
    "discover_result",
    "initialize_request",
    "initialized_notification",
    "modern_only_refusal",
    "probe_verdict",
    "refusal_of_server_request",
    "to_legacy",
    "to_modern",
]

PREFIX = "io.modelcontextprotocol/"
HANDSHAKE_VERSIONS: tuple[str, ...] = (*LEGACY_VERSIONS, "2024-11-05")
UNSUPPORTED_PROTOCOL_VERSION = -32022
METHOD_NOT_FOUND = -32601
CLIENT_INFO = {"name": "bastion-gateway", "version": __version__}


class Verdict(Enum):
    MODERN = "modern"
    LEGACY = "legacy"
    INCOMPATIBLE = "incompatible"  # modern, but not 2026-07-28: no fallback (spec)


def discover_probe(request_id: int) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "method": "server/discover", "params": {
        "_meta": {f"{PREFIX}protocolVersion": MODERN, f"{PREFIX}clientInfo": CLIENT_INFO,
                  f"{PREFIX}clientCapabilities": {}}}}


def probe_verdict(answer: dict[str, Any]) -> Verdict:
    """What the answer to the ``server/discover`` probe says about the child's era."""
    result = answer.get("result")
    if isinstance(result, dict):
        versions = result.get("supportedVersions")
        # A discover-answering server that lists no modern version advertises the legacy era.
        if isinstance(versions, list) and MODERN in versions:
            return Verdict.MODERN
        return Verdict.LEGACY
    error = answer.get("error")
    if isinstance(error, dict) and error.get("code") == UNSUPPORTED_PROTOCOL_VERSION:
        data = error.get("data")
        supported = data.get("supported") if isinstance(data, dict) else None
        if isinstance(supported, list):
            if MODERN in supported:
                return Verdict.MODERN
            if not any(v in HANDSHAKE_VERSIONS for v in supported):
                return Verdict.INCOMPATIBLE
    return Verdict.LEGACY


def initialize_request(request_id: int) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "method": "initialize", "params": {
        "protocolVersion": LEGACY_VERSIONS[0], "capabilities": {}, "clientInfo": CLIENT_INFO}}


def initialized_notification() -> dict[str, Any]:
    return {"jsonrpc": "2.0", "method": "notifications/initialized"}


def handshake_result(answer: dict[str, Any]) -> dict[str, Any]:
    """The ``InitializeResult`` of an answer to ``initialize``; ValueError saying what is wrong."""
    error = answer.get("error")
    if isinstance(error, dict):
        raise ValueError(f"refused initialize with error {error.get('code')}: "
                         f"{str(error.get('message'))[:200]}")
    result = answer.get("result")
    if not isinstance(result, dict):
        raise ValueError("answered initialize without a result")
    version = result.get("protocolVersion")
    if version not in HANDSHAKE_VERSIONS:
        raise ValueError(f"chose protocol version {str(version)[:40]!r}, which the gateway "
                         f"does not speak ({', '.join(HANDSHAKE_VERSIONS)})")
    return result


# What a modern client may rely on that a legacy child's capabilities would claim in vain:
# change notifications and resource subscriptions need subscriptions/listen, which a legacy
# child behind the gateway cannot serve.
_LISTEN_ONLY = ("listChanged", "subscribe")


def discover_result(handshake: dict[str, Any]) -> dict[str, Any]:
    """A 2026-07-28 ``DiscoverResult`` for a legacy child, from its ``InitializeResult``."""
    capabilities: dict[str, Any] = {}
    raw = handshake.get("capabilities")
    for name, value in (raw.items() if isinstance(raw, dict) else ()):
        if isinstance(value, dict):
            value = {k: v for k, v in value.items() if k not in _LISTEN_ONLY}
        capabilities[name] = value
    result: dict[str, Any] = {"resultType": "complete", **NO_CACHING,
                              "supportedVersions": [MODERN], "capabilities": capabilities}
    info = handshake.get("serverInfo")
    if isinstance(info, dict):
        result["_meta"] = {f"{PREFIX}serverInfo": info}
    instructions = handshake.get("instructions")
    if isinstance(instructions, str):
        result["instructions"] = instructions
    return result


def to_legacy(message: dict[str, Any]) -> dict[str, Any]:
    """A modern request as a legacy child expects it: no ``io.modelcontextprotocol/*`` keys in
    ``params._meta`` (a ``_meta`` left empty is dropped)."""
    params = message.get("params")
    meta = params.get("_meta") if isinstance(params, dict) else None
    if not isinstance(params, dict) or not isinstance(meta, dict):
        return message
    kept = {k: v for k, v in meta.items() if not k.startswith(PREFIX)}
    new_params = {k: v for k, v in params.items() if k != "_meta"}
    if kept:
        new_params["_meta"] = kept
    return {**message, "params": new_params}


# 2026-07-28 server/utilities/caching.mdx: results of these carry caching hints.
CACHEABLE = frozenset({"server/discover", "tools/list", "prompts/list", "resources/list",
                       "resources/templates/list", "resources/read"})
# A legacy server says nothing of how long its answers stay true, or for whom: immediately
# stale, and for this caller only.
NO_CACHING = {"ttlMs": 0, "cacheScope": "private"}


def to_modern(message: dict[str, Any], method: str | None) -> dict[str, Any]:
    """A legacy child's answer to ``method`` as a modern caller expects it: every result has a
    ``resultType`` (a legacy result is always complete), and a cacheable one its hints."""
    result = message.get("result")
    if isinstance(result, dict) and "resultType" not in result:
        hints = NO_CACHING if method in CACHEABLE else {}
        message["result"] = {"resultType": "complete", **hints, **result}
    return message


def refusal_of_server_request(request: dict[str, Any]) -> dict[str, Any]:
    """The gateway's answer to a request a child sends while serving modern callers: the
    modern era has no server-to-client requests, so none reaches them (a ping is answered)."""
    if request.get("method") == "ping":
        return {"jsonrpc": "2.0", "id": request.get("id"), "result": {}}
    method = str(request.get("method"))[:100]
    return {"jsonrpc": "2.0", "id": request.get("id"), "error": {
        "code": METHOD_NOT_FOUND,
        "message": f"Method not found: {method} (the gateway's callers speak MCP {MODERN}, "
                   "which has no server-to-client requests)"}}


def modern_only_refusal(mount: str, requested: object) -> tuple[int, dict[str, Any]]:
    """The error for ``initialize`` on a mount whose server speaks only 2026-07-28 (the
    versions it speaks named, as 2026-07-28 basic/versioning.mdx asks)."""
    return UNSUPPORTED_PROTOCOL_VERSION, {
        "message": f"Unsupported protocol version: the MCP server of mount {mount} speaks "
                   f"{MODERN} only; connect with MCP-Protocol-Version {MODERN} (no initialize)",
        "data": {"supported": [MODERN],
                 "requested": requested[:40] if isinstance(requested, str) else None},
    }
