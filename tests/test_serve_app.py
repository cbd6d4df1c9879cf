"""The OpenAI-compatible server, run for real on a localhost port and driven by the `openai` client
(chat with audio, streaming, transcription, concurrency) and by raw HTTP for every error case."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import hypothesis.strategies as st
import numpy as np
import openai
import pytest
import soundfile as sf
import uvicorn
from conftest import aura_serve, tone_clip
from fastapi import FastAPI
from hypothesis import HealthCheck, event, given, settings
from tiny_runs import tiny_runs

from aura.audio.features import SAMPLE_RATE, load_audio
from aura.config import load_config
from aura.infer.aura_model import AuraModel
from aura.infer.decoding import (
    GenerationRequest,
    GenerationResult,
    RequestError,
    reference_answers,
)
from aura.model.llm import load_llm
from aura.registry import DEFAULT_CHECKPOINT, resolve_checkpoint
from aura.serve.app import create_app
from aura.serve.batcher import Batcher
from aura.serve.limits import Limits

KEY = "sk-test-key"
MAX_TOKENS = 10
MAX_BODY = 2 * 2**20
MAX_SECONDS = 20.0
MAX_PARTS = 6
MAX_REQUEST_TOKENS = 1500


def wav_bytes(seconds: float, seed: int = 0, fmt: str = "WAV") -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, tone_clip(seconds, seed), SAMPLE_RATE, format=fmt)
    return buffer.getvalue()


def wav_bytes_of(wave: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, wave, SAMPLE_RATE, format="WAV")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def model(tiny_run: Path) -> AuraModel:
    return AuraModel.from_pretrained(tiny_run)


@contextlib.contextmanager
def running(app: FastAPI) -> Iterator[str]:
    """A real uvicorn server for `app` on a free 127.0.0.1 port, in a thread; yields its base URL."""
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
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        uv.should_exit = True
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def server(model: AuraModel) -> Iterator[str]:
    app = create_app(
        model,
        model_name="aura-tiny",
        api_key=KEY,
        max_body_bytes=MAX_BODY,
        limits=Limits(MAX_SECONDS, MAX_PARTS, MAX_REQUEST_TOKENS),
        default_max_tokens=MAX_TOKENS,
        batch_wait_seconds=0.05,
    )
    with running(app) as url:
        yield url


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


def test_voice_page_is_served_without_a_key(server: str) -> None:
    """The page and its two files come from the package; only its /v1 requests need the key."""
    page = httpx.get(f"{server}/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    for asset, kind in (("app.js", "javascript"), ("style.css", "text/css")):
        assert f"/web/{asset}" in page.text
        served = httpx.get(f"{server}/web/{asset}")
        assert served.status_code == 200 and kind in served.headers["content-type"] and served.text.strip()
    assert "not found" in error_of(httpx.get(f"{server}/web/missing.js"), 404).lower()


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
    assert "over the limit of 20 s per request" in error_of(chat(too_long), 413)

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


def test_a_bad_request_never_fails_its_neighbours(
    client: openai.OpenAI, model: AuraModel, server: str
) -> None:
    """8 concurrent chats, one with a seed torch cannot take (2^64): 7 answers, one 400 naming `seed`."""
    audios = [wav_bytes(0.5 + 0.1 * i, 30 + i) for i in range(8)]

    def ask(index: int) -> httpx.Response:
        body = {"messages": audio_message(audios[index]), "max_tokens": 6, "seed": 2**64 if index == 3 else 7}
        return httpx.post(
            f"{server}/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {KEY}"}, timeout=60
        )

    with ThreadPoolExecutor(8) as pool:
        replies = list(pool.map(ask, range(8)))
    assert [r.status_code for r in replies] == [200, 200, 200, 400, 200, 200, 200, 200]
    assert replies[3].json()["error"]["param"] == "seed" and "seed" in error_of(replies[3], 400)
    expected = [r.text for r in model.run_batch([chat_request(a, max_tokens=6) for a in audios])]
    got = [r.json()["choices"][0]["message"]["content"] for i, r in enumerate(replies) if i != 3]
    assert got == [e for i, e in enumerate(expected) if i != 3]


def test_a_failing_batch_is_retried_request_by_request(model: AuraModel) -> None:
    """A request that reaches the model and breaks it (here: a seed out of torch's range, given through the
    Python API, which skips the server's schema) fails alone; its batch-mates get their own answers."""
    audios = [wav_bytes(0.6, 50 + i) for i in range(4)]
    requests = [chat_request(a, max_tokens=4) for a in audios]
    requests[2].seed = 2**64

    async def run() -> tuple[list[GenerationResult | BaseException], list[int]]:
        batcher = Batcher(model, max_batch=8, wait_seconds=0.2)
        await batcher.start()
        jobs = [batcher.submit(r, stream=False) for r in requests]
        results = await asyncio.gather(*(job.done for job in jobs), return_exceptions=True)
        await batcher.stop()
        return results, batcher.batch_sizes

    results, sizes = asyncio.run(run())
    assert sizes == [4]  # one batch, then its requests one by one
    assert isinstance(results[2], RequestError) and results[2].field == "seed"
    good = [requests[i] for i in (0, 1, 3)]
    assert [r.text for r in results if isinstance(r, GenerationResult)] == [
        r.text for r in model.run_batch(good)
    ]


def test_limits_cannot_be_split_around(server: str) -> None:
    """The audio limit counts every part of a request; parts and tokens have their own limits."""
    url = f"{server}/v1/chat/completions"
    auth = {"Authorization": f"Bearer {KEY}"}
    part = audio_message(wav_bytes(MAX_SECONDS / 4 + 0.5))[0]["content"][1]
    many = [{"role": "user", "content": [{"type": "text", "text": "hi"}, *[part] * 5]}]
    started = time.monotonic()
    reply = httpx.post(url, json={"messages": many, "max_tokens": 2}, headers=auth, timeout=30)
    message = error_of(reply, 413)
    assert "messages[0].content[4].input_audio" in message and "over the limit of 20 s per request" in message
    assert time.monotonic() - started < 5
    too_many = [
        {"role": "user", "content": [audio_message(wav_bytes(0.2))[0]["content"][1]] * (MAX_PARTS + 1)}
    ]
    reply = httpx.post(url, json={"messages": too_many, "max_tokens": 2}, headers=auth, timeout=30)
    assert f"{MAX_PARTS + 1} audio parts, over the server's limit of {MAX_PARTS}" in error_of(reply, 413)
    long_text = [{"role": "user", "content": "the cat sat " * 480}]
    reply = httpx.post(url, json={"messages": long_text, "max_tokens": 100}, headers=auth, timeout=30)
    assert f"over the server's limit of {MAX_REQUEST_TOKENS} per request" in error_of(reply, 413)
    assert reply.json()["error"]["param"] == "max_tokens"


def test_full_queue_answers_429_with_retry_after(model: AuraModel) -> None:
    app = create_app(model, max_queue=2, default_max_tokens=MAX_TOKENS, batch_wait_seconds=0.05)
    with running(app) as url:
        body = {"messages": audio_message(wav_bytes(1.0, 60)), "max_tokens": 8}

        def ask(_: int) -> httpx.Response:
            return httpx.post(f"{url}/v1/chat/completions", json=body, timeout=60)

        with ThreadPoolExecutor(24) as pool:
            replies = list(pool.map(ask, range(24)))
        codes = [r.status_code for r in replies]
        assert set(codes) == {200, 429} and codes.count(200) >= 2, codes
        busy = next(r for r in replies if r.status_code == 429)
        assert int(busy.headers["Retry-After"]) >= 1 and "--max-queue" in error_of(busy, 429)
        health = httpx.get(f"{url}/health").json()
        assert health["pending"] == 0 and health["refused"] == codes.count(429)


def test_audio_integrity_and_request_shape(server: str) -> None:
    url = f"{server}/v1/chat/completions"
    auth = {"Authorization": f"Bearer {KEY}"}

    def chat(messages: list[dict]) -> httpx.Response:
        return httpx.post(url, json={"messages": messages, "max_tokens": 2}, headers=auth, timeout=30)

    truncated = wav_bytes(2.0, 5)[:3000]
    message = error_of(chat(audio_message(truncated)), 400)
    assert "truncated" in message and "declares 2.000 s" in message and "only 0.092 s" in message
    files = {"file": ("cut.wav", truncated, "audio/wav")}
    reply = httpx.post(f"{server}/v1/audio/transcriptions", data={"model": "a"}, files=files, headers=auth)
    assert "cut.wav: the file is truncated" in error_of(reply, 400)
    mislabelled = chat(audio_message(wav_bytes(0.5), fmt="mp3"))
    assert "declared as 'mp3' but the data is wav" in error_of(mislabelled, 400)
    assert mislabelled.json()["error"]["param"] == "messages[0].content[1].input_audio.format"
    null = chat([{"role": "user", "content": None}])
    assert "messages[0].content is null" in error_of(null, 400)
    silent = {"file": ("quiet.wav", wav_bytes_of(np.zeros(1500, dtype=np.float32)), "audio/wav")}
    reply = httpx.post(f"{server}/v1/audio/transcriptions", data={"model": "a"}, files=silent, headers=auth)
    assert reply.status_code == 200 and reply.json()["text"] == ""
    wrong_method = httpx.get(url, headers=auth)
    assert wrong_method.status_code == 405 and wrong_method.headers["Allow"] == "POST"
    schema = httpx.get(f"{server}/openapi.json").json()
    for route in ("/v1/chat/completions", "/v1/audio/transcriptions"):
        responses = schema["paths"][route]["post"]["responses"]
        assert "422" not in responses and {"200", "400", "401", "413", "429"} <= set(responses)
    assert "HTTPValidationError" not in schema["components"]["schemas"]


def test_aura_serve_command(tmp_path_factory: pytest.TempPathFactory) -> None:
    """`aura serve` itself on a RUN_DIR from the real training loop, driven by the openai client."""
    run = tiny_runs(tmp_path_factory).aura
    with aura_serve("--model", str(run), "--api-key", KEY, timeout=90) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0)
        answer = client.chat.completions.create(
            model="run", messages=audio_message(wav_bytes(0.5)), max_tokens=3
        )
        assert answer.usage.completion_tokens >= 1 and answer.model == run.name


