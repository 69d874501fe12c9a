"""``[mcp.servers.NAME]`` in the config file: the MCP servers whose tools a conversation may use.

    [mcp.servers.weather]
    command = "python"
    args = ["weather_server.py"]
    env = { API_KEY = "..." }       # optional

    [mcp.servers.search]
    url = "http://127.0.0.1:8000/mcp"   # streamable HTTP
"""

from __future__ import annotations

from pathlib import Path

from backends.core.errors import UsageError
from backends.mcp.client import ServerConfig

_KEYS = ("command", "args", "env", "url")


def mcp_servers(file: Path, data: dict, warnings: list[str]) -> dict[str, ServerConfig]:
    section = data.get("mcp", {})
    if not isinstance(section, dict):
        raise UsageError(f"{file}: mcp must be a table", "write [mcp.servers.NAME] sections")
    for key in section:
        if key != "servers":
            warnings.append(f"{file}: unknown key [mcp] {key} ignored (known: servers)")
    servers = section.get("servers", {})
    if not isinstance(servers, dict):
        raise UsageError(f"{file}: mcp.servers must be a table", "write [mcp.servers.NAME] sections")
    found: dict[str, ServerConfig] = {}
    for name, table in servers.items():
        where = f"[mcp.servers.{name}]"
        if not isinstance(table, dict):
            raise UsageError(f"{file}: {where} is not a table", 'write command = "..." or url = "..." under it')
        for key in table:
            if key not in _KEYS:
                warnings.append(f"{file}: unknown key {where} {key} ignored (known: {', '.join(_KEYS)})")
        command, url, args, env = table.get("command"), table.get("url"), table.get("args", []), table.get("env")
        if bool(command) == bool(url):
            raise UsageError(f"{file}: {where} needs a command (a program to start) or a url, not both or neither",
                             'for example command = "python" with args = ["server.py"], or url = "http://…/mcp"')
        if command is not None and not isinstance(command, str) or url is not None and not isinstance(url, str):
            raise UsageError(f"{file}: {where} command and url are text")
        if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
            raise UsageError(f"{file}: {where} args must be a list of text", 'for example args = ["server.py"]')
        if env is not None and (not isinstance(env, dict) or not all(isinstance(v, str) for v in env.values())):
            raise UsageError(f"{file}: {where} env must be a table of text", 'for example env = { KEY = "value" }')
        found[name] = ServerConfig(name, command=command, args=tuple(args), env=env, url=url)
    return found
