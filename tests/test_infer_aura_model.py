"""AuraModel over a checkpoint laid out as `aura train` writes it: KV-cache decoding checked against a
plain forward, batching, streaming, long audio, merged/unmerged LoRA, export, and the CLI doors."""

from __future__ import annotations

import math
import shutil
import sys
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import tone_clip
from tiny_runs import tiny_runs
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerFast
from typer.testing import CliRunner

from aura.audio.features import SAMPLE_RATE
from aura.cli.app import app, main
from aura.config import load_config
from aura.infer.aura_model import AuraModel
from aura.infer.decoding import GenerationRequest, RequestError
from aura.model.checkpoint import CheckpointError

MAX_NEW = 12


@pytest.fixture(scope="module")
def model(tiny_run: Path) -> AuraModel:
    return AuraModel.from_pretrained(tiny_run)


@pytest.fixture(scope="module")
def merged(tiny_run: Path) -> AuraModel:
    return AuraModel.from_pretrained(tiny_run / "final", merge=True)


@pytest.fixture(scope="module")
def wave() -> np.ndarray:
    return tone_clip(1.5, 11)


def _reference_tokens(model: AuraModel, request: GenerationRequest) -> list[int]:
    """Greedy tokens by re-running the whole sequence every step (no cache): the slow, obvious way."""
    batch = model.prefill([request])
    embed = model.student.llm.get_input_embeddings()
    embeds, mask = batch.embeds, batch.mask
    tokens: list[int] = []
    with torch.no_grad():
        for _ in range(request.max_new_tokens):
            positions = torch.arange(embeds.shape[1])[None]
            logits = model.student.llm(
                inputs_embeds=embeds, attention_mask=mask, position_ids=positions
            ).logits
            token = int(logits[0, -1].argmax())
            if token in model.stop_ids:
                break
            tokens.append(token)
            length = embeds.shape[1]
            embeds = torch.cat([embeds, embed(torch.tensor([[token]]))], dim=1)
            grown = torch.full((1, 1, length + 1, length + 1), torch.finfo(mask.dtype).min, dtype=mask.dtype)
            grown[..., :length, :length] = mask
            grown[..., length, :] = 0.0  # the new token sees everything before it and itself
            mask = grown
    return tokens


def test_cached_greedy_equals_uncached_forward(model: AuraModel, wave: np.ndarray) -> None:
    request = model.request(wave, "say it again", max_new_tokens=MAX_NEW)
    decoding = model.decoding([request])
    pieces = [piece for _, piece in decoding]
    (result,) = decoding.results()
    assert decoding.rows[0].tokens == _reference_tokens(model, request)
    assert "".join(pieces) == result.text
    assert result.completion_tokens == len(decoding.rows[0].tokens) > 0
    assert model.generate(audio=wave, prompt="say it again", max_new_tokens=MAX_NEW) == result.text


@pytest.mark.parametrize("arch", ["aura", "bridge"])
def test_bfloat16_end_to_end_agrees_with_float32(
    arch: str, tiny_run: Path, tmp_path_factory: pytest.TempPathFactory, wave: np.ndarray
) -> None:
    """dtype=torch.bfloat16: the audio module's input (float32 log-mel), the masks and the KV cache all run
    in bfloat16; cached decoding equals the uncached forward in that dtype; and the greedy answer starts
    with float32's first tokens. Later tokens may part: 8 mantissa bits flip near-ties, and this random
    LLM has many (benchmarks/dtype_agreement.py measures agreement on the shipped checkpoints)."""
    run = tiny_run if arch == "aura" else tiny_runs(tmp_path_factory).bridge
    # merged, so both dtypes run the same weights through the same matmuls (unmerged, bf16 rounds the
    # LoRA update on its own: one more near-tie flipper in a random LLM)
    fp32 = AuraModel.from_pretrained(run, merge=arch == "aura")
    bf16 = AuraModel.from_pretrained(run, dtype=torch.bfloat16, merge=arch == "aura")
    request = bf16.request(wave, "say it again", max_new_tokens=MAX_NEW)
    batch = bf16.prefill([request])
    assert batch.embeds.dtype == batch.mask.dtype == torch.bfloat16
    decoding = bf16.decoding([request])
    list(decoding)
    tokens = decoding.rows[0].tokens
    assert tokens == _reference_tokens(bf16, request)
    reference = fp32.decoding([fp32.request(wave, "say it again", max_new_tokens=MAX_NEW)])
    list(reference)
    assert tokens[:4] == reference.rows[0].tokens[:4]