TEXT_QUESTIONS = ("What is the capital of France?", "What is 7 times 8?", "List three colors.")


def base_llm_answers(max_new_tokens: int) -> list[tuple[str, int]]:
    """(text, token count) of the shipped checkpoint's base LLM answering `TEXT_QUESTIONS` greedily, run by
    plain transformers on the same messages through the same chat template."""
    config = load_config(resolve_checkpoint(DEFAULT_CHECKPOINT) / "config.yaml")
    return reference_answers(*load_llm(config.model.llm), TEXT_QUESTIONS, max_new_tokens)


@pytest.mark.real
def test_text_chat_through_aura_serve_is_the_base_llm(tmp_path: Path) -> None:
    """`aura serve` with default options on the shipped checkpoint: text-only chat, plain and streamed, and
    text-only requests batched together with a spoken one, answer token for token like the base LLM."""
    max_tokens = 24
    expected = base_llm_answers(max_tokens)
    assert "Paris" in expected[0][0]
    spoken = tmp_path / "question.wav"
    subprocess.run(["espeak-ng", "-w", str(spoken), "What is the capital of Peru?"], check=True)
    with aura_serve() as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0)

        def ask(question: str) -> tuple[str, int]:
            answer = client.chat.completions.create(
                model=DEFAULT_CHECKPOINT,
                messages=[{"role": "user", "content": question}],
                max_tokens=max_tokens,
            )
            return answer.choices[0].message.content, answer.usage.completion_tokens

        def ask_streaming(question: str) -> tuple[str, int]:
            chunks = list(
                client.chat.completions.create(
                    model=DEFAULT_CHECKPOINT,
                    messages=[{"role": "user", "content": question}],
                    max_tokens=max_tokens,
                    stream=True,
                    stream_options={"include_usage": True},
                )
            )
            text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
            return text, chunks[-1].usage.completion_tokens

        assert [ask(q) for q in TEXT_QUESTIONS] == expected
        assert [ask_streaming(q) for q in TEXT_QUESTIONS] == expected
        # text-only requests arriving with a spoken one: the server batches them, the text rows stay the base LLM
        before = httpx.get(f"{url}/health").json()["batches"]
        spoken_message = audio_message(spoken.read_bytes(), "Answer the spoken question in a few words.")
        with ThreadPoolExecutor(4) as pool:
            heard = pool.submit(
                client.chat.completions.create,
                model=DEFAULT_CHECKPOINT,
                messages=spoken_message,
                max_tokens=8,
            )
            texts = list(pool.map(ask_streaming, TEXT_QUESTIONS))
        assert texts == expected
        assert heard.result().choices[0].message.content.strip()
        assert httpx.get(f"{url}/health").json()["batches"] - before < 1 + len(TEXT_QUESTIONS)


