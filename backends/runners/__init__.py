"""How a turn's tokens are produced, and which way a model is loaded for it.

Every runner has ``run(model, view, params, sink) -> new ids`` and reports to
the engine's ``TurnSink`` (``token``, ``capture``, ``stopped``, ``stop_ids``):

- ``GenerateRunner`` (``backends.engine``): transformers' ``generate()``;
  the default for transformers-native models.
- :class:`~backends.runners.loop.LoopRunner`: a plain decode loop over the
  model's forward; the default for remote-code checkpoints, which are then
  loaded by :func:`backends.remote.load_remote`.
- :class:`~backends.runners.native.NativeRunner`: the checkpoint's own
  streaming method (``--engine native``).

:func:`prepare` is the dispatch ``open_model`` uses: it picks the loading path
and the runner from ``spec.engine`` and what the checkpoint is.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import UsageError
from ..loader import Loaded, Progress
from ..spec import ModelSpec
from .loop import LoopRunner
from .native import NativeRunner

__all__ = ["LoopRunner", "NativeRunner", "Prepared", "prepare"]


@dataclass
class Prepared:
    loaded: Loaded
    family: object
    runner: object


def prepare(spec: ModelSpec, progress: Progress | None = None) -> Prepared:
    """Load ``spec`` the way its engine needs and pick the runner.

    ``auto``: remote-code checkpoints (config.json ``auto_map`` names their own
    model class) load through :func:`backends.remote.load_remote` and run in the
    decode loop; everything else loads with ``from_pretrained`` and runs
    ``generate()``. ``loop``: the decode loop on any model. ``native``: the
    checkpoint's own streaming method, or one UsageError line when it has none.
    ``generate``: ``from_pretrained`` and ``generate()`` even for remote code,
    with the buffer guard run after loading.
    llm-tui loads a remote-code checkpoint itself unquantized, or with
    ``--quant int4``/``int8`` when its model class has its own ``quantize``
    (ChatGLM2/3, Baichuan), which then runs; other ``--quant`` values go
    through ``from_pretrained`` (bitsandbytes).
    Consent is checked before any of the checkpoint's code runs.
    """
    from ..engine import GenerateRunner
    from ..loader import load, locate, require_consent
    from ..quant import OWN_METHODS
    from ..remote import guard_buffers, is_remote_model, load_remote
    from ..remote.fixes import install_import_standins
    from ..remote.load import OWN_LOADING_ENGINES
    from ..remote.ownquant import find_own_quantize
    from ..tokenizer_side import family_for

    located = locate(spec, progress)
    require_consent(located.path, spec)
    remote = is_remote_model(located)
    engine = spec.engine
    if engine == "native" and not remote:
        raise UsageError(f"--engine native runs a checkpoint's own streaming method; '{spec.label}' has no code "
                         "of its own", "use --engine auto (transformers' generate) or --engine loop")
    own_loading = remote and engine in OWN_LOADING_ENGINES and (
        spec.quant == "none" or (spec.quant in OWN_METHODS and find_own_quantize(located.path) is not None))
    if own_loading:
        loaded = load_remote(spec, located, progress, generation_mixin=engine == "native")
    else:
        if remote:
            install_import_standins()
        loaded = load(spec, progress)
        if remote:
            report = guard_buffers(loaded.model, label=spec.label)
            for note in report.notes:
                (progress or (lambda m, f=None: None))(note, None)
    family = family_for(loaded.located, trust_remote_code=spec.trust_remote_code)
    if engine == "native":
        from ..remote import load_vendor_tokenizer

        runner = NativeRunner.for_model(loaded.model, loaded.tokenizer, family, label=spec.label,
                                        load_tokenizer=lambda: load_vendor_tokenizer(loaded.located.path, spec))
        loaded.tokenizer = runner.tokenizer
        family = runner.family
    elif engine == "loop" or (engine == "auto" and remote):
        runner = LoopRunner()
    else:
        runner = GenerateRunner()
    return Prepared(loaded, family, runner)
