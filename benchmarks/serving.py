"""`aura serve` under load: request latency p50/p95 at 1, 16 and 64 concurrent clients, and its limits.

A real uvicorn server on 127.0.0.1 (in this process) answers chat requests with a 2-s spoken clip, each
client sending its requests one after another. Also measured: how a full queue answers (`--max-queue`
below the number of clients: the share of 429s and their `Retry-After`), and how fast a request whose
audio is over the total limit in many small parts is refused (it must never reach the model).

Default: the shipped checkpoint. `--smoke`: a tiny random-weight checkpoint (the shipped tokenizer and
teacher, a 2-block LLM of width 64), for a quick check of the harness itself.
"""

from __future__ import annotations

import argparse
import base64
import io
import resource
import socket
import statistics
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import soundfile as sf

from aura.audio.features import SAMPLE_RATE
from aura.infer.aura_model import AuraModel
from aura.registry import DEFAULT_CHECKPOINT
from aura.serve.app import create_app
from aura.serve.limits import Limits
from benchmarks.checkpoints import WORK, clips
from benchmarks.common import write_result

CLIENTS = (1, 16, 64)
MAX_TOKENS = 8


def tiny_checkpoint(folder: Path = WORK / "tiny-random") -> Path:
    """A random-weight AuRA checkpoint over a 2-block, width-64 Llama with the shipped LLM's tokenizer."""
    if (folder / "final").is_dir():
        return folder / "final"
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from aura.config import ModelConfig
    from aura.model.student import AuraStudent
    from aura.registry import resolve_model

    tokenizer = AutoTokenizer.from_pretrained(resolve_model("smollm2-135m-instruct"))
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=8192,
        tie_word_embeddings=True,
        eos_token_id=tokenizer.eos_token_id,
    )
    LlamaForCausalLM(config).save_pretrained(folder / "llm")
    tokenizer.save_pretrained(folder / "llm")
    student = AuraStudent.build(
        ModelConfig(llm=str(folder / "llm"), lora_layers=2, lora_rank=4, lora_alpha=4)
    )
    student.save_pretrained(folder / "final")
    return folder / "final"


@contextmanager
def serving(model: AuraModel, **options: Any) -> Iterator[str]:
    import uvicorn

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(create_app(model, **options), host="127.0.0.1", port=port, log_level="error")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def _wav(wave: np.ndarray) -> str:
    buffer = io.BytesIO()
    sf.write(buffer, wave, SAMPLE_RATE, format="WAV")
    return base64.b64encode(buffer.getvalue()).decode()


def _chat(audio: list[str]) -> dict[str, Any]:
    parts = [{"type": "input_audio", "input_audio": {"data": a, "format": "wav"}} for a in audio]
    return {
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "Transcribe the audio."}, *parts]}
        ],
        "max_tokens": MAX_TOKENS,
    }


def _percentiles(latencies: list[float]) -> dict[str, float]:
    ordered = sorted(latencies)
    return {
        "p50_ms": statistics.median(ordered),
        "p95_ms": ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))],
        "max_ms": ordered[-1],
        "n": len(ordered),
    }


def load(url: str, body: dict[str, Any], clients: int, per_client: int) -> dict[str, Any]:
    """`clients` threads, each sending `per_client` requests in turn; latency of the answered ones."""

    def client(_: int) -> list[tuple[int, float, str | None]]:
        out = []
        with httpx.Client(timeout=600) as http:
            for _ in range(per_client):
                start = time.perf_counter()
                reply = http.post(f"{url}/v1/chat/completions", json=body)
                out.append(
                    (
                        reply.status_code,
                        (time.perf_counter() - start) * 1000,
                        reply.headers.get("Retry-After"),
                    )
                )
        return out

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        records = [r for rs in pool.map(client, range(clients)) for r in rs]
    wall = time.perf_counter() - start
    answered = [ms for status, ms, _ in records if status == 200]
    result: dict[str, Any] = {
        "clients": clients,
        "requests": len(records),
        "answered": len(answered),
        "statuses": {str(s): sum(1 for r in records if r[0] == s) for s in sorted({r[0] for r in records})},
        "requests_per_s": len(answered) / wall,
    }
    if answered:
        result["latency"] = _percentiles(answered)
    retry = sorted({int(r[2]) for r in records if r[0] == 429 and r[2]})
    if retry:
        result["retry_after_s"] = retry
    return result


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run(smoke: bool = False, model: str | None = None, requests: int = 64) -> dict[str, Any]:
    folder = tiny_checkpoint() if smoke else (model or DEFAULT_CHECKPOINT)
    aura = AuraModel.from_pretrained(folder)
    body = _chat([_wav(clips(2.0))])
    limits = Limits()
    result: dict[str, Any] = {
        "checkpoint": "tiny random (smoke)" if smoke else str(folder),
        "audio_seconds": 2.0,
        "max_tokens": MAX_TOKENS,
        "limits": {
            "max_audio_seconds": limits.max_audio_seconds,
            "max_audio_parts": limits.max_audio_parts,
            "max_request_tokens": limits.max_request_tokens,
        },
        "load": [],
    }
    rss_start = _rss_mb()
    with serving(aura) as url:
        httpx.post(f"{url}/v1/chat/completions", json=body, timeout=600)  # warm-up
        for clients in CLIENTS:
            level = load(url, body, clients, max(1, requests // clients) if clients > 1 else 4)
            print(f"{clients} clients: {level}")
            result["load"].append(level)
        # one request over the total-audio limit in many parts: refused before any model work
        many = _chat([_wav(clips(1.78))] * 200)
        batches = httpx.get(f"{url}/health").json()["batches"]
        start = time.perf_counter()
        refused = httpx.post(f"{url}/v1/chat/completions", json=many, timeout=600)
        result["over_limit_request"] = {
            "parts": 200,
            "audio_seconds": 356.0,
            "status": refused.status_code,
            "refused_in_ms": (time.perf_counter() - start) * 1000,
            "model_batches_run": httpx.get(f"{url}/health").json()["batches"] - batches,
        }
    result["peak_rss_mb"] = {"before": rss_start, "after": _rss_mb()}
    queue = 16
    with serving(aura, max_queue=queue) as url:
        level = load(url, body, 64, 1)
        level["max_queue"] = queue
        result["full_queue"] = level
        print(f"64 clients, --max-queue {queue}: {level}")
    write_result("serving_smoke" if smoke else "serving", result)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--smoke", action="store_true", help="a tiny random-weight checkpoint")
    parser.add_argument("--model", help=f"checkpoint (default: {DEFAULT_CHECKPOINT})")
    parser.add_argument(
        "--requests", type=int, default=64, help="requests per load level (16 and 64 clients)"
    )
    args = parser.parse_args()
    run(args.smoke, args.model, args.requests)


if __name__ == "__main__":
    main()
