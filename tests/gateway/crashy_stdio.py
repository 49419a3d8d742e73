"""A raw stdio JSON-RPC peer for failure tests: tools/call "crash" kills the process mid-call,
"hang" never answers, anything else echoes (server/discover says it is a 2026-07-28 server)."""

import json
import os
import sys

for line in sys.stdin:
    msg = json.loads(line)
    if "id" not in msg:
        continue
    if msg.get("method") == "server/discover":
        result = {"resultType": "complete", "supportedVersions": ["2026-07-28"],
                  "capabilities": {"tools": {}}}
        sys.stdout.write(json.dumps({"jsonrpc": "2.0", "id": msg["id"], "result": result}) + "\n")
        sys.stdout.flush()
        continue
    name = msg.get("params", {}).get("name")
    if name == "crash":
        os._exit(3)
    if name == "hang":
        continue
    result = {"content": [{"type": "text", "text": f"pid {os.getpid()}"}]}
    sys.stdout.write(json.dumps({"jsonrpc": "2.0", "id": msg["id"], "result": result}) + "\n")
    sys.stdout.flush()