def test_loading_and_decoding_raise_no_deprecation_warnings(tiny_run: Path, wave: np.ndarray) -> None:
    """transformers 5.24 renamed `past_key_values` to `cache` (the old name goes in 5.40) and deprecated
    `is_gradient_checkpointing`, which peft reads whenever it wraps a model."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = AuraModel.from_pretrained(tiny_run)
        model.generate(audio=wave, prompt="say it again", max_new_tokens=3)
    messages = [str(w.message) for w in caught]
    assert not [m for m in messages if "past_key_values" in m or "is_gradient_checkpointing" in m]


def test_sliding_window_llm_decodes_past_its_window(
    tiny_tokenizer: PreTrainedTokenizerFast, wave: np.ndarray
) -> None:
    """Gemma 3 style sliding-window layers: a prompt far longer than the window still decodes exactly."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    from aura.config import ModelConfig
    from aura.model.student import AuraStudent

    torch.manual_seed(4)
    config = Gemma3TextConfig(
        vocab_size=len(tiny_tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        sliding_window=8,
        layer_types=["sliding_attention", "full_attention"],
        initializer_range=0.3,
    )
    llm = Gemma3ForCausalLM(config).eval()
    student = AuraStudent.build(
        ModelConfig(llm="tiny-gemma", lora_layers=1), llm=llm, tokenizer=tiny_tokenizer
    )
    gemma = AuraModel(student.eval())
    request = gemma.request(wave, "say it again", max_new_tokens=MAX_NEW)
    decoding = gemma.decoding([request])
    list(decoding)
    assert decoding.rows[0].tokens == _reference_tokens(gemma, request)
    assert decoding.results()[0].prompt_tokens > 4 * config.sliding_window


def test_batch_rows_equal_single_requests(model: AuraModel, wave: np.ndarray) -> None:
    """Padding must not leak: each row of a mixed batch answers as if it were alone."""
    audios = [wave, tone_clip(0.6, 12), None]
    prompts = ["transcribe what you hear", None, "the cat sat on a mat"]
    batch = model.generate(audio=audios, prompt=prompts, max_new_tokens=MAX_NEW)
    single = [
        model.generate(audio=a, prompt=p, max_new_tokens=MAX_NEW)
        for a, p in zip(audios, prompts, strict=True)
    ]
    assert batch == single
    assert len(set(single)) == 3


def test_rows_finish_and_cancel_independently(model: AuraModel, wave: np.ndarray) -> None:
    events: list[tuple[str, int]] = []
    requests = [model.request(wave, max_new_tokens=2), model.request(wave, max_new_tokens=MAX_NEW)]
    results = model.run_batch(
        requests,
        on_text=lambda row, _: events.append(("text", row)) is None,
        on_done=lambda row, _: events.append(("done", row)),
    )
    assert results[0].completion_tokens == 2 and results[1].completion_tokens == MAX_NEW
    # the short row was handed out while the long one was still producing text
    assert events.index(("done", 0)) < max(i for i, event in enumerate(events) if event == ("text", 1))
    assert results[1].text.startswith(results[0].text)
    # a caller that hangs up after the first piece stops its row; the other row runs on
    hung_up = model.run_batch(requests, on_text=lambda row, _: row == 0)
    assert hung_up[1].completion_tokens < MAX_NEW and hung_up[0].text == results[0].text


def test_audio_sources_and_stream(model: AuraModel, wave: np.ndarray, tmp_path: Path) -> None:
    path = tmp_path / "clip.wav"
    sf.write(path, wave, SAMPLE_RATE)
    expected = model.generate(audio=wave, max_new_tokens=MAX_NEW)
    assert model.generate(audio=str(path), max_new_tokens=MAX_NEW) == expected
    assert model.generate(audio=path.read_bytes(), max_new_tokens=MAX_NEW) == expected
    pieces = list(model.stream(audio=path, max_new_tokens=MAX_NEW))
    assert len(pieces) > 1 and "".join(pieces) == expected


def test_sampling_is_seeded_and_top_p_narrows_to_greedy(model: AuraModel, wave: np.ndarray) -> None:
    options = {"audio": wave, "max_new_tokens": MAX_NEW, "temperature": 1.5}
    first = model.generate(**options, seed=3)
    assert model.generate(**options, seed=3) == first
    assert {model.generate(**options, seed=s) for s in range(4)} != {first}
    # top_p so small that only the most likely token survives: sampling collapses to greedy
    assert model.generate(**options, top_p=1e-6, seed=5) == model.generate(audio=wave, max_new_tokens=MAX_NEW)


def test_long_audio_is_windowed(model: AuraModel) -> None:
    """65 s = windows of 30 + 30 + 5 s, each embedded alone; LLM positions run on across them."""
    long = tone_clip(65.0, 13)
    text_only = model.run_batch([model.request(None, "x", max_new_tokens=1)])[0].prompt_tokens
    with_audio = model.run_batch([model.request(long, "x", max_new_tokens=4)])[0]
    k = model.student.audio.k
    audio_tokens = 2 * math.ceil(1500 / k) + math.ceil(250 / k)
    # the audio request also has the "\n" between placeholder and text: one more token at most
    assert with_audio.prompt_tokens - text_only - audio_tokens in (0, 1)
    assert with_audio.completion_tokens == 4
    # the server's cheap pre-check counts the same prompt length without running the model
    assert model.check(model.request(long, "x", max_new_tokens=4)) == with_audio.prompt_tokens
    with pytest.raises(ValueError, match="over the model's context of 2048 tokens"):
        model.check(model.request(long, "x", max_new_tokens=2000))


def test_text_only_runs_the_base_llm_unless_merged(
    model: AuraModel, merged: AuraModel, tiny_run: Path, wave: np.ndarray
) -> None:
    assert not model.merged and merged.merged  # LoRA stays a separate adapter by default
    # with audio, merged and unmerged LoRA give the same answer
    assert merged.generate(audio=wave, max_new_tokens=MAX_NEW) == model.generate(
        audio=wave, max_new_tokens=MAX_NEW
    )
    # without audio, the default (unmerged) = the untouched base LLM run by plain transformers
    base = AutoModelForCausalLM.from_pretrained(tiny_run / "base_llm").eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_run / "base_llm")
    messages = [{"role": "user", "content": "the red cat ran"}]
    ids = tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    out = base.generate(**ids, max_new_tokens=MAX_NEW, do_sample=False, eos_token_id=list(model.stop_ids))
    expected = tokenizer.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)
    assert model.generate(prompt="the red cat ran", max_new_tokens=MAX_NEW) == expected
    assert "".join(model.stream(prompt="the red cat ran", max_new_tokens=MAX_NEW)) == expected
    # a batch mixing text-only and audio requests: the text rows still get the base LLM
    mixed = model.generate(audio=[wave, None], prompt=[None, "the red cat ran"], max_new_tokens=MAX_NEW)
    assert mixed == [merged.generate(audio=wave, max_new_tokens=MAX_NEW), expected]
    assert (
        merged.generate(prompt="the red cat ran", max_new_tokens=MAX_NEW) != expected
    )  # merged, LoRA changes text too


