"""The small MCP server that ``bastion demo`` puts behind the gateway."""