# ---------------------------------------------------------------- bounded fuzzing (hypothesis), no 5xx allowed

FUZZ = settings(
    max_examples=60,
    deadline=None,
    derandomize=True,  # the same cases every run: a failure is reproducible
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
_WAV = wav_bytes(0.4, 70)
_AUDIO_DATA = st.sampled_from(
    [
        base64.b64encode(_WAV).decode(),
        base64.b64encode(_WAV[:3000]).decode(),  # truncated
        base64.b64encode(b"RIFF" + bytes(60)).decode(),
        base64.b64encode(wav_bytes_of(np.zeros(800, dtype=np.float32))).decode(),  # short and silent
        "",
        "%%% not base64",
    ]
) | st.binary(max_size=64).map(lambda b: base64.b64encode(b).decode())
_NUMBER = st.one_of(
    st.none(),
    st.integers(min_value=-3, max_value=6),
    st.sampled_from([2**31, 2**63, 2**64, -(2**63) - 1, 10**30]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=3),
    st.booleans(),
)
_PART = st.fixed_dictionaries(
    {"type": st.sampled_from(["text", "input_audio", "image_url", ""])},
    optional={
        "text": st.one_of(st.none(), st.text(max_size=20), st.just("<audio>")),
        "input_audio": st.one_of(
            st.none(),
            st.fixed_dictionaries(
                {"data": _AUDIO_DATA},
                optional={"format": st.sampled_from(["wav", "mp3", "flac", "aiff", "WAV", ""])},
            ),
        ),
    },
)
_MESSAGE = st.fixed_dictionaries(
    {"role": st.sampled_from(["user", "system", "assistant", "developer", "tool", "robot"])},
    optional={
        "content": st.one_of(st.none(), st.text(max_size=30), st.lists(_PART, max_size=3), st.integers())
    },
)
_CHAT = st.fixed_dictionaries(
    {"messages": st.one_of(st.lists(_MESSAGE, max_size=3), st.none(), st.text(max_size=5))},
    optional={
        "max_tokens": _NUMBER,
        "max_completion_tokens": _NUMBER,
        "temperature": _NUMBER,
        "top_p": _NUMBER,
        "seed": _NUMBER,
        "stream": st.one_of(st.booleans(), st.text(max_size=2)),
        "stream_options": st.one_of(st.none(), st.fixed_dictionaries({"include_usage": st.booleans()})),
        "model": st.text(max_size=8),
    },
)
_GOOD_MESSAGES = st.sampled_from(
    [
        [{"role": "user", "content": "the cat sat"}],
        [{"role": "system", "content": "be brief"}, {"role": "user", "content": "a dog ran"}],
        audio_message(_WAV),
        audio_message(_WAV) + [{"role": "assistant", "content": None}, {"role": "user", "content": "again"}],
    ]
)
_SMALL = st.one_of(st.none(), st.integers(min_value=1, max_value=4), _NUMBER)
_NEAR_VALID = st.fixed_dictionaries(  # accepted requests with one or two odd values: the edges of the schema
    {"messages": _GOOD_MESSAGES, "max_tokens": st.integers(min_value=1, max_value=4)},
    optional={
        "temperature": st.one_of(st.floats(min_value=0, max_value=2), _NUMBER),
        "top_p": st.one_of(st.floats(min_value=0, max_value=1), _NUMBER),
        "seed": st.one_of(st.integers(min_value=-(2**64), max_value=2**65), _NUMBER),
        "max_completion_tokens": _SMALL,
        "stream": st.booleans(),
        "stream_options": st.fixed_dictionaries({"include_usage": st.booleans()}),
        "n": st.integers(),
    },
)
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=10,
)


