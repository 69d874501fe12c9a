"""MCP servers: the tools they offer, and calling them (the ``mcp`` extra)."""
