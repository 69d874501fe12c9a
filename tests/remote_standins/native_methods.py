"""Stand-ins for the vendors' streaming methods (llm-tui tests; not the vendors' code).

Each class wraps a small real model (the tiny remote-code stand-in: forward
``(input_ids, past_key_values, position_ids, head_mask, use_cache)`` returning
``(logits, tuple cache)``) and offers one streaming method with the signature
of the vendor's: Qwen v1 ``chat_stream``, ChatGLM3 ``stream_chat`` and
Baichuan2 ``chat(..., stream=True)``. Their insides are written here, in the
vendors' manner: the method builds the prompt with the tokenizer it is given,
runs a cached decode loop, passes ``stopping_criteria`` from its keyword
arguments (or ``generate()``'s) the whole sequence after each token, and yields
the reply so far as text (Baichuan2: through a streamer fed from a thread).
The tokenizers are thin adapters over llm-tui's trust-free prompt families.
"""

from __future__ import annotations

import queue
import threading

import torch
from torch import nn


class _Wrapped(nn.Module):
    """A small real model plus a test rig: ``end_after`` decode steps, ``end_token`` wins (a scripted stop)."""

    def __init__(self, lm, generation_config, *, end_after=None, end_token=None) -> None:
        super().__init__()
        self.lm = lm
        self.generation_config = generation_config
        self.end_after, self.end_token = end_after, end_token
        self._steps = 0

    def forward(self, input_ids, past_key_values=None, position_ids=None, use_cache=False):
        self._steps = 0 if input_ids.shape[1] > 1 else self._steps + 1
        logits, past = self.lm(input_ids, past_key_values=past_key_values, position_ids=position_ids,
                               use_cache=use_cache)
        if self.end_after is not None and self._steps >= self.end_after:
            logits = logits.clone()
            logits[..., self.end_token] = 1e4
        return logits, past

    def get_input_embeddings(self):
        return self.lm.get_input_embeddings()

    def _decode_loop(self, ids, *, eos, max_new_tokens, do_sample, temperature=1.0, past=None, stopping=None):
        """Yields (all ids, new ids, cache) after each token; checks ``stopping`` after the yield."""
        sequence = torch.tensor([ids])
        step = sequence
        start = 0 if past is None else past[0][0].shape[1]
        new: list[int] = []
        with torch.inference_mode():
            while len(new) < max_new_tokens:
                positions = torch.arange(start, start + step.shape[1])[None, :]
                logits, past = self(step, past_key_values=past, position_ids=positions, use_cache=True)
                start += step.shape[1]
                scores = logits[:, -1, :].float()
                if do_sample:
                    token = torch.multinomial(torch.softmax(scores / max(temperature, 1e-5), -1), 1)[:, 0]
                else:
                    token = scores.argmax(-1)
                new.append(int(token[0]))
                sequence = torch.cat([sequence, token[:, None]], dim=-1)
                yield sequence, new, past
                if new[-1] in eos:
                    return
                if stopping is not None and bool(torch.as_tensor(stopping(sequence, scores)).all()):
                    return
                step = token[:, None]


# -- Qwen v1 ----------------------------------------------------------------------------
class QwenTokenizerAdapter:
    """What Qwen's chat_stream uses of QWenTokenizer, over llm-tui's QwenTokenizer."""

    def __init__(self, family) -> None:
        self.t = family.tokenizer
        self.im_start_id, self.im_end_id, self.eod_id = self.t.im_start_id, self.t.im_end_id, self.t.eod_id

    def encode(self, text):
        return self.t.encode(text)

    def decode(self, ids, skip_special_tokens=False, errors="replace"):
        return self.t.decode(list(ids), skip_special=skip_special_tokens)


class QwenChatStreamStandin(_Wrapped):
    def chat_stream(self, tokenizer, query, history, system="You are a helpful assistant.", stop_words_ids=None,
                    logits_processor=None, generation_config=None, **kwargs):
        config = generation_config or self.generation_config
        nl = tokenizer.encode("\n")

        def turn(role, content):
            return [tokenizer.im_start_id] + tokenizer.encode(role) + nl + tokenizer.encode(content) + [
                tokenizer.im_end_id]

        ids = turn("system", system)
        for user, reply in history or []:
            ids += nl + turn("user", user) + nl + turn("assistant", reply)
        ids += nl + turn("user", query) + nl + [tokenizer.im_start_id] + tokenizer.encode("assistant") + nl
        eos = {tokenizer.im_end_id, tokenizer.im_start_id, tokenizer.eod_id}
        loop = self._decode_loop(ids, eos=eos, max_new_tokens=config.max_new_tokens, do_sample=config.do_sample,
                                 temperature=config.temperature or 1.0, stopping=kwargs.get("stopping_criteria"))

        def stream_generator():
            for _sequence, new, _past in loop:
                yield tokenizer.decode(new, skip_special_tokens=True, errors="ignore")

        return stream_generator()


