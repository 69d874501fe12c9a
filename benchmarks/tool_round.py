"""What a tool round costs: the MCP round trip, and the reply after the result with and without the prompt cache.

The default model (real weights) with a chat template that offers tools; its first reply is
started from a call's exact tokens (the branch-prefix mechanism), the call runs on the test
suite's stdio MCP server, and the model answers after the result. Printed side by side in
one run:

- the MCP round trip of one call (median of 30, after one warm-up),
- the reply after the result: prompt tokens, tokens read from the prompt cache, and TTFT,
  prompt cache on against off, and their ratio (the cache should make it cost the result's
  tokens, not the whole prompt),
- the round's wall time against the sum of its two replies (the loop's own overhead: the
  MCP call, parsing, rendering).

    python benchmarks/tool_round.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import _setup  # noqa: F401

from backends.checkpoint.demo import ensure_demo
from backends.core.params import SamplingParams
from backends.core.spec import ModelSpec
from backends.generation.open import open_model
from backends.generation.tool_loop import tool_turn
from backends.mcp.client import McpServer, ServerConfig

SERVER = _setup.ROOT / "tests" / "fixtures" / "mcp_server.py"
CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
QUESTION = [{"role": "system", "content": "You answer questions about the weather."},
            {"role": "user", "content": "What is the weather in Paris right now?"}]


def tool_model(folder: Path) -> Path:
    """The default model's files, with a chat template that offers tools (the tests' TOOLS_CHATML)."""
    from test_tools_render import TOOLS_CHATML

    demo = ensure_demo()
    for item in demo.iterdir():
        if item.name not in ("tokenizer_config.json", "chat_template.jinja"):
            (folder / item.name).symlink_to(item)
    config = json.loads((demo / "tokenizer_config.json").read_text())
    config["chat_template"] = TOOLS_CHATML
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    return folder


def round_trip(server: McpServer, n: int = 30) -> float:
    server.call("get_weather", {"city": "Paris"})
    times = []
    for _ in range(n):
        start = time.perf_counter()
        server.call("get_weather", {"city": "Paris"})
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def one_round(handle, server: McpServer) -> dict:
    handle.release_cache()
    prefix = handle.prefill_tokens(CALL)
    params = SamplingParams(temperature=0, max_new_tokens=len(prefix) + 16)
    start = time.perf_counter()
    steps, _ = tool_turn(handle, QUESTION, params, server.tools, decide=lambda call: True,
                         run=lambda call: (server.call(call.name, call.arguments).text, False),
                         prefix=prefix, max_steps=2)
    wall = time.perf_counter() - start
    first, second = (s.done.stats for s in steps)
    return {"prompt": second.prompt_tokens, "cached": second.cached_tokens or 0, "ttft": second.ttft_s,
            "wall": wall, "replies": first.total_s + second.total_s}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = tool_model(Path(tmp))
        cached = open_model(ModelSpec(source=str(folder), engine="generate"))
        plain = open_model(ModelSpec(source=str(folder), engine="generate", prompt_cache=False))
        server = McpServer(ServerConfig("bench", command=sys.executable, args=(str(SERVER),)))
        server.start()
        try:
            trip = round_trip(server)
            print(f"MCP round trip (stdio, median of 30): {trip * 1000:.2f} ms")
            results = {"on": [], "off": []}
            for _ in range(args.rounds):  # alternated, so both see the same machine
                results["on"].append(one_round(cached, server))
                results["off"].append(one_round(plain, server))
        finally:
            server.close()
    best = {k: min(v, key=lambda r: r["ttft"]) for k, v in results.items()}
    print(f"{'reply after the result':<26}{'prompt':>8}{'cached':>8}{'TTFT ms':>10}{'round s':>9}{'replies s':>11}")
    for name, r in best.items():
        print(f"{'prompt cache ' + name:<26}{r['prompt']:>8}{r['cached']:>8}{r['ttft'] * 1000:>10.1f}"
              f"{r['wall']:>9.3f}{r['replies']:>11.3f}")
    on, off = best["on"], best["off"]
    print(f"TTFT after the result, cache on / off: {on['ttft'] / off['ttft']:.2f} "
          f"({on['prompt'] - on['cached']} of {on['prompt']} tokens read anew with the cache)")
    print(f"round wall / its two replies (cache on): {on['wall'] / on['replies']:.2f} "
          f"(the loop's own share: {(on['wall'] - on['replies']) * 1000:.0f} ms, MCP call included)")
    shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
