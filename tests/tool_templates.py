"""Chat templates with tool formats, written for the tests in the shapes the real ones have.

Each keeps what makes its family's tool prompt hard to show exactly (the wording is the tests' own):

- ``QWEN25``: a default system prompt with or without tools, the tools appended to the system
  turn, calls written from ``tool_calls``, and results inside a *user* turn as
  ``<tool_response>`` blocks, consecutive results sharing one turn.
- ``LLAMA31``: the tools put in the *first user message* (the template takes that message out
  of the list and raises if there is none), a line added to the system turn when tools are on,
  results in an ``ipython`` turn, written through ``tojson`` (a string result is quoted).
- ``GLM4``: ``[gMASK]<sop>``, the tools in a system turn of their own, a call an assistant turn
  whose ``metadata`` names the tool, a result an ``observation`` turn; a ``tool`` message is not
  written at all.
"""

QWEN25 = (
    "{%- if tools %}{{ '<|im_start|>system\\n' }}"
    "{%- if messages[0].role == 'system' %}{{ messages[0].content }}{% else %}You are a helpful model.{% endif %}"
    "{{ '\\n\\n# Tools\\n\\nThe functions you may call are inside <tools></tools>:\\n<tools>' }}"
    "{%- for tool in tools %}{{ '\\n' }}{{ tool | tojson }}{%- endfor %}"
    "{{ '\\n</tools>\\n\\nCall one as <tool_call>\\n{\"name\": <name>, \"arguments\": <object>}\\n</tool_call>"
    "<|im_end|>\\n' }}"
    "{%- elif messages[0].role == 'system' %}{{ '<|im_start|>system\\n' + messages[0].content + '<|im_end|>\\n' }}"
    "{%- else %}{{ '<|im_start|>system\\nYou are a helpful model.<|im_end|>\\n' }}{%- endif %}"
    "{%- for m in messages %}"
    "{%- if m.role == 'user' or (m.role == 'system' and not loop.first) or (m.role == 'assistant' and not m.tool_calls) %}"
    "{{ '<|im_start|>' + m.role + '\\n' + m.content + '<|im_end|>\\n' }}"
    "{%- elif m.role == 'assistant' %}{{ '<|im_start|>assistant' }}"
    "{%- if m.content %}{{ '\\n' + m.content }}{% endif %}"
    "{%- for call in m.tool_calls %}{%- if call.function is defined %}{% set call = call.function %}{% endif %}"
    "{{ '\\n<tool_call>\\n{\"name\": \"' + call.name + '\", \"arguments\": ' }}{{ call.arguments | tojson }}"
    "{{ '}\\n</tool_call>' }}{%- endfor %}{{ '<|im_end|>\\n' }}"
    "{%- elif m.role == 'tool' %}"
    "{%- if loop.index0 == 0 or messages[loop.index0 - 1].role != 'tool' %}{{ '<|im_start|>user' }}{% endif %}"
    "{{ '\\n<tool_response>\\n' + m.content + '\\n</tool_response>' }}"
    "{%- if loop.last or messages[loop.index0 + 1].role != 'tool' %}{{ '<|im_end|>\\n' }}{% endif %}"
    "{%- endif %}{%- endfor %}"
    "{%- if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
QWEN25_SPECIALS = ("<unk>", "<|endoftext|>", "<|im_start|>", "<|im_end|>")

LLAMA31 = (
    "{{- bos_token }}"
    "{%- if not tools is defined %}{% set tools = none %}{% endif %}"
    "{%- if messages[0].role == 'system' %}{% set system_message = messages[0].content | trim %}"
    "{% set messages = messages[1:] %}{% else %}{% set system_message = '' %}{% endif %}"
    "{{- '<|start_header_id|>system<|end_header_id|>\\n\\n' }}"
    "{%- if tools is not none %}{{- 'Environment: ipython\\n' }}{% endif %}"
    "{{- 'Knowledge cutoff: 2023\\n\\n' }}{{- system_message }}{{- '<|eot_id|>' }}"
    "{%- if tools is not none %}"
    "{%- if messages | length != 0 %}{% set first_user = messages[0].content | trim %}"
    "{% set messages = messages[1:] %}"
    "{%- else %}{{- raise_exception('tools go in the first user message, and there is none') }}{% endif %}"
    "{{- '<|start_header_id|>user<|end_header_id|>\\n\\n' }}"
    "{{- 'Answer with a JSON call {\"name\": name, \"parameters\": object} to one of these functions.\\n\\n' }}"
    "{%- for t in tools %}{{- t | tojson(indent=4) }}{{- '\\n\\n' }}{% endfor %}"
    "{{- first_user + '<|eot_id|>' }}"
    "{%- endif %}"
    "{%- for m in messages %}"
    "{%- if not (m.role == 'ipython' or m.role == 'tool' or 'tool_calls' in m) %}"
    "{{- '<|start_header_id|>' + m.role + '<|end_header_id|>\\n\\n' + m.content | trim + '<|eot_id|>' }}"
    "{%- elif 'tool_calls' in m %}{% set call = m.tool_calls[0].function %}"
    "{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}"
    "{{- '{\"name\": \"' + call.name + '\", \"parameters\": ' }}{{- call.arguments | tojson }}{{- '}<|eot_id|>' }}"
    "{%- else %}{{- '<|start_header_id|>ipython<|end_header_id|>\\n\\n' }}"
    "{%- if m.content is mapping or m.content is iterable %}{{- m.content | tojson }}{% else %}{{- m.content }}"
    "{% endif %}{{- '<|eot_id|>' }}"
    "{%- endif %}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"
)
LLAMA31_SPECIALS = ("<unk>", "<|begin_of_text|>", "<|eot_id|>", "<|start_header_id|>", "<|end_header_id|>",
                    "<|python_tag|>")

GLM4 = (
    "[gMASK]<sop>"
    "{%- if tools -%}<|system|>\nYou may use these tools.\n\n# Tools"
    "{%- for tool in tools %}{%- set fn = tool.function if tool.get('function') else tool %}"
    "\n\n## {{ fn.name }}\n\n{{ fn | tojson(indent=4) }}\nGive a call's arguments as JSON.{%- endfor %}"
    "{%- endif -%}"
    "{%- for m in messages if m.role == 'system' %}<|system|>\n{{ m.content }}{%- endfor %}"
    "{%- for m in messages if m.role != 'system' %}{%- set meta = m.get('metadata', '') %}"
    "{%- if m.role == 'user' %}<|user|>\n{{ m.content }}"
    "{%- elif m.role == 'assistant' and not meta %}<|assistant|>\n{{ m.content }}"
    "{%- elif m.role == 'assistant' and meta %}<|assistant|>{{ meta }}\n{{ m.content }}"
    "{%- elif m.role == 'observation' %}<|observation|>\n{{ m.content }}"
    "{%- endif %}{%- endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
GLM4_SPECIALS = ("<unk>", "<|endoftext|>", "[gMASK]", "<sop>", "<|system|>", "<|user|>", "<|assistant|>",
                 "<|observation|>")
