"""One MCP server, used from plain threads: its tools, and a call with a timeout.

The official SDK is asynchronous; each server gets a thread of its own that
runs an event loop holding the session (stdio: the server is a child process;
``url``: streamable HTTP). ``call`` hands a request to that loop and waits at
most ``timeout`` seconds for the answer. A server that exits, hangs or fails
gives one line (``ToolError``) and the caller goes on.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import importlib.util
import threading
from dataclasses import dataclass, replace

from backends.core.errors import LlmTuiError, MissingPackageError
from backends.prompt.tools.definitions import Tool, tool_from_json

#: Seconds to start a server and list its tools, and the default for one call.
START_TIMEOUT = 30.0
CALL_TIMEOUT = 60.0


class ToolError(LlmTuiError):
    """A tool or its server failed: one line, the conversation goes on."""


@dataclass(frozen=True)
class ToolResult:
    text: str
    is_error: bool = False


@dataclass(frozen=True)
class ServerConfig:
    """``[mcp.servers.NAME]``: ``command`` and ``args`` (stdio) or ``url`` (streamable HTTP)."""

    name: str
    command: str | None = None
    args: tuple[str, ...] = ()
    env: dict | None = None
    url: str | None = None


def _sdk() -> None:
    if importlib.util.find_spec("mcp") is None:
        raise MissingPackageError("mcp", "tools from MCP servers", extra="mcp")


class McpServer:
    def __init__(self, config: ServerConfig) -> None:
        if not config.command and not config.url:
            raise ToolError(f"MCP server {config.name!r} has neither a command nor a url",
                            f"set command = ... (and args) or url = ... under [mcp.servers.{config.name}]")
        self.config = config
        self.tools: list[Tool] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._requests: asyncio.Queue | None = None
        self._thread: threading.Thread | None = None
        self._ready = concurrent.futures.Future()
        self._closed = threading.Event()
        self.exited: str | None = None  # why the session ended, once it has

    @property
    def name(self) -> str:
        return self.config.name

    def start(self, timeout: float = START_TIMEOUT) -> list[Tool]:
        """Start (or connect to) the server and list its tools."""
        _sdk()
        self._thread = threading.Thread(target=self._run, name=f"mcp-{self.name}", daemon=True)
        self._thread.start()
        try:
            self.tools = self._ready.result(timeout)
        except concurrent.futures.TimeoutError:
            self.close()
            raise ToolError(f"MCP server {self.name!r} did not start within {timeout:.0f} s") from None
        except ToolError:
            raise
        except Exception as err:  # noqa: BLE001 — the SDK's and the process's errors, in one line
            raise ToolError(f"MCP server {self.name!r} could not start: {_line(err)}") from None
        return self.tools

    def call(self, name: str, arguments: dict, timeout: float = CALL_TIMEOUT) -> ToolResult:
        """Run tool ``name``; ``ToolError`` when it does not answer in ``timeout`` s or the server is gone."""
        if self.exited is not None or self._loop is None:
            raise ToolError(f"MCP server {self.name!r} is not running ({self.exited or 'not started'})")
        answer: concurrent.futures.Future = concurrent.futures.Future()
        self._loop.call_soon_threadsafe(self._requests.put_nowait, (name, arguments, answer))
        try:
            return answer.result(timeout)
        except concurrent.futures.TimeoutError:
            answer.cancel()
            raise ToolError(f"tool {name!r} did not answer within {timeout:.0f} s") from None
        except ToolError:
            raise
        except Exception as err:  # noqa: BLE001
            raise ToolError(f"tool {name!r} failed: {_line(err)}") from None

    def close(self) -> None:
        self._closed.set()
        if self._loop is not None and self._requests is not None:
            try:
                self._loop.call_soon_threadsafe(self._requests.put_nowait, None)
            except RuntimeError:
                pass  # the loop has ended already
        if self._thread is not None:
            self._thread.join(5)

    # -- in the server's thread ------------------------------------------------------------------

    def _run(self) -> None:
        try:
            asyncio.run(self._session())
        except BaseException as err:  # noqa: BLE001 — said once, to whoever waits
            self.exited = self.exited or _line(err)
            if not self._ready.done():
                self._ready.set_exception(err if isinstance(err, Exception) else ToolError(str(err)))

    async def _session(self) -> None:
        from mcp import ClientSession

        self._loop = asyncio.get_running_loop()
        self._requests = asyncio.Queue()
        async with self._transport() as streams:
            read, write = streams[0], streams[1]
            async with ClientSession(read, write) as session:
                await session.initialize()
                listed = await session.list_tools()
                where = f"mcp {self.name}"
                self._ready.set_result([replace(tool_from_json({"name": t.name, "description": t.description or "",
                                                                "parameters": t.inputSchema or {"type": "object"}},
                                                               where), source=where) for t in listed.tools])
                await self._serve(session)
        self.exited = self.exited or "closed"

    def _transport(self):
        if self.config.url:
            from mcp.client import streamable_http

            # The SDK renamed it (1.2x); the old name stays, deprecated, through 1.x.
            connect = getattr(streamable_http, "streamable_http_client", None) or streamable_http.streamablehttp_client
            return connect(self.config.url)
        from mcp import StdioServerParameters
        from mcp.client.stdio import stdio_client

        return stdio_client(StdioServerParameters(command=self.config.command, args=list(self.config.args),
                                                  env=self.config.env))

    async def _serve(self, session) -> None:
        while True:
            request = await self._requests.get()
            if request is None:
                return
            name, arguments, answer = request
            if answer.cancelled():
                continue
            try:
                result = await session.call_tool(name, arguments)
            except Exception as err:  # noqa: BLE001 — the server went away mid-call, most often
                self.exited = f"the server ended: {_line(err)}"
                if not answer.done():
                    answer.set_exception(ToolError(f"tool {name!r}: MCP server {self.name!r} stopped "
                                                   f"answering ({_line(err)})"))
                return
            if not answer.done():
                answer.set_result(ToolResult(_text(result.content), bool(result.isError)))


def _text(content) -> str:
    parts = []
    for item in content or ():
        text = getattr(item, "text", None)
        parts.append(text if text is not None else f"[{getattr(item, 'type', 'content')}]")
    return "\n".join(parts)


def _line(err: BaseException) -> str:
    inner = getattr(err, "exceptions", None)  # anyio's task groups wrap the real error
    if inner:
        return _line(inner[0])
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0]}" if text else type(err).__name__
