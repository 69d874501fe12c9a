"""How the families whose format is the vendor's code (not a chat template) put tools in a prompt.

- ChatGLM3 (``tokenization_chatglm.py``'s ``build_chat_input`` and the vendor's tool
  demo): a system message "Answer the following questions as best as you can. You
  have access to the following tools:" whose tools follow on a new line as
  ``json.dumps(tools, indent=4, ensure_ascii=False)``; each tool is the function
  object itself (name, description, parameters).
- Qwen v1 (the ReAct prompt of the vendor's ``openai_api.py``): the user's question
  is given after an instruction listing each tool as a ``TOOL_DESC`` line, then
  ``Question: ...``; the model answers ``Thought / Action / Action Input`` and stops
  at ``Observation:``, where the tool's result goes.

Tools come in as OpenAI schemas (``Tool.schema()``).
"""

from __future__ import annotations

import json

CHATGLM3_TOOLS_PROMPT = "Answer the following questions as best as you can. You have access to the following tools:"

QWEN_TOOL_DESC = ("{name_for_model}: Call this tool to interact with the {name_for_human} API. What is the "
                  "{name_for_human} API useful for? {description_for_model} Parameters: {parameters}")

QWEN_REACT_INSTRUCTION = """Answer the following questions as best you can. You have access to the following APIs:

{tools_text}

Use the following format:

Question: the input question you must answer
Thought: you should always think about what to do
Action: the action to take, should be one of [{tools_name_text}]
Action Input: the input to the action
Observation: the result of the action
... (this Thought/Action/Action Input/Observation can be repeated zero or more times)
Thought: I now know the final answer
Final Answer: the final answer to the original input question

Begin!"""

#: Where Qwen v1's ReAct turn stops so the tool can answer (the vendor's stop word).
QWEN_REACT_STOP = "Observation:"


def functions(tools: list[dict]) -> list[dict]:
    """The function objects of OpenAI ``tools`` entries (an entry that is one already stays)."""
    return [t.get("function", t) if isinstance(t, dict) else t for t in tools]


def chatglm3_tools_text(tools: list[dict]) -> str:
    return CHATGLM3_TOOLS_PROMPT + "\n" + json.dumps(functions(tools), indent=4, ensure_ascii=False)


def qwen_react_query(tools: list[dict], query: str) -> str:
    """The user's question as Qwen v1's ReAct prompt asks it."""
    fns = functions(tools)
    descriptions = [QWEN_TOOL_DESC.format(name_for_model=f["name"], name_for_human=f["name"],
                                          description_for_model=f.get("description", ""),
                                          parameters=json.dumps(f.get("parameters", {}), ensure_ascii=False))
                    for f in fns]
    instruction = QWEN_REACT_INSTRUCTION.format(tools_text="\n\n".join(descriptions),
                                                tools_name_text=", ".join(f["name"] for f in fns))
    return f"{instruction}\n\nQuestion: {query}"
