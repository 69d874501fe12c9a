"""open_model: load a spec the way its engine needs and pick the runner."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from backends.checkpoint.consent import require_consent
from backends.checkpoint.demo import demo_gguf
from backends.checkpoint.locate import locate
from backends.checkpoint.own_quantize import find_own_quantize
from backends.checkpoint.remote_code import is_remote_model
from backends.core.errors import WARNING, ModelLoadError, UsageError
from backends.core.progress import Progress
from backends.core.spec import OWN_LOADING_ENGINES, ModelSpec
from backends.generation.handle import ModelHandle, ModelInfo
from backends.generation.runners.generate import GenerateRunner
from backends.generation.runners.llamacpp import LlamaCppRunner
from backends.generation.runners.loop import LoopRunner
from backends.generation.runners.native import NativeRunner
from backends.generation.runners.remote import RemoteRunner
from backends.loading.llamacpp import gguf_family, llamacpp_installed, llamacpp_problem, load_gguf, require_llamacpp
from backends.loading.quant import OWN_METHODS
from backends.loading.remote.buffers import guard_buffers
from backends.loading.remote.fixes import install_import_standins
from backends.loading.remote.load import load_remote, load_vendor_tokenizer
from backends.loading.transformers_loader import Loaded, load
from backends.prompt.family_for import family_for, open_family
from backends.prompt.tools.calls import call_format
from backends.server.client import ServerClient
from backends.server.probe import probe
from backends.server.prompt import NoPreview, server_prompt


def open_model(spec: ModelSpec, progress=None) -> ModelHandle:
    """Locate, load and wrap a model: the one entry point the CLI and the app use.

    The prompt family comes from the same place ``inspect`` gets it
    (``prompt.family_for``), so a preview and a run always agree.
    ``spec.engine`` and the checkpoint pick the loading path and the runner
    (``prepare``); a URL opens a server (``open_server``).
    """
    if spec.is_url:
        return open_server(spec, progress)
    if runs_on_llamacpp(spec):
        return open_gguf(spec, progress)
    broken = llamacpp_problem() if _wants_llamacpp(spec) else None
    if broken and progress is not None:  # installed but it does not load: transformers, and why
        progress(f"{WARNING}{broken}: using transformers", None)
    prepared = prepare(spec, progress)
    loaded = prepared.loaded
    return ModelHandle(loaded.model, loaded.tokenizer, prepared.family, spec, device=loaded.device,
                       dtype=loaded.dtype, path=str(loaded.located.path), runner=prepared.runner,
                       quant=getattr(loaded, "quant", None))


def runs_on_llamacpp(spec: ModelSpec) -> bool:
    """``--engine llamacpp``, or ``auto`` for a GGUF file (the default model's too) with the extra
    installed and loading (one that does not load leaves it to transformers: ``open_model`` says why)."""
    if spec.engine == "llamacpp":
        return True
    return _wants_llamacpp(spec) and llamacpp_installed()


def _wants_llamacpp(spec: ModelSpec) -> bool:
    """``auto`` for a GGUF file as it is: llama.cpp's, where it runs."""
    gguf = str(spec.source or "").lower().endswith(".gguf") or spec.is_default
    return spec.engine == "auto" and gguf and spec.quant == "none"


def open_gguf(spec: ModelSpec, progress=None) -> ModelHandle:
    """A GGUF file run by llama.cpp as it is (quantized, no dequantizing)."""
    say = progress or (lambda message, fraction=None: None)
    if spec.quant != "none":
        raise UsageError(f"--quant {spec.quant} does not apply to llama.cpp: a GGUF file is quantized already",
                         "drop --quant, or use --engine generate to load it with transformers")
    require_llamacpp()  # before the default's GGUF is fetched for it
    if spec.is_default:
        path = demo_gguf(progress)
    else:
        located = locate(spec, progress)
        if not located.gguf_file:
            raise UsageError(f"--engine llamacpp runs GGUF files, and '{spec.label}' is a checkpoint directory",
                             "give a .gguf file, or --engine auto")
        path = Path(located.path) / located.gguf_file
    if spec.engine == "auto":
        say("running the GGUF with llama.cpp (installed); --engine generate loads it with transformers", None)
    llm = load_gguf(path, spec, progress)
    family = gguf_family(llm)
    where = "cpu" if not spec.n_gpu_layers else ("all layers on the GPU" if spec.n_gpu_layers < 0
                                                 else f"{spec.n_gpu_layers} layers on the GPU")
    kind = str(llm.metadata.get("general.file_type", "")) or "gguf"
    details = ModelInfo(label=spec.label, family=family.name, dtype="gguf", quant=_gguf_quant(path, kind),
                        device=f"llama.cpp ({where})", max_context=llm.n_ctx(), parameters=0,
                        footprint_bytes=path.stat().st_size, path=str(path))
    return ModelHandle(llm, None, family, spec, runner=LlamaCppRunner(prompt_cache=spec.prompt_cache), info=details)


def _gguf_quant(path: Path, file_type: str) -> str:
    """The quantization a GGUF file's name gives (``Q4_1``, ``Q8_0`` …), else its file type number."""
    for part in reversed(path.stem.replace("-", ".").split(".")):
        if part[:1] in "QqFf" and any(ch.isdigit() for ch in part) and len(part) <= 8:
            return part.upper()
    return f"type {file_type}"


def open_server(spec: ModelSpec, progress=None) -> ModelHandle:
    """A model served elsewhere: probe the server, pick the best prompt preview it allows, and the
    way its prompt goes (as token IDs where the server takes them, else as chat messages)."""
    say = progress or (lambda message, fraction=None: None)
    say(f"asking {spec.source} what it serves", None)
    client = ServerClient(str(spec.source), api_key=server_api_key(spec))
    try:
        info = probe(client, spec.server_model)
        family, local = server_prompt(client, info, spec.tokenizer)
    except BaseException:
        client.close()
        raise
    sends_ids = info.takes_ids and not isinstance(family, NoPreview)
    how = "the prompt goes as token IDs" if sends_ids else "the prompt goes as chat messages"
    say(f"{info.kind} serves {info.model}; {how}; preview by {family.name}", 1.0)
    host = str(spec.source).split("://", 1)[1].split("/", 1)[0]
    label = spec.alias or f"{info.model.rstrip('/').rsplit('/', 1)[-1] or info.model} @ {host}"
    details = ModelInfo(label=label, family=family.name, dtype="", quant="", device=f"{info.kind} server",
                        max_context=info.max_context or getattr(family, "max_context", None), parameters=0,
                        footprint_bytes=0, path=str(spec.source))
    runner = RemoteRunner(client, info, sends_ids=sends_ids, reads_calls=call_format(family) is not None)
    return ModelHandle(client, None, family, spec, runner=runner, info=details)


def open_prompt_side(spec: ModelSpec, progress=None):
    """The tokenizer side of a model, never its weights (``inspect``): ``(family, where)``.

    For a server that is a local tokenizer (``--tokenizer``), or the server's own rendering
    (kept open for the family to use), or nothing; no remote code runs unless allowed."""
    if not spec.is_url:
        family, located = open_family(spec, progress)
        return family, str(located.path)
    client = ServerClient(str(spec.source), api_key=server_api_key(spec))
    info = probe(client, spec.server_model)
    family, local = server_prompt(client, info, spec.tokenizer)
    return family, f"{info.model} on {info.kind} at {spec.source}" + (" (local tokenizer)" if local else "")


def server_api_key(spec: ModelSpec) -> str | None:
    """The API key from the environment variable the config names (never from a file or the database)."""
    if not spec.api_key_env:
        return None
    key = os.environ.get(spec.api_key_env)
    if not key:
        raise UsageError(f"the environment variable {spec.api_key_env} (api_key_env) is not set",
                         f"export {spec.api_key_env}=... with the server's API key")
    return key


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
        runner = LoopRunner(prompt_cache=spec.prompt_cache)
    else:
        runner = GenerateRunner(own_code=spec.label if remote else None, prompt_cache=spec.prompt_cache)
    return Prepared(loaded, family, runner)
