"""transformers' ``generate()`` as a runner: a token-ID streamer, a stop criterion, a forward pre-hook that captures the prompt IDs."""

from __future__ import annotations

from backends.core.params import SamplingParams
from backends.generation.runners.base import Sink
from backends.hardware.devices import input_device
from backends.prompt.view import PromptView


class GenerateRunner:
    """transformers' ``generate()`` with a token-ID streamer and a stop criterion."""

    def run(self, model, view: PromptView, params: SamplingParams, sink: Sink) -> list[int]:
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList
        from transformers.generation.streamers import BaseStreamer

        input_ids = torch.tensor([view.ids], dtype=torch.long, device=input_device(model))

        def capture(_module, args, kwargs):
            ids = kwargs.get("input_ids")
            if ids is None and args:
                ids = args[0]
            if ids is not None:
                sink.capture(ids[0].tolist())
            hook.remove()

        hook = model.register_forward_pre_hook(capture, with_kwargs=True)

        class Stopper(StoppingCriteria):
            def __call__(self, input_ids, scores, **kwargs):
                return torch.full((input_ids.shape[0],), sink.stopped, dtype=torch.bool, device=input_ids.device)

        class TokenStreamer(BaseStreamer):
            prompt_seen = False

            def put(self, value):
                if not self.prompt_seen:  # generate() first hands over the prompt
                    self.prompt_seen = True
                    return
                for token in value.reshape(-1).tolist():
                    sink.token(int(token))

            def end(self):
                pass

        try:
            with torch.inference_mode():
                output = model.generate(
                    input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
                    generation_config=generation_config(model, params, sink.stop_ids),
                    streamer=TokenStreamer(), stopping_criteria=StoppingCriteriaList([Stopper()]),
                )
        finally:
            hook.remove()
        return output[0, input_ids.shape[1]:].tolist()


def generation_config(model, params: SamplingParams, stop_ids: list[int]):
    """The model's own generation config with the turn's sampling parameters applied."""
    from transformers import GenerationConfig

    config = GenerationConfig.from_dict(model.generation_config.to_dict())
    config.max_new_tokens = params.max_new_tokens
    config.max_length = None
    config.eos_token_id = stop_ids or None
    if config.pad_token_id is None:
        config.pad_token_id = (stop_ids or [0])[0]
    config.repetition_penalty = params.repetition_penalty
    if params.greedy:
        config.do_sample = False
        config.temperature = config.top_p = config.top_k = None
    else:
        config.do_sample = True
        config.temperature = params.temperature
        config.top_p = params.top_p
        config.top_k = params.top_k
    return config
