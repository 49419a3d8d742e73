"""The gateway: the protected resource in front of upstream MCP servers."""
