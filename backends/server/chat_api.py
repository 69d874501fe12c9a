"""Messages as the OpenAI chat API takes them.

The conversation keeps a server-read call's arguments as a dict, as chat
templates read them (``tool_call.function.arguments | tojson``); the API
takes them as a JSON string. Nothing else changes on the way out.
"""

from __future__ import annotations

import json


def api_messages(messages: list[dict]) -> list[dict]:
    out = []
    for message in messages:
        calls = message.get("tool_calls")
        if calls:
            message = {**message, "tool_calls": [_api_call(c) for c in calls]}
        out.append(message)
    return out


def _api_call(call: dict) -> dict:
    function = dict(call.get("function") or {})
    if not isinstance(function.get("arguments"), str):
        function["arguments"] = json.dumps(function.get("arguments") or {}, ensure_ascii=False)
    return {**call, "function": function}