# -- ChatGLM3 -------------------------------------------------------------------------------
class ChatGLMTokenizerAdapter:
    """What ChatGLM3's stream_chat uses of ChatGLMTokenizer, over llm-tui's ChatGLM3Family."""

    def __init__(self, family) -> None:
        self.family = family
        self.eos_token_id = family.eos_id

    def get_command(self, token):
        return self.family.command(token)

    def build_chat_input(self, query, history=None, role="user"):
        return self.family.render(list(history or []) + [{"role": role, "content": query}]).ids

    def decode(self, ids):
        return self.family.decode(list(ids))


class ChatGLMStreamChatStandin(_Wrapped):
    def __init__(self, lm, generation_config, **rig) -> None:
        super().__init__(lm, generation_config, **rig)
        self.seen_past: list[int] = []  # cache length handed in, per call

    def stream_chat(self, tokenizer, query, history=None, role="user", past_key_values=None, max_length=8192,
                    do_sample=True, top_p=0.8, temperature=0.8, logits_processor=None,
                    return_past_key_values=False, **kwargs):
        history = list(history or [])
        if past_key_values is None:
            ids = tokenizer.build_chat_input(query, history=history, role=role)
        else:
            ids = tokenizer.build_chat_input(query, role=role)
        self.seen_past.append(0 if past_key_values is None else past_key_values[0][0].shape[1])
        eos = {tokenizer.eos_token_id, tokenizer.get_command("<|user|>"), tokenizer.get_command("<|observation|>")}
        history.append({"role": role, "content": query})
        loop = self._decode_loop(ids, eos=eos, max_new_tokens=kwargs.get("max_new_tokens") or max_length,
                                 do_sample=do_sample, temperature=temperature, past=past_key_values,
                                 stopping=kwargs.get("stopping_criteria"))
        for _sequence, new, past in loop:
            response = tokenizer.decode(new[:-1])
            if response and response[-1] != "\ufffd":
                response = response.strip()
                new_history = history + [{"role": "assistant", "metadata": "", "content": response}]
                if return_past_key_values:
                    yield response, new_history, past
                else:
                    yield response, new_history


# -- Baichuan2 --------------------------------------------------------------------------------
class BaichuanTokenizerAdapter:
    def __init__(self, family) -> None:
        self.family = family

    def build(self, messages, max_new_tokens):
        return self.family.render(messages, max_new_tokens=max_new_tokens).ids

    def decode(self, ids, skip_special_tokens=False):
        return self.family.decode(list(ids))


class TextIterStreamer:
    """Cumulative text per token, read from another thread (the vendor demos' pattern)."""

    def __init__(self, tokenizer, skip_prompt=True) -> None:
        self.tokenizer, self.skip_prompt = tokenizer, skip_prompt
        self.tokens: list[int] = []
        self.queue: queue.Queue = queue.Queue()
        self.prompt_seen = False

    def put(self, value):
        if self.skip_prompt and not self.prompt_seen:
            self.prompt_seen = True
            return
        self.tokens.extend(value.reshape(-1).tolist())
        self.queue.put(self.tokenizer.decode(self.tokens, skip_special_tokens=True))

    def end(self):
        self.queue.put(None)

    def __iter__(self):
        return self

    def __next__(self):
        item = self.queue.get()
        if item is None:
            raise StopIteration
        return item


class BaichuanChatStandin(_Wrapped):
    #: set to an exception to make generate() fail after this many tokens (as a broken transformers would)
    fail_after: int | None = None

    def chat(self, tokenizer, messages, stream=False, generation_config=None):
        config = generation_config or self.generation_config
        input_ids = torch.tensor([tokenizer.build(messages, config.max_new_tokens)])
        if stream:
            streamer = TextIterStreamer(tokenizer, skip_prompt=True)
            threading.Thread(target=self.generate, kwargs=dict(
                inputs=input_ids, streamer=streamer, generation_config=config)).start()
            return streamer
        out = self.generate(inputs=input_ids, generation_config=config)
        return tokenizer.decode(out[0][input_ids.shape[1]:].tolist(), skip_special_tokens=True)

    def generate(self, inputs=None, generation_config=None, streamer=None, stopping_criteria=None):
        config = generation_config or self.generation_config
        eos = config.eos_token_id if isinstance(config.eos_token_id, list) else [config.eos_token_id]
        if streamer is not None:
            streamer.put(inputs)
        sequence = inputs
        loop = self._decode_loop(inputs[0].tolist(), eos=set(eos), max_new_tokens=config.max_new_tokens,
                                 do_sample=config.do_sample, temperature=config.temperature or 1.0)
        for sequence, new, _past in loop:
            if self.fail_after is not None and len(new) > self.fail_after:
                raise TypeError("'DynamicCache' object is not subscriptable")
            if streamer is not None:
                streamer.put(torch.tensor([new[-1]]))
            if stopping_criteria is not None and bool(torch.as_tensor(stopping_criteria(sequence, None)).all()):
                break
        if streamer is not None:
            streamer.end()
        return sequence


class StreamChatNeedsOldTransformers(_Wrapped):
    """stream_chat that relies on generation helpers transformers 5 removed (as ChatGLM3's does)."""

    def stream_chat(self, tokenizer, query, history=None, role="user", past_key_values=None, **kwargs):
        yield from self.stream_generate(query)

    def stream_generate(self, query):
        warper = self._get_logits_warper(self.generation_config)
        yield str(warper), []
