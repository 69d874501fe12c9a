"""Each model's reply to one conversation: one after another where models share a device, at once where none does.

Two models on one device would slow each other down and blur each one's
tok/s and memory, so they take turns; models on different GPUs, or behind
servers, answer at the same time. ``schedule`` says which, in words.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Callable

from backends.core.events import DoneEvent, TokenEvent
from backends.core.params import SamplingParams
from backends.hardware.devices import model_devices


@dataclass
class ReplyRun:
    """One model's answer: its tokens as they came and the turn's end (stats, prompt IDs, stop reason)."""

    handle: object  # a ModelHandle
    tokens: list[TokenEvent] = field(default_factory=list)
    done: DoneEvent | None = None

    @property
    def reply_ids(self) -> list[int]:
        return [int(t.id) for t in self.tokens if t.id is not None]

    @property
    def has_ids(self) -> bool:
        """Every token came with its ID (a server's chat endpoint streams text only)."""
        return all(t.id is not None for t in self.tokens)

    @property
    def prompt_ids(self) -> list[int]:
        return list(self.done.prompt_ids) if self.done is not None else []


@dataclass(frozen=True)
class Schedule:
    together: bool  # True: every model answers at once
    line: str  # what the user is told


def places(handle) -> set[str]:
    """Where a model does its work: its devices, the server it lives on, or the CPU (llama.cpp's threads)."""
    spec = handle.spec
    if spec.is_url:
        return {f"server {spec.source}"}
    if handle.torch:
        return set(model_devices(handle.model))
    return {"cpu", "cuda:0"} if spec.n_gpu_layers else {"cpu"}


def schedule(handles) -> Schedule:
    seen: dict[str, int] = {}
    shared: set[str] = set()
    for handle in handles:
        for place in places(handle):
            if place in seen:
                shared.add(place)
            seen[place] = seen.get(place, 0) + 1
    if shared:
        where = ", ".join(sorted(shared))
        return Schedule(False, f"the models share {where}: they answer one after another")
    return Schedule(True, "each model is on a device of its own: they answer at the same time")


def generate_replies(handles, messages: list[dict], params: SamplingParams, stop: threading.Event | None = None,
                     on_done: Callable[[int, ReplyRun], None] | None = None) -> list[ReplyRun]:
    """Each handle's reply to ``messages``, in ``handles``' order; ``on_done(index, run)`` as each ends.
    Setting ``stop`` ends every turn between two tokens (partial replies are kept)."""
    stop = stop or threading.Event()
    runs = [ReplyRun(h) for h in handles]
    if schedule(handles).together:
        streams = [h.stream(messages, params, stop) for h in handles]
        for index, (run, generation) in enumerate(zip(runs, streams)):
            _collect(run, generation)
            if on_done is not None:
                on_done(index, run)
        return runs
    for index, (run, handle) in enumerate(zip(runs, handles)):
        _collect(run, handle.stream(messages, params, stop))
        if on_done is not None:
            on_done(index, run)
    return runs


def _collect(run: ReplyRun, generation) -> None:
    while run.done is None:
        for event in generation.drain(0.1):
            if isinstance(event, TokenEvent):
                run.tokens.append(event)
            elif isinstance(event, DoneEvent):
                run.done = event
    generation.join(5)
