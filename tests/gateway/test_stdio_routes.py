"""The bookkeeping of a shared stdio channel, alone: ids and progress tokens per exchange."""

from __future__ import annotations

from typing import Any

from bastion.gateway.stdio_routes import SUBSCRIPTION_ID, Routes
from bastion.gateway.upstream import Caller

ALICE: Caller = ("https://as.example", "alice", "c")
BOB: Caller = ("https://as.example", "bob", "c")


def request(rid: Any, token: Any = None, method: str = "tools/call") -> dict[str, Any]:
    meta = {"progressToken": token} if token is not None else {}
    return {"jsonrpc": "2.0", "id": rid, "method": method, "params": {"name": "x",
                                                                        "_meta": meta}}


def progress(token: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "method": "notifications/progress",
            "params": {"progressToken": token, "progress": 1}}


def test_ids_and_tokens_chosen_alike_get_child_values_of_their_own() -> None:
    routes = Routes()
    a, a_out = routes.open(ALICE, request(1, "t"))
    b, b_out = routes.open(BOB, request(1, "t"))
    assert a_out["id"] != b_out["id"]
    tokens = {a_out["params"]["_meta"]["progressToken"],
              b_out["params"]["_meta"]["progressToken"]}
    assert len(tokens) == 2 and "t" not in tokens
    # each progress notification and answer goes back to its own exchange, in its own terms
    for exchange, out in ((b, b_out), (a, a_out)):
        note = progress(out["params"]["_meta"]["progressToken"])
        assert routes.inbound(note) is exchange
        assert note["params"]["progressToken"] == "t"
        answer = {"jsonrpc": "2.0", "id": out["id"], "result": {}}
        assert routes.inbound(answer) is exchange
        assert answer["id"] == 1 and exchange.answered


def test_unknown_or_closed_exchanges_route_nowhere() -> None:
    routes = Routes()
    a, out = routes.open(ALICE, request("r", "t"))
    routes.close(a)
    assert routes.inbound({"jsonrpc": "2.0", "id": out["id"], "result": {}}) is None
    assert routes.inbound(progress(out["params"]["_meta"]["progressToken"])) is None
    assert routes.inbound(progress("t")) is None
    assert routes.inbound({"jsonrpc": "2.0", "id": True, "result": {}}) is None
    assert routes.inbound({"jsonrpc": "2.0", "method": "notifications/message",
                           "params": {"level": "info"}}) is None


def test_a_bad_progress_token_is_not_passed_on() -> None:
    routes = Routes()
    _, out = routes.open(ALICE, request(1, {"an": "object"}))
    assert "progressToken" not in out["params"]["_meta"]


def test_a_cancellation_names_only_the_senders_requests_in_flight() -> None:
    routes = Routes()
    a, _ = routes.open(ALICE, request(1))
    routes.open(BOB, request(2))
    cancel = {"jsonrpc": "2.0", "method": "notifications/cancelled",
              "params": {"requestId": 1, "reason": "r"}}
    assert routes.cancellation(BOB, cancel) == []
    assert routes.cancellation(ALICE, {**cancel, "params": {"requestId": "1"}}) == []
    assert routes.cancellation(ALICE, {**cancel, "params": {"requestId": True}}) == []
    assert routes.cancellation(ALICE, {**cancel, "params": "x"}) == []
    assert routes.cancellation(ALICE, cancel) == [{
        "jsonrpc": "2.0", "method": "notifications/cancelled",
        "params": {"requestId": a.child_id, "reason": "r"}}]
    a.answered = True
    assert routes.cancellation(ALICE, cancel) == []


def test_subscription_ids_are_mapped_back() -> None:
    routes = Routes()
    listen, out = routes.open(ALICE, request(9, method="subscriptions/listen"))
    note = {"jsonrpc": "2.0", "method": "notifications/tools/list_changed",
            "params": {"_meta": {SUBSCRIPTION_ID: out["id"]}}}
    assert routes.inbound(note) is listen
    assert note["params"]["_meta"][SUBSCRIPTION_ID] == 9
    end = {"jsonrpc": "2.0", "id": out["id"],
           "result": {"resultType": "complete", "_meta": {SUBSCRIPTION_ID: out["id"]}}}
    assert routes.inbound(end) is listen
    assert end == {"jsonrpc": "2.0", "id": 9,
                   "result": {"resultType": "complete", "_meta": {SUBSCRIPTION_ID: 9}}}