def _assert_handled(reply: httpx.Response) -> None:
    event(f"HTTP {reply.status_code}")  # the spread of answers: pytest --hypothesis-show-statistics
    assert reply.status_code < 500, reply.text
    if reply.status_code >= 400:
        assert set(reply.json()["error"]) == {"message", "type", "param", "code"}
    elif reply.headers["content-type"].startswith("text/event-stream"):
        assert '"server_error"' not in reply.text and reply.text.rstrip().endswith("data: [DONE]")


@settings(FUZZ, max_examples=90)
@given(body=_NEAR_VALID | _CHAT | _JSON)
def test_fuzzed_chat_requests_never_get_a_5xx(server: str, body: object) -> None:
    if isinstance(body, dict) and isinstance(body.get("max_tokens"), int) and body["max_tokens"] > 6:
        body["max_tokens"] = 6  # keep the accepted ones short: the point is the refusals
    reply = httpx.post(
        f"{server}/v1/chat/completions",
        content=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"},
        timeout=60,
    )
    _assert_handled(reply)


@settings(FUZZ, max_examples=30)
@given(
    audio=st.sampled_from([_WAV, _WAV[:3000], b"", b"RIFF", wav_bytes(0.3, 71, fmt="FLAC")])
    | st.binary(max_size=80),
    form=st.dictionaries(
        st.sampled_from(["model", "prompt", "response_format", "temperature", "language"]),
        st.text(max_size=6),
    ),
)
def test_fuzzed_transcriptions_never_get_a_5xx(server: str, audio: bytes, form: dict[str, str]) -> None:
    reply = httpx.post(
        f"{server}/v1/audio/transcriptions",
        data=form,
        files={"file": ("clip.wav", audio, "audio/wav")},
        headers={"Authorization": f"Bearer {KEY}"},
        timeout=60,
    )
    _assert_handled(reply)


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