def test_threads_sharing_the_model_keep_text_on_the_base_llm(
    model: AuraModel, merged: AuraModel, wave: np.ndarray
) -> None:
    """Switching the adapter off is model-wide: a text-only call in one thread must not run while an audio
    call in another has LoRA on (or switch it off under it)."""
    spoken = merged.generate(audio=wave, max_new_tokens=MAX_NEW)
    typed = model.generate(prompt="the red cat ran", max_new_tokens=MAX_NEW)
    with ThreadPoolExecutor(4) as pool:
        audio_calls = [pool.submit(model.generate, audio=wave, max_new_tokens=MAX_NEW) for _ in range(8)]
        text_calls = [
            pool.submit(lambda: "".join(model.stream(prompt="the red cat ran", max_new_tokens=MAX_NEW)))
            for _ in range(8)
        ]
        assert [c.result() for c in audio_calls] == [spoken] * 8
        assert [c.result() for c in text_calls] == [typed] * 8


def test_export_round_trips(model: AuraModel, tiny_run: Path, tmp_path: Path, wave: np.ndarray) -> None:
    expected = model.generate(audio=wave, max_new_tokens=MAX_NEW)
    source = AuraModel.from_pretrained(tiny_run, merge=False)
    source.export(tmp_path / "plain", merge=False)
    assert (
        AuraModel.from_pretrained(tmp_path / "plain").generate(audio=wave, max_new_tokens=MAX_NEW) == expected
    )
    source.export(tmp_path / "merged", merge=True)
    merged = AuraModel.from_pretrained(tmp_path / "merged")
    assert merged.generate(audio=wave, max_new_tokens=MAX_NEW) == expected
    # the LLM part of a merged export is a plain transformers model folder
    llm = AutoModelForCausalLM.from_pretrained(tmp_path / "merged")
    assert not any("lora" in name for name, _ in llm.named_parameters())
    with pytest.raises(FileExistsError, match="not empty"):
        source.export(tmp_path / "merged")


