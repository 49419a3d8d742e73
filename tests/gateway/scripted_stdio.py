"""A hand-written stdio MCP server whose every move a test can steer and observe.

    python scripted_stdio.py [--era legacy|modern|dual] [--silent-probe]

- ``legacy``: the 2025-11-25 handshake only; anything before ``initialize`` gets -32601 (or no
  answer at all with ``--silent-probe``), and a request carrying the 2026-07-28 envelope too.
- ``modern``: 2026-07-28 only; ``server/discover`` answers, ``initialize`` is refused with
  -32022.
- ``dual``: the first request decides, as the official SDK does.

Tools (``tools/call``): ``pid``; ``wait`` (parks the call; with a progress token, sends progress
0 "parked MARKER" at once and progress 1 "MARKER" when released, then answers with the
``marker`` argument); ``parked`` (how many calls are parked); ``release`` (releases every parked
call); ``cancelled`` (markers of the calls cancelled so far); ``remember``/``recall`` (process
state); ``meta`` (the ``_meta`` keys the call carried); ``methods`` (the request methods seen so
far); ``ask`` (asks the client for sampling and answers with what came back).
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

ERA = sys.argv[sys.argv.index("--era") + 1] if "--era" in sys.argv else "dual"
SILENT_PROBE = "--silent-probe" in sys.argv
MODERN_KEY = "io.modelcontextprotocol/protocolVersion"
TOOLS = ["pid", "wait", "parked", "release", "cancelled", "remember", "recall", "meta",
         "methods", "ask"]

state: dict[str, Any] = {"era": None if ERA == "dual" else ERA, "initialized": False,
                         "memory": None}
parked: dict[Any, dict[str, Any]] = {}  # request id -> the parked call
cancelled: list[str] = []
seen: list[str] = []
asked: dict[Any, Any] = {}  # id of our request to the client -> id of the call waiting for it
next_ask = iter(range(1000, 10**9))


def progress(token: Any, value: int, message: str) -> None:
    send({"jsonrpc": "2.0", "method": "notifications/progress", "params": {
        "progressToken": token, "progress": value, "message": message}})


def send(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def answer(rid: Any, result: dict[str, Any]) -> None:
    if state["era"] == "modern":
        result = {"resultType": "complete", **result}
    send({"jsonrpc": "2.0", "id": rid, "result": result})


def fail(rid: Any, code: int, message: str, data: Any = None) -> None:
    err: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        err["data"] = data
    send({"jsonrpc": "2.0", "id": rid, "error": err})


def text(rid: Any, value: str) -> None:
    answer(rid, {"content": [{"type": "text", "text": value}]})


def tool(rid: Any, params: dict[str, Any]) -> None:
    name = params.get("name")
    args = params.get("arguments") or {}
    meta = params.get("_meta") or {}
    if name == "pid":
        text(rid, str(os.getpid()))
    elif name == "wait":
        parked[rid] = {"marker": args.get("marker", ""), "token": meta.get("progressToken")}
        if parked[rid]["token"] is not None:
            progress(parked[rid]["token"], 0, f"parked {parked[rid]['marker']}")
    elif name == "parked":
        text(rid, str(len(parked)))
    elif name == "release":
        for pid, call in list(parked.items()):
            del parked[pid]
            if call["token"] is not None:
                progress(call["token"], 1, call["marker"])
            text(pid, call["marker"])
        text(rid, "released")
    elif name == "cancelled":
        text(rid, ",".join(cancelled))
    elif name == "remember":
        state["memory"] = args.get("value")
        text(rid, "ok")
    elif name == "recall":
        text(rid, str(state["memory"]))
    elif name == "meta":
        text(rid, ",".join(sorted(meta)))
    elif name == "methods":
        text(rid, ",".join(seen))
    elif name == "ask":
        ask_id = next(next_ask)
        asked[ask_id] = rid
        send({"jsonrpc": "2.0", "id": ask_id, "method": "sampling/createMessage", "params": {
            "messages": [], "maxTokens": 1}})
    else:
        fail(rid, -32602, f"unknown tool {name}")


def request(message: dict[str, Any]) -> None:
    rid, method = message["id"], message["method"]
    seen.append(method)
    params = message.get("params") or {}
    envelope = isinstance(params.get("_meta"), dict) and MODERN_KEY in params["_meta"]
    if state["era"] is None:
        state["era"] = "modern" if envelope and method != "initialize" else "legacy"
    if state["era"] == "legacy":
        if method == "initialize":
            state["initialized"] = True
            answer(rid, {"protocolVersion": "2025-11-25",
                         "capabilities": {"tools": {"listChanged": True},
                                          "resources": {"subscribe": True}},
                         "serverInfo": {"name": "scripted", "version": "0.1"},
                         "instructions": "A scripted server."})
            return
        if not state["initialized"]:
            if not SILENT_PROBE:
                fail(rid, -32601, f"Method not found: {method}")
            return
        if envelope:
            fail(rid, -32600, "this server speaks 2025-11-25 only")
            return
    elif method == "initialize":
        fail(rid, -32022, "Unsupported protocol version",
             {"supported": ["2026-07-28"], "requested": params.get("protocolVersion")})
        return
    elif method == "server/discover":
        answer(rid, {"supportedVersions": ["2026-07-28"], "capabilities": {"tools": {}},
                     "_meta": {"io.modelcontextprotocol/serverInfo": {"name": "scripted",
                                                                      "version": "0.1"}}})
        return
    if method == "tools/list":
        answer(rid, {"tools": [{"name": n, "inputSchema": {"type": "object"}} for n in TOOLS]})
    elif method == "tools/call":
        tool(rid, params)
    elif method == "ping":
        answer(rid, {})
    else:
        fail(rid, -32601, f"Method not found: {method}")


def notification(message: dict[str, Any]) -> None:
    if message["method"] == "notifications/cancelled":
        call = parked.pop((message.get("params") or {}).get("requestId"), None)
        if call is not None:
            cancelled.append(call["marker"])


def response(message: dict[str, Any]) -> None:
    rid = asked.pop(message.get("id"), None)
    if rid is None:
        return
    if "error" in message:
        text(rid, f"error {message['error'].get('code')}")
    else:
        text(rid, "answered")


for line in sys.stdin:
    msg = json.loads(line)
    if "method" in msg and "id" in msg:
        request(msg)
    elif "method" in msg:
        notification(msg)
    else:
        response(msg)
