"""A stored conversation as JSON (enough to reproduce it) and as Markdown (to read)."""

from __future__ import annotations

import json

from backends.core.events import stats_parts
from backends.storage.records import StoredConversation, iso_time, one_line

EXPORT_FORMAT = "llm-tui.conversation"
EXPORT_VERSION = 1


def conversation_json(conv: StoredConversation) -> dict:
    """Everything needed to reproduce the chat: model details, parameters, seed, token IDs."""
    spec = conv.meta.get("spec") if isinstance(conv.meta.get("spec"), dict) else {}
    return {
        "format": EXPORT_FORMAT,
        "version": EXPORT_VERSION,
        "id": conv.id,
        "title": conv.title,
        "created": iso_time(conv.created),
        "updated": iso_time(conv.updated),
        "model": conv.model,
        "dtype": conv.meta.get("dtype") or spec.get("dtype"),
        "quantization": conv.meta.get("quantization") or spec.get("quant"),
        "family": conv.meta.get("family"),
        "system": conv.system,
        "params": conv.params,
        "seed": conv.params.get("seed"),
        "meta": conv.meta,
        "messages": [m.to_json() for m in conv.messages],
    }

def conversation_markdown(conv: StoredConversation) -> str:
    title = conv.title or one_line(next((m.content for m in conv.messages if m.role == "user"), ""), 60)
    lines = [f"# {title or 'Conversation'}", ""]
    facts = [("Model", conv.model), ("Family", conv.meta.get("family")), ("Created", iso_time(conv.created))]
    if conv.params:
        facts.append(("Parameters", ", ".join(f"{k}={v}" for k, v in conv.params.items())))
    lines += [f"- **{name}:** {value}" for name, value in facts if value not in (None, "")]
    lines.append("")
    if conv.system:
        lines += ["## System", "", conv.system, ""]
    for message in conv.messages:
        tool = (message.stats or {}).get("tool") or {}
        heading = message.role.capitalize()
        if message.role == "tool":
            heading = f"Tool result: {tool.get('name') or '?'}" + (" (error)" if tool.get("error") else "")
        notes = [n for n in (message.model if message.model != conv.model else None,
                             None if message.status == "complete" else message.status) if n]
        if notes:
            heading += f" ({', '.join(notes)})"
        lines += [f"## {heading}", "", message.content, ""]
        for call in tool.get("calls") or []:
            lines += [f"- **Tool call:** `{call.get('name')}` `{json.dumps(call.get('arguments'), ensure_ascii=False)}`"
                      + (f" ({call['outcome']})" if call.get("outcome") else ""), ""]
        if message.stats and message.role != "tool":
            lines += [f"_{_stats_line(message.stats)}_", ""]
    return "\n".join(lines).rstrip() + "\n"


def _stats_line(stats: dict) -> str:
    return " · ".join(stats_parts(stats, ("prompt", "new", "ttft", "rate"))) or json.dumps(stats, ensure_ascii=False)
