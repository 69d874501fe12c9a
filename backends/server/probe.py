"""What a server is and what it can tell about the prompt it reads.

Engines differ in what they let a client check. vLLM and llama-server take
token IDs as the prompt (so llm-tui can send the exact IDs it previewed) and
render chat messages on request (vLLM ``/tokenize``, llama-server
``/apply-template``); vLLM also echoes the prompt's IDs. Others (TGI,
ollama, ``transformers serve``, most OpenAI-compatible gateways) take chat
messages only and report how many prompt tokens they read. The probe finds
out which, from the server's own endpoints, and never assumes more.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from backends.core.errors import UsageError
from backends.server.client import ServerClient, ServerError

#: Servers whose /v1/completions takes a list of token IDs as the prompt.
TAKES_IDS = ("vllm", "llama.cpp")

#: ``owned_by`` in /v1/models, as each engine writes it.
_OWNERS = {"vllm": "vllm", "llamacpp": "llama.cpp", "sglang": "sglang", "tgi": "tgi", "library": "ollama",
           "ollama": "ollama", "local": "transformers"}


@dataclass(frozen=True)
class ServerInfo:
    url: str
    kind: str  # "vllm", "llama.cpp", "sglang", "tgi", "ollama", "transformers" or "openai-compatible"
    model: str  # the model id requests name
    models: tuple[str, ...] = ()
    max_context: int | None = None
    takes_ids: bool = False  # /v1/completions accepts the prompt as token IDs
    echoes_ids: bool = False  # the response carries the prompt's token IDs (vLLM return_token_ids)
    tokenizes_messages: bool = False  # /tokenize renders chat messages into IDs (vLLM)
    applies_template: bool = False  # /apply-template renders chat messages into text (llama-server)
    version: str | None = None

    @property
    def label(self) -> str:
        name = self.model.rstrip("/").rsplit("/", 1)[-1] or self.model
        return f"{name} @ {self.kind}"


def probe(client: ServerClient, model: str | None = None) -> ServerInfo:
    """Ask the server what it serves and what it is; ``model`` picks one of several (``--model``)."""
    listing = client.get_json("/v1/models")
    entries = [e for e in (listing.get("data") or []) if isinstance(e, dict) and e.get("id")]
    ids = tuple(str(e["id"]) for e in entries)
    if model is None:
        if len(ids) != 1:
            raise UsageError(f"{client.base} serves {len(ids)} models" + (f": {', '.join(ids[:8])}" if ids else ""),
                             "choose one with --model NAME")
        model = ids[0]
    elif ids and model not in ids:
        raise UsageError(f"{client.base} does not serve '{model}'", f"it serves: {', '.join(ids[:8])}")
    entry = next((e for e in entries if e.get("id") == model), {})
    kind = _OWNERS.get(str(entry.get("owned_by", "")).lower()) or _kind_from_endpoints(client)
    info = ServerInfo(client.base, kind, model, ids, max_context=_context_of(entry))
    if kind == "vllm":
        info = replace(info, takes_ids=True, echoes_ids=True, tokenizes_messages=True,
                       version=_field(client, "/version", "version"))
    elif kind == "llama.cpp":
        props = _optional_json(client, "/props") or {}
        n_ctx = (props.get("default_generation_settings") or {}).get("n_ctx")
        info = replace(info, takes_ids=True, applies_template=True, version=props.get("build_info"),
                       max_context=info.max_context or (int(n_ctx) if isinstance(n_ctx, int) else None))
    return info


def _kind_from_endpoints(client: ServerClient) -> str:
    """An engine that does not say who owns the model: tell it by an endpoint only it has."""
    if _field(client, "/version", "version"):
        return "vllm"
    props = _optional_json(client, "/props")
    if isinstance(props, dict) and "default_generation_settings" in props:
        return "llama.cpp"
    if _optional_json(client, "/api/version") is not None:
        return "ollama"
    return "openai-compatible"


def _context_of(entry: dict) -> int | None:
    for key in ("max_model_len", "context_length", "max_context_length"):
        value = entry.get(key)
        if isinstance(value, int) and value > 0:
            return value
    meta = entry.get("meta")
    if isinstance(meta, dict) and isinstance(meta.get("n_ctx_train"), int):
        return meta["n_ctx_train"]
    return None


def _optional_json(client: ServerClient, path: str):
    """The JSON a GET returns, or None when the endpoint is missing or says something else."""
    try:
        return client.get_json(path)
    except ServerError:
        return None


def _field(client: ServerClient, path: str, key: str) -> str | None:
    data = _optional_json(client, path)
    value = data.get(key) if isinstance(data, dict) else None
    return str(value) if value is not None else None
