"""open_model: load a spec the way its engine needs and pick the runner."""

from __future__ import annotations

from dataclasses import dataclass

from backends.checkpoint.consent import require_consent
from backends.checkpoint.locate import locate
from backends.checkpoint.own_quantize import find_own_quantize
from backends.checkpoint.remote_code import is_remote_model
from backends.core.errors import ModelLoadError, UsageError
from backends.core.progress import Progress
from backends.core.spec import OWN_LOADING_ENGINES, ModelSpec
from backends.generation.handle import ModelHandle
from backends.generation.runners.generate import GenerateRunner
from backends.generation.runners.loop import LoopRunner
from backends.generation.runners.native import NativeRunner
from backends.loading.quant import OWN_METHODS
from backends.loading.remote.buffers import guard_buffers
from backends.loading.remote.fixes import install_import_standins
from backends.loading.remote.load import load_remote, load_vendor_tokenizer
from backends.loading.transformers_loader import Loaded, load
from backends.prompt.family_for import family_for


def open_model(spec: ModelSpec, progress=None) -> ModelHandle:
    """Locate, load and wrap a model: the one entry point the CLI and the app use.

    The prompt family comes from the same place ``inspect`` gets it
    (``tokenizer_side.family_for``), so a preview and a run always agree.
    ``spec.engine`` and the checkpoint pick the loading path and the runner
    (``backends.runners.prepare``).
    """

    prepared = prepare(spec, progress)
    loaded = prepared.loaded
    return ModelHandle(loaded.model, loaded.tokenizer, prepared.family, spec, device=loaded.device,
                       dtype=loaded.dtype, path=str(loaded.located.path), runner=prepared.runner,
                       quant=getattr(loaded, "quant", None))


def _own_code_failed(spec: ModelSpec, where: str, detail: str) -> ModelLoadError:
    """The true cause when a remote-code checkpoint fails on the --engine generate path."""
    import transformers

    return ModelLoadError(f"'{spec.label}' runs its own code, and that code does not work with transformers "
                          f"{transformers.__version__}'s {where}: {detail}",
                          "use --engine auto: llm-tui loads it with its own loader and decode loop")


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
        try:
            loaded = load(spec, progress)
        except ModelLoadError as err:
            if not remote:
                raise
            raise _own_code_failed(spec, "from_pretrained()", err.problem) from None
        if remote:
            report = guard_buffers(loaded.model, label=spec.label)
            for note in report.notes:
                (progress or (lambda m, f=None: None))(note, None)
    family = family_for(loaded.located, trust_remote_code=spec.trust_remote_code)
    if engine == "native":
        runner = NativeRunner.for_model(loaded.model, loaded.tokenizer, family, label=spec.label,
                                        load_tokenizer=lambda: load_vendor_tokenizer(loaded.located.path, spec))
        loaded.tokenizer = runner.tokenizer
        family = runner.family
    elif engine == "loop" or (engine == "auto" and remote):
        runner = LoopRunner()
    else:
        runner = GenerateRunner(own_code=spec.label if remote else None)
    return Prepared(loaded, family, runner)
