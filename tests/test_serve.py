"""The OpenAI-compatible server, run for real on a localhost port and driven by the `openai` client
(chat with audio, streaming, transcription, concurrency) and by raw HTTP for every error case."""

from __future__ import annotations

import base64
import io
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import openai
import pytest
import soundfile as sf
import uvicorn
from conftest import aura_serve, tone_clip
from tiny_runs import tiny_runs

from aura.features import SAMPLE_RATE, load_audio
from aura.infer import AuraModel, GenerationRequest, GenerationResult
from aura.serve import create_app

KEY = "sk-test-key"
MAX_TOKENS = 10
MAX_BODY = 2 * 2**20
MAX_SECONDS = 20.0


def wav_bytes(seconds: float, seed: int = 0, fmt: str = "WAV") -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, tone_clip(seconds, seed), SAMPLE_RATE, format=fmt)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def model(tiny_run: Path) -> AuraModel:
    return AuraModel.from_pretrained(tiny_run)


@pytest.fixture(scope="module")
def server(model: AuraModel) -> Iterator[str]:
    """A real uvicorn server on a free 127.0.0.1 port, in a thread; yields its base URL."""
    app = create_app(
        model,
        model_name="aura-tiny",
        api_key=KEY,
        max_body_bytes=MAX_BODY,
        max_audio_seconds=MAX_SECONDS,
        default_max_tokens=MAX_TOKENS,
        batch_wait_seconds=0.05,
    )
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    uv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not uv.started:
        assert time.monotonic() < deadline and thread.is_alive(), "server did not start"
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    uv.should_exit = True
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def client(server: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server}/v1", api_key=KEY, max_retries=0)


def audio_message(audio: bytes, text: str = "transcribe what you hear", fmt: str = "wav") -> list[dict]:
    data = base64.b64encode(audio).decode()
    return [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": text},
                {"type": "input_audio", "input_audio": {"data": data, "format": fmt}},
            ],
        }
    ]


def chat_request(audio: bytes, max_tokens: int = MAX_TOKENS) -> GenerationRequest:
    """The request the server should build from `audio_message(audio)`: the oracle for HTTP answers."""
    return GenerationRequest(
        messages=[{"role": "user", "content": "transcribe what you hear\n<audio>"}],
        audio=[load_audio(audio)],
        max_new_tokens=max_tokens,
    )


def direct(model: AuraModel, audio: bytes) -> GenerationResult:
    return model.run_batch([chat_request(audio)])[0]


def test_chat_with_audio(client: openai.OpenAI, model: AuraModel) -> None:
    audio = wav_bytes(1.2, 1)
    answer = client.chat.completions.create(
        model="aura-tiny", messages=audio_message(audio), max_tokens=MAX_TOKENS
    )
    expected = direct(model, audio)
    assert answer.choices[0].message.content == expected.text
    assert answer.choices[0].finish_reason == expected.finish_reason
    assert answer.usage.prompt_tokens == expected.prompt_tokens > 20
    assert answer.usage.completion_tokens == expected.completion_tokens
    assert answer.usage.total_tokens == expected.prompt_tokens + expected.completion_tokens
    text_only = client.chat.completions.create(
        model="aura-tiny", messages=[{"role": "user", "content": "the cat sat"}], max_tokens=4
    )
    assert text_only.choices[0].message.content == model.generate(prompt="the cat sat", max_new_tokens=4)


@pytest.mark.parametrize("fmt", ["flac", "mp3"])
def test_chat_with_compressed_audio(client: openai.OpenAI, model: AuraModel, fmt: str) -> None:
    audio = wav_bytes(1.0, 4, fmt=fmt.upper())
    answer = client.chat.completions.create(
        model="aura-tiny", messages=audio_message(audio, fmt=fmt), max_tokens=MAX_TOKENS
    )
    assert answer.choices[0].message.content == direct(model, audio).text


