"""MCP protocol rules the gateway enforces: JSON-RPC envelope, protocol eras, headers. Pure."""