def test_bad_inputs_have_clear_errors(model: AuraModel, tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="not an AuRA checkpoint"):
        AuraModel.from_pretrained(tmp_path)
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        AuraModel.from_pretrained(tmp_path / "missing")
    with pytest.raises(ValueError, match="no such file"):
        model.generate(audio=tmp_path / "missing.wav")
    with pytest.raises(ValueError, match="2 audio entries but 3 prompts"):
        model.generate(audio=[None, None], prompt=["a", "b", "c"])
    # values out of range name their field before any model work; torch's seed range is taken whole
    for field, value, message in [
        ("seed", 2**64, "seed must be an integer from"),
        ("seed", -(2**63) - 1, "seed must be an integer from"),
        ("temperature", float("nan"), "temperature must be a finite number"),
        ("top_p", 0.0, "top_p must be in"),
        ("max_new_tokens", 0, "max_new_tokens must be at least 1"),
    ]:
        with pytest.raises(RequestError, match=message) as err:
            model.generate(prompt="the cat", **{field: value})
        assert err.value.field == field
    for seed in (2**64 - 1, -(2**63)):
        assert isinstance(model.generate(prompt="the cat", max_new_tokens=2, temperature=1.0, seed=seed), str)


def test_cli_generate_and_export(tiny_run: Path, tmp_path: Path, model: AuraModel, wave: np.ndarray) -> None:
    path = tmp_path / "clip.wav"
    sf.write(path, wave, SAMPLE_RATE)
    expected = model.generate(audio=wave, max_new_tokens=MAX_NEW)
    runner = CliRunner()
    base = ["generate", "--model", str(tiny_run), "--audio", str(path), "--max-new-tokens", str(MAX_NEW)]
    for extra in ([], ["--stream"]):
        result = runner.invoke(app, base + extra)
        assert result.exit_code == 0, result.output
        assert result.stdout == expected + "\n"
    result = runner.invoke(app, [*base, "--dtype", "bfloat16"])
    assert result.exit_code == 0 and result.stdout[:4] == expected[:4], result.output
    result = runner.invoke(app, [*base, "--dtype", "float8"])
    assert result.exit_code != 0 and "choose one of float32, bfloat16, float16" in str(result.exception)
    result = runner.invoke(
        app, ["export", "--model", str(tiny_run), "--out", str(tmp_path / "out"), "--merge"]
    )
    assert result.exit_code == 0, result.output
    assert (
        AuraModel.from_pretrained(tmp_path / "out").generate(audio=wave, max_new_tokens=MAX_NEW) == expected
    )


