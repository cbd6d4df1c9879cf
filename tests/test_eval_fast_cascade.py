"""`cascade-fast` on the registry's own files: faster-whisper (CTranslate2 int8) and llama.cpp (GGUF), the
torch systems' prompt, a fresh KV cache per request, and clear errors for what it cannot run."""

from __future__ import annotations

import sys

import pytest

from aura.audio.features import load_audio
from aura.data.manifest import read_manifest
from aura.data.synth import synthesize
from aura.eval.fast_cascade import FastWhisper, LlamaCppChat
from aura.eval.items import EvalError, EvalItem
from aura.eval.systems import ChatLLM, SystemFactory, chat_prompt_ids
from aura.metrics import clip_wer
from aura.model.llm import load_llm

LLM, WHISPER = "smollm2-135m-instruct", "whisper-tiny.en"


@pytest.fixture(scope="module")
def chat() -> LlamaCppChat:
    return LlamaCppChat(LLM, max_new_tokens=24)


@pytest.mark.real
def test_llama_cpp_answers_like_the_torch_llm(chat: LlamaCppChat) -> None:
    """The same chat template, default system prompt and token ids as `ChatLLM`; greedy Q4_1 in llama.cpp
    and the dequantized float32 weights in torch give the same short answer."""
    torch_chat = ChatLLM(*load_llm(LLM), max_new_tokens=24)
    prompt = "What is the capital of France? Answer in one word."
    assert chat_prompt_ids(chat.tokenizer, prompt) == chat_prompt_ids(torch_chat.tokenizer, prompt)
    assert "You are a helpful AI assistant" in chat.tokenizer.decode(chat_prompt_ids(chat.tokenizer, prompt))
    fast, reference = chat.generate([prompt])[0], torch_chat.generate([prompt])[0]
    assert "Paris" in fast and "Paris" in reference


@pytest.mark.real
def test_every_request_pays_its_whole_prefill(chat: LlamaCppChat) -> None:
    """llama-cpp-python would reuse the previous prompt's cached prefix; each request resets it, so a
    repeated prompt is evaluated in full again and answers the same."""
    from llama_cpp import llama_perf_context

    prompt = "Name a colour."
    first = "".join(chat.stream(prompt))
    evaluated_first = llama_perf_context(chat.llama.ctx).n_p_eval
    second = "".join(chat.stream(prompt))
    assert second == first and first
    assert llama_perf_context(chat.llama.ctx).n_p_eval - evaluated_first >= len(
        chat_prompt_ids(chat.tokenizer, prompt)
    )


@pytest.mark.real
def test_cascade_fast_transcribes_and_answers(tmp_path) -> None:
    example = read_manifest(synthesize("asr", 1, tmp_path, split="test", seed=4, workers=1, progress=False))[
        0
    ]
    wave = load_audio(example.audio)
    assert clip_wer(example.response, FastWhisper(WHISPER).transcribe(wave)) < 0.5
    system = SystemFactory(llm=LLM, teacher=WHISPER, max_new_tokens=8).build("cascade-fast")
    item = EvalItem(
        id="q", task="asr", prompt="Repeat what was said: <audio>", response="", transcript="", wave=wave
    )
    pieces = list(system.stream(item))
    assert pieces and "".join(pieces) == system.answer([item])[0]


def test_refuses_what_it_cannot_run(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(EvalError, match="registry's gguf files; '/nowhere' is not"):
        LlamaCppChat("/nowhere")
    with pytest.raises(EvalError, match="registry's ct2-whisper files"):
        FastWhisper(LLM)
    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # as if the optional extra were not installed
    with pytest.raises(EvalError, match="scripts/setup.sh"):
        LlamaCppChat(LLM)
