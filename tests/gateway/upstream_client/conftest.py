"""The gateway's own HTTP/1.1 upstream client runs on both event loops ``bastion serve`` may
take: its timeouts end a stalled read by aborting the transport, and how an aborted read ends
(EOF, or an error) is each loop's own code."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
import uvloop


def pytest_asyncio_loop_factories(config: pytest.Config,
                                  item: pytest.Item) -> dict[str, Callable[[], Any]]:
    return {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}
