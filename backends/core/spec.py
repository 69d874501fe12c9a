"""ModelSpec: which model to load and how, parsed from flags and the config file."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

from backends.core.errors import UsageError

#: int4 is a remote-code checkpoint's own quantize(4) (ChatGLM2/3, Baichuan); int8 is that checkpoint's
#: own quantize(8) when llm-tui loads it itself, bitsandbytes int8 otherwise (backends.quant).
QUANT_CHOICES = ("none", "nf4", "fp4", "int8", "int4", "gptq", "awq")
DTYPE_CHOICES = ("auto", "bf16", "fp16", "fp32")
ENGINE_CHOICES = ("auto", "generate", "loop", "native", "llamacpp")

#: The name that means "the embedded default model".
DEFAULT_MODEL = "default"


@dataclass(frozen=True)
class ModelSpec:
    #: A local directory, a GGUF file, an HF id found in the local cache, a
    #: config alias, or ``None``/"default" for the embedded default model.
    source: str | None = None
    quant: str = "none"
    dtype: str = "auto"
    device_map: str = "auto"
    trust_remote_code: bool = False
    engine: str = "auto"
    max_memory: str | None = None  # e.g. "0=20GiB,1=20GiB,cpu=64GiB"
    bnb_double_quant: bool = False  # bitsandbytes 4-bit: quantize the quantization constants too
    bnb_compute_dtype: str = "auto"  # bitsandbytes 4-bit matmul dtype
    #: A served model (MODEL is a URL): which of the server's models (``--model``), where its
    #: tokenizer files are for the preview (``--tokenizer``), and the environment variable that
    #: holds the API key (a config alias's ``api_key_env``; the key itself is never stored).
    server_model: str | None = None
    tokenizer: str | None = None
    api_key_env: str | None = None
    #: llama.cpp (a GGUF run as it is): how many layers go to the GPU (``--n-gpu-layers``; -1: all).
    n_gpu_layers: int = 0
    #: Keep each turn's KV cache for the next one (``--prompt-cache on|off``): a turn reads only
    #: what follows the prefix its prompt shares with the last.
    prompt_cache: bool = True
    #: A display name (the alias it came from, or the directory's name).
    alias: str | None = None

    def __post_init__(self) -> None:
        check_choice("--quant", self.quant, QUANT_CHOICES)
        check_choice("--dtype", self.dtype, DTYPE_CHOICES)
        check_choice("--engine", self.engine, ENGINE_CHOICES)
        check_choice("--bnb-compute-dtype", self.bnb_compute_dtype, DTYPE_CHOICES)
        check_device_map(self.device_map)

    @property
    def is_default(self) -> bool:
        return self.source in (None, "", DEFAULT_MODEL)

    @property
    def is_url(self) -> bool:
        return str(self.source or "").startswith(("http://", "https://"))

    @property
    def label(self) -> str:
        """The model's name as shown and saved; a quantized load says how (``qwen-7b · nf4``), so a
        reply from it is never taken for one from the full-precision weights."""
        if self.alias:
            name = self.alias
        elif self.is_default:
            name = "SmolLM2-135M-Instruct (default)"
        elif self.is_url:
            host = str(self.source).split("://", 1)[1].split("/", 1)[0]
            name = f"{self.server_model} @ {host}" if self.server_model else host
        else:
            name = str(self.source).rstrip("/").rsplit("/", 1)[-1]
        return name if self.quant == "none" else f"{name} · {self.quant}"

    def with_(self, **changes) -> "ModelSpec":
        return replace(self, **changes)

    def to_json(self) -> dict:
        return asdict(self)


def check_choice(flag: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise UsageError(f"{flag} '{value}' is not known", "choose one of: " + ", ".join(choices))


def check_device_map(value: str) -> None:
    if value in ("auto", "cpu"):
        return
    for part in value.split(","):
        part = part.strip()
        if part == "cpu" or part == "mps":
            continue
        if part.startswith("cuda:") and part[5:].isdigit():
            continue
        if part.isdigit():
            continue
        raise UsageError(f"--device-map '{value}' is not understood",
                         "use auto, cpu, or devices like cuda:0 or cuda:0,cuda:1")


#: The ``--engine`` values for which llm-tui loads a remote-code checkpoint itself.
OWN_LOADING_ENGINES = ("auto", "loop", "native")
