"""A real MCP server (tests/fixtures/mcp_server.py, the official SDK over stdio): its tools, a call,
and the ways a call goes wrong, each one line while the client goes on."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

from backends.mcp.client import McpServer, ServerConfig, ToolError

SERVER = Path(__file__).parent / "fixtures" / "mcp_server.py"


@pytest.fixture
def server(tmp_path):
    calls = tmp_path / "calls.jsonl"
    running = McpServer(ServerConfig("test", command=sys.executable, args=(str(SERVER),),
                                     env={"MCP_CALLS": str(calls), "PATH": ""}))
    running.calls = calls
    yield running
    running.close()


def test_the_servers_tools_and_a_call(server):
    tools = {t.name: t for t in server.start()}
    assert set(tools) == {"get_weather", "slow", "boom", "exit_now"}
    weather = tools["get_weather"]
    assert weather.description == "The weather in a city now." and weather.source == "mcp test"
    assert weather.parameters["properties"]["city"]["type"] == "string"
    assert weather.schema()["function"]["name"] == "get_weather"
    result = server.call("get_weather", {"city": "Paris"})
    assert not result.is_error and json.loads(result.text) == {"city": "Paris", "sky": "clear", "celsius": 21}
    assert [json.loads(line) for line in server.calls.read_text().splitlines()] == \
        [{"name": "get_weather", "arguments": {"city": "Paris"}}]


def test_a_failing_tool_is_an_error_result_and_the_server_goes_on(server):
    server.start()
    failed = server.call("boom", {})
    assert failed.is_error and "kaboom" in failed.text
    assert not server.call("get_weather", {"city": "Oslo"}).is_error


def test_a_tool_past_its_timeout_gives_one_line(server):
    server.start()
    started = time.monotonic()
    with pytest.raises(ToolError, match="did not answer within 1 s"):
        server.call("slow", {"seconds": 5}, timeout=1)
    assert time.monotonic() - started < 3


def test_a_server_that_exits_gives_one_line_for_that_call_and_the_next(server):
    server.start()
    with pytest.raises(ToolError) as first:
        server.call("exit_now", {}, timeout=10)
    assert "\n" not in str(first.value)
    with pytest.raises(ToolError, match="not running|stopped answering"):
        server.call("get_weather", {"city": "Rome"}, timeout=10)


def test_a_server_that_cannot_start_gives_one_line(tmp_path):
    broken = McpServer(ServerConfig("broken", command=sys.executable, args=(str(tmp_path / "missing.py"),)))
    with pytest.raises(ToolError, match="MCP server 'broken'"):
        broken.start(timeout=15)
    with pytest.raises(ToolError, match="neither a command nor a url"):
        McpServer(ServerConfig("empty"))


def test_a_server_over_streamable_http(tmp_path):
    """``url = ...``: the same server, reached over streamable HTTP."""
    import subprocess

    from server_stubs import free_port, wait_until_up

    port = free_port()
    process = subprocess.Popen([sys.executable, str(SERVER), "--http", str(port)],
                               env={**__import__("os").environ, "MCP_CALLS": str(tmp_path / "calls.jsonl")},
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until_up(f"http://127.0.0.1:{port}/mcp", process, timeout=60)
        web = McpServer(ServerConfig("web", url=f"http://127.0.0.1:{port}/mcp"))
        try:
            assert {t.name for t in web.start()} == {"get_weather", "slow", "boom", "exit_now"}
            result = web.call("get_weather", {"city": "Oslo"})
            assert not result.is_error and json.loads(result.text)["city"] == "Oslo"
        finally:
            web.close()
    finally:
        process.terminate()
        process.wait(10)
