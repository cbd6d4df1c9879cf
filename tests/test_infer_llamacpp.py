"""`--backend llama.cpp` on an `aura export --format gguf` of the shipped checkpoint (f16 base): the torch
backend's greedy answers on held-out speech, its attention pattern (bidirectional audio span), audio-expert
adapters set for the audio batch only, the CLI and the HTTP server, and clear errors."""

from __future__ import annotations

import base64
import sys
from pathlib import Path

import openai
import pytest
import torch
from conftest import aura_serve
from typer.testing import CliRunner

from aura.audio.features import load_audio
from aura.cli.app import app
from aura.config import ModelConfig
from aura.data.manifest import Example, read_manifest
from aura.data.synth import synthesize
from aura.infer.aura_model import AuraModel
from aura.infer.decoding import GenerationRequest
from aura.infer.gguf_export import LLM_FILE, export_gguf
from aura.infer.llamacpp import BackendError, LlamaCppModel
from aura.model.student import AuraStudent
from aura.registry import DEFAULT_CHECKPOINT

pytest.importorskip("llama_cpp", reason="the llamacpp extra is not installed (bash scripts/setup.sh)")
pytestmark = pytest.mark.real

PROMPTS = (None, "Listen to this: <audio> What did the speaker say?")  # audio first; text on both sides


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> list[Example]:
    root = tmp_path_factory.mktemp("speech")
    return read_manifest(synthesize("asr", 4, root, split="test", seed=5, progress=False))


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("gguf") / "aura-gguf"
    return export_gguf(AuraModel.from_pretrained(DEFAULT_CHECKPOINT), out, base_type="f16")


@pytest.fixture(scope="module")
def torch_model(folder: Path) -> AuraModel:
    return AuraModel.from_pretrained(folder)


@pytest.fixture(scope="module")
def llama_model(folder: Path) -> LlamaCppModel:
    return LlamaCppModel.from_pretrained(folder, threads=1)


def first_logits(model: AuraModel, request: GenerationRequest) -> torch.Tensor:
    """The torch student's next-token logits after the prompt (the mask `Decoding` prefills with)."""
    batch = model.prefill([request])
    with torch.inference_mode(), model.student.positions(batch.audio_mask):
        out = model.student.llm(
            inputs_embeds=batch.embeds, attention_mask=batch.mask, position_ids=batch.positions
        )
    return out.logits[0, -1]


def test_greedy_answers_are_the_torch_backends(
    clips: list[Example], torch_model: AuraModel, llama_model: LlamaCppModel
) -> None:
    """Every held-out clip, transcribed and with text before and after the audio, and a text-only request
    (the base LLM, adapter off): the same tokens, prompt length and finish reason as torch."""
    requests = [torch_model.request(c.audio, prompt, max_new_tokens=24) for c in clips for prompt in PROMPTS]
    requests.append(torch_model.request(prompt="What is the capital of France?", max_new_tokens=24))
    expected = torch_model.run_batch(requests)
    assert llama_model.run_batch(requests) == expected
    assert "Paris" in expected[-1].text


def test_audio_span_attends_bidirectionally(
    clips: list[Example], torch_model: AuraModel, llama_model: LlamaCppModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """llama.cpp's first logits are the torch student's (f16 weights: within 0.1); decoding the audio batch
    with causal attention, as a plain prompt would, moves them by far more."""
    request = torch_model.request(clips[0].audio, PROMPTS[1], max_new_tokens=1)
    reference = first_logits(torch_model, request)
    llama_model._prefill(request)
    assert (llama_model._logits()[0] - reference).abs().max() < 0.1
    monkeypatch.setattr(llama_model.lib, "llama_set_causal_attn", lambda ctx, causal: None)
    llama_model._prefill(request)
    assert (llama_model._logits()[0] - reference).abs().max() > 1.0


def test_audio_expert_adapter_is_set_for_the_audio_batch_only(
    clips: list[Example], folder: Path, tmp_path: Path
) -> None:
    """An audio-expert checkpoint (random LoRA on 4 blocks) agrees with torch, whose adapters act at the
    audio positions only; the same adapter switched off, or on for the whole prompt, does not."""
    torch.manual_seed(0)
    config = ModelConfig(
        llm="smollm2-135m-instruct", lora_layers=4, lora_rank=8, lora_alpha=16, adapter="audio-expert"
    )
    student = AuraStudent.build(config)
    with torch.no_grad():
        for name, param in student.llm.named_parameters():
            if "lora_B" in name:
                param.normal_(0.0, 0.05)
    student.save_pretrained(tmp_path / "final")
    expert = AuraModel.from_pretrained(tmp_path / "final")
    export_gguf(expert, tmp_path / "gguf", base_gguf=folder / LLM_FILE, base_type="source")
    llama = LlamaCppModel.from_pretrained(tmp_path / "gguf", threads=1)
    request = expert.request(clips[1].audio, PROMPTS[1], max_new_tokens=8)
    reference = first_logits(expert, request)
    llama._prefill(request)
    assert (llama._logits()[0] - reference).abs().max() < 0.1
    llama.expert = False  # plain-LoRA policy: adapter on for the whole request
    llama._prefill(request)
    assert (llama._logits()[0] - reference).abs().max() > 0.3
    with torch.inference_mode(), expert.student.llm.disable_adapter():
        assert (first_logits(expert, request) - reference).abs().max() > 0.3
    llama.expert = True
    assert llama.run_batch([request]) == expert.run_batch([request])


def test_cli_generate_and_serve_with_llama_cpp(
    clips: list[Example], folder: Path, torch_model: AuraModel
) -> None:
    """`aura generate --backend llama.cpp` prints the torch answer; `aura serve --backend llama.cpp` answers
    an OpenAI client's spoken chat message with it too."""
    clip = clips[2]
    expected = torch_model.generate(clip.audio, max_new_tokens=24)
    args = ["generate", "--model", str(folder), "--audio", clip.audio, "--max-new-tokens", "24"]
    result = CliRunner().invoke(app, [*args, "--backend", "llama.cpp", "--stream"])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == expected.strip()
    spoken = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "transcribe what you hear"},
                {
                    "type": "input_audio",
                    "input_audio": {
                        "data": base64.b64encode(Path(clip.audio).read_bytes()).decode(),
                        "format": "wav",
                    },
                },
            ],
        }
    ]
    over_http = GenerationRequest(
        messages=[{"role": "user", "content": "transcribe what you hear\n<audio>"}],
        audio=[load_audio(clip.audio)],
        max_new_tokens=24,
    )
    with aura_serve("--model", str(folder), "--backend", "llama.cpp") as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0)
        reply = client.chat.completions.create(model="aura", messages=spoken, max_tokens=24, temperature=0)
    assert reply.choices[0].message.content == torch_model.run_batch([over_http])[0].text


def test_clear_errors(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(BackendError, match="not a llama.cpp export .*`aura export --format gguf"):
        LlamaCppModel.from_pretrained(DEFAULT_CHECKPOINT)
    runner = CliRunner()
    result = runner.invoke(
        app, ["generate", "--model", str(folder), "--backend", "llama.cpp", "--dtype", "bfloat16"]
    )
    assert isinstance(result.exception, BackendError) and "--gguf-type" in str(result.exception)
    result = runner.invoke(app, ["generate", "--model", str(folder), "--backend", "onnx", "--prompt", "hi"])
    assert result.exit_code == 2 and "choose torch or llama.cpp" in result.output
    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # as if the optional extra were not installed
    with pytest.raises(BackendError, match=r"scripts/setup.sh.*aura-speech\[llamacpp\]"):
        LlamaCppModel.from_pretrained(folder)