def test_cli_error_is_one_line(
    tiny_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(
        sys, "argv", ["aura", "generate", "--model", str(tiny_run), "--audio", str(tmp_path / "x.wav")]
    )
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 1
    err = " ".join(capsys.readouterr().err.split())  # rich wraps long lines
    assert "x.wav: no such file" in err and "Traceback" not in err
    cut = tmp_path / "cut.wav"
    sf.write(cut, tone_clip(2.0, 1), SAMPLE_RATE)
    cut.write_bytes(cut.read_bytes()[:3000])
    monkeypatch.setattr(sys, "argv", ["aura", "generate", "--model", str(tiny_run), "--audio", str(cut)])
    with pytest.raises(SystemExit):
        main()
    err = " ".join(capsys.readouterr().err.split())
    assert (
        "cut.wav: the file is truncated: its header declares 2.000 s of audio but it holds only 0.092 s"
        in err
    )


@pytest.mark.real
def test_real_smollm2_checkpoint(tmp_path: Path) -> None:
    """The packaged SmolLM2-135M-Instruct under an (untrained) AuRA checkpoint: real chat template, real
    end-of-turn token, real answer; and an audio request runs through the same loop."""
    from aura.config import ModelConfig
    from aura.model.student import AuraStudent

    config = ModelConfig(llm="smollm2-135m-instruct", lora_layers=4, lora_rank=8, lora_alpha=8)
    AuraStudent.build(config).save_pretrained(tmp_path / "final")
    model = AuraModel.from_pretrained(tmp_path, merge=False)
    answer = model.run_batch([model.request(None, "What is the capital of France?", max_new_tokens=24)])[0]
    assert "Paris" in answer.text and answer.finish_reason == "stop"
    heard = model.run_batch([model.request(tone_clip(2.0, 1), max_new_tokens=3)])[0]
    assert heard.completion_tokens == 3 or heard.finish_reason == "stop"
    assert heard.prompt_tokens > math.ceil(100 / model.student.audio.k)  # 2 s = 100 frames of audio tokens


def test_run_trained_by_aura_train(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> None:
    """A RUN_DIR from the real training loop: greedy answers agree merged, unmerged and after export."""
    run = tiny_runs(tmp_path_factory).aura
    wave = tone_clip(1.0, 21)
    unmerged_answer = AuraModel.from_pretrained(run, merge=False).generate(audio=wave, max_new_tokens=MAX_NEW)
    assert (
        AuraModel.from_pretrained(run, merge=True).generate(audio=wave, max_new_tokens=MAX_NEW)
        == unmerged_answer
    )
    result = CliRunner().invoke(
        app, ["export", "--model", str(run), "--out", str(tmp_path / "out"), "--merge"]
    )
    assert result.exit_code == 0, result.output
    exported = AuraModel.from_pretrained(tmp_path / "out")
    assert exported.generate(audio=wave, max_new_tokens=MAX_NEW) == unmerged_answer
    assert exported.train_config is not None  # RUN_DIR/config.yaml travels with the export


def test_run_system_prompt_is_used(
    tiny_run: Path, model: AuraModel, wave: np.ndarray, tmp_path: Path
) -> None:
    """Requests get the system prompt the run was trained with (data.system_prompt in RUN_DIR/config.yaml)."""
    shutil.copytree(tiny_run / "final", tmp_path / "final")
    load_config(None, ["data.system_prompt=You are a parrot."]).save(tmp_path / "config.yaml")
    trained = AuraModel.from_pretrained(tmp_path)
    assert trained.request(wave).messages[0] == {"role": "system", "content": "You are a parrot."}
    expected = model.generate(audio=wave, system="You are a parrot.", max_new_tokens=MAX_NEW)
    assert trained.generate(audio=wave, max_new_tokens=MAX_NEW) == expected
    assert expected != model.generate(audio=wave, max_new_tokens=MAX_NEW)