def test_chat_streaming(client: openai.OpenAI, model: AuraModel) -> None:
    audio = wav_bytes(0.8, 2)
    chunks = list(
        client.chat.completions.create(
            model="aura-tiny",
            messages=audio_message(audio),
            max_tokens=MAX_TOKENS,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    expected = direct(model, audio)
    pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(pieces) > 1 and "".join(pieces) == expected.text
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == expected.finish_reason
    assert chunks[-1].usage.completion_tokens == expected.completion_tokens
    assert all(c.object == "chat.completion.chunk" and c.model == "aura-tiny" for c in chunks)


def test_transcription(client: openai.OpenAI, model: AuraModel) -> None:
    audio = wav_bytes(1.0, 3)
    result = client.audio.transcriptions.create(model="aura-tiny", file=("clip.wav", audio, "audio/wav"))
    assert result.text == model.generate(audio=audio, max_new_tokens=MAX_TOKENS).strip()
    text = client.audio.transcriptions.create(
        model="aura-tiny", file=("clip.wav", audio, "audio/wav"), response_format="text"
    )
    assert text.strip() == result.text


def test_sixteen_concurrent_chats_are_batched(client: openai.OpenAI, model: AuraModel, server: str) -> None:
    audios = [wav_bytes(0.5 + 0.1 * i, 10 + i) for i in range(16)]
    before = httpx.get(f"{server}/health").json()["batches"]

    def ask(audio: bytes) -> str:
        answer = client.chat.completions.create(
            model="aura-tiny", messages=audio_message(audio), max_tokens=6
        )
        return answer.choices[0].message.content

    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(ask, audios))
    batches = httpx.get(f"{server}/health").json()["batches"] - before
    assert batches < 16  # requests that arrived together shared a model call
    expected = [r.text for r in model.run_batch([chat_request(a, max_tokens=6) for a in audios])]
    assert answers == expected


def test_models_and_health(client: openai.OpenAI, server: str) -> None:
    assert [m.id for m in client.models.list().data] == ["aura-tiny"]
    assert httpx.get(f"{server}/health").json()["status"] == "ok"


def error_of(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    return error["message"]


def test_error_cases(server: str) -> None:
    url = f"{server}/v1/chat/completions"
    auth = {"Authorization": f"Bearer {KEY}"}
    good = audio_message(wav_bytes(0.5))

    def chat(messages: list[dict], headers: dict | None = None) -> httpx.Response:
        body = {"model": "aura-tiny", "messages": messages, "max_tokens": 2}
        return httpx.post(url, json=body, headers=auth if headers is None else headers, timeout=30)

    assert "Missing API key" in error_of(chat(good, headers={}), 401)
    assert "Incorrect API key" in error_of(chat(good, headers={"Authorization": "Bearer nope"}), 401)
    assert error_of(httpx.get(f"{server}/v1/models"), 401)

    bad = audio_message(b"")
    bad[0]["content"][1]["input_audio"]["data"] = "not base64!!"
    assert "messages[0].content[1].input_audio.data is not valid base64" in error_of(chat(bad), 400)

    garbage = audio_message(b"this is not audio at all" * 20)
    assert "not a readable audio file" in error_of(chat(garbage), 400)

    too_long = audio_message(wav_bytes(MAX_SECONDS + 2))
    assert "over the limit of 20 s" in error_of(chat(too_long), 400)

    wrong_format = audio_message(wav_bytes(0.5))
    wrong_format[0]["content"][1]["input_audio"]["format"] = "aiff"
    assert "supported formats are wav, mp3, flac" in error_of(chat(wrong_format), 400)

    overflow = httpx.post(url, json={"messages": good, "max_tokens": 5000}, headers=auth, timeout=30)
    assert "over the model's context of 2048 tokens" in error_of(overflow, 400)

    huge = audio_message(b"\0" * (MAX_BODY + 1))
    assert "larger than the server's limit" in error_of(chat(huge), 413)

    chunked = httpx.post(url, content=iter([b"{" + b" " * MAX_BODY, b"}"]), headers=auth, timeout=30)
    assert "larger than the server's limit" in error_of(chunked, 413)

    broken = httpx.post(url, content=b"{not json", headers={**auth, "Content-Type": "application/json"})
    assert "Invalid request" in error_of(broken, 400)
    assert "messages" in error_of(chat([]), 400)

    transcribe = f"{server}/v1/audio/transcriptions"
    no_file = httpx.post(transcribe, data={"model": "aura-tiny"}, headers=auth)
    assert "file" in error_of(no_file, 400)
    files = {"file": ("x.wav", b"RIFF garbage", "audio/wav")}
    assert "x.wav" in error_of(httpx.post(transcribe, data={"model": "a"}, files=files, headers=auth), 400)

    # after all that the server still answers
    assert chat(good).status_code == 200


def test_aura_serve_command(tmp_path_factory: pytest.TempPathFactory) -> None:
    """`aura serve` itself on a RUN_DIR from the real training loop, driven by the openai client."""
    run = tiny_runs(tmp_path_factory).aura
    with aura_serve("--model", str(run), "--api-key", KEY, timeout=90) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0)
        answer = client.chat.completions.create(
            model="run", messages=audio_message(wav_bytes(0.5)), max_tokens=3
        )
        assert answer.usage.completion_tokens >= 1 and answer.model == run.name


def test_aura_serve_dtype(tmp_path_factory: pytest.TempPathFactory) -> None:
    """`aura serve --dtype bfloat16` answers in bfloat16; an unknown dtype is one line and exit code 1."""
    run = tiny_runs(tmp_path_factory).aura
    with aura_serve("--model", str(run), "--dtype", "bfloat16", timeout=90) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="-", max_retries=0)
        answer = client.chat.completions.create(
            model="run", messages=audio_message(wav_bytes(0.5)), max_tokens=3
        )
        assert answer.usage.completion_tokens >= 1
    aura = str(Path(sys.executable).parent / "aura")
    bad = subprocess.run(
        [aura, "serve", "--model", str(run), "--dtype", "float8"], capture_output=True, text=True
    )
    assert bad.returncode == 1 and "choose one of float32, bfloat16, float16" in bad.stderr
    assert "Traceback" not in bad.stderr
