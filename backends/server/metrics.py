"""What a server says about its load: Prometheus ``/metrics`` (vLLM, llama-server) and llama-server's ``/slots``.

Names differ between engines and versions; each figure is read from the
first name the server has, summed over its label sets, and left out when it
has none of them. Nothing is inferred.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from backends.server.client import ServerClient, ServerError

#: Each figure, and the metric names engines give it (newer names first).
_NAMES = {
    "kv_usage": ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc", "llamacpp:kv_cache_usage_ratio",
                 "sglang:token_usage"),
    "running": ("vllm:num_requests_running", "llamacpp:requests_processing", "sglang:num_running_reqs"),
    "waiting": ("vllm:num_requests_waiting", "llamacpp:requests_deferred", "sglang:num_queue_reqs"),
    "prefix_hits": ("vllm:prefix_cache_hits_total", "vllm:prefix_cache_hits"),
    "prefix_queries": ("vllm:prefix_cache_queries_total", "vllm:prefix_cache_queries"),
    "prefix_hit_rate": ("vllm:gpu_prefix_cache_hit_rate", "sglang:cache_hit_rate"),
}
_LINE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+([-+0-9.eEinfNa]+)")


@dataclass(frozen=True)
class ServerMetrics:
    kv_usage: float | None = None  # the share of the KV cache in use, 0-1
    running: int | None = None  # requests being generated
    waiting: int | None = None  # requests queued
    prefix_hit_rate: float | None = None  # the share of prompt tokens found in the prefix cache, 0-1
    slots_busy: int | None = None  # llama-server /slots: slots processing a request …
    slots_total: int | None = None  # … of how many

    @property
    def empty(self) -> bool:
        return all(v is None for v in (self.kv_usage, self.running, self.waiting, self.prefix_hit_rate,
                                       self.slots_busy))


def parse_prometheus(text: str) -> dict[str, float]:
    """Every sample in a Prometheus text exposition, summed by metric name over its labels."""
    totals: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = _LINE.match(line.strip())
        if match is None:
            continue
        try:
            value = float(match.group(3))
        except ValueError:
            continue
        totals[match.group(1)] = totals.get(match.group(1), 0.0) + value
    return totals


def metrics_from(samples: dict[str, float]) -> ServerMetrics:
    def first(figure: str) -> float | None:
        return next((samples[name] for name in _NAMES[figure] if name in samples), None)

    hits, queries = first("prefix_hits"), first("prefix_queries")
    rate = hits / queries if hits is not None and queries else first("prefix_hit_rate")
    running, waiting = first("running"), first("waiting")
    return ServerMetrics(kv_usage=first("kv_usage"), running=None if running is None else int(running),
                         waiting=None if waiting is None else int(waiting), prefix_hit_rate=rate)


def read_metrics(client: ServerClient) -> ServerMetrics:
    """The server's figures now; empty when it exposes none (``/metrics`` off or missing)."""
    try:
        status, text = client.get("/metrics")
    except ServerError:
        status, text = 599, ""
    metrics = metrics_from(parse_prometheus(text)) if status < 400 else ServerMetrics()
    try:
        slots = client.get_json("/slots")
    except ServerError:
        slots = None
    if isinstance(slots, list) and slots:
        busy = sum(1 for s in slots if isinstance(s, dict) and (s.get("is_processing") or s.get("state") == 1))
        metrics = ServerMetrics(metrics.kv_usage, metrics.running, metrics.waiting, metrics.prefix_hit_rate,
                                slots_busy=busy, slots_total=len(slots))
    return metrics


def metrics_line(metrics: ServerMetrics) -> str:
    """One line for the meter: ``KV cache 23% · 2 running · 0 waiting · prefix hits 41%``."""
    parts = []
    if metrics.kv_usage is not None:
        parts.append(f"KV cache {metrics.kv_usage:.0%}")
    if metrics.running is not None:
        parts.append(f"{metrics.running} running")
    if metrics.waiting is not None:
        parts.append(f"{metrics.waiting} waiting")
    if metrics.slots_busy is not None:
        parts.append(f"slots {metrics.slots_busy}/{metrics.slots_total} busy")
    if metrics.prefix_hit_rate is not None:
        parts.append(f"prefix hits {metrics.prefix_hit_rate:.0%}")
    return " · ".join(parts) if parts else "the server exposes no metrics (/metrics)"


def server_cached_tokens(chunk: dict) -> int | None:
    """How many of the prompt's tokens the server took from its own prefix cache, where a stream
    chunk says so: OpenAI's ``usage.prompt_tokens_details.cached_tokens`` (vLLM with
    ``--enable-prompt-tokens-details`` too), llama-server's ``timings.cache_n`` (or the older
    ``tokens_cached``); None when the chunk does not say."""
    usage = chunk.get("usage")
    details = usage.get("prompt_tokens_details") if isinstance(usage, dict) else None
    candidates = [
        details.get("cached_tokens") if isinstance(details, dict) else None,
        (chunk.get("timings") or {}).get("cache_n") if isinstance(chunk.get("timings"), dict) else None,
        chunk.get("tokens_cached"),
    ]
    for value in candidates:
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0:
            return int(value)
    return None


def prefix_cache_hits(client: ServerClient) -> float | None:
    """vLLM's count of prompt tokens found in its prefix cache so far (``/metrics``), or None."""
    status, text = client.get("/metrics")
    if status >= 400:
        return None
    samples = parse_prometheus(text)
    return next((samples[name] for name in _NAMES["prefix_hits"] if name in samples), None)
