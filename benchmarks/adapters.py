"""What each adapter design costs at inference: one prefill (5-s clip + a short prompt) and decoding,
SmolLM2-135M-Instruct, interleaved rounds, ratios within this run.

Designs (random LoRA weights of each shape: the cost depends on the shapes, not on what was learned):
- `lora4`: LoRA on the first 4 blocks (the shipped design), merged into the weights;
- `audio-expert`: LoRA on all 30 blocks acting at audio positions only, never mergeable;
- `vora`: one LoRA on 24 of 30 blocks at rank 256, merged (VoRA's shape, scaled to this LLM);
- `vora-unmerged`: the same kept apart (what the text-keeping path costs for a plain-LoRA design).
Each also reports its adapter's parameter count and the FLOPs it adds per token where it acts.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from aura.config import ModelConfig
from aura.infer.aura_model import AuraModel
from aura.model.llm import load_llm
from aura.model.student import AuraStudent
from benchmarks.common import summarize, write_result

DESIGNS = {
    "lora4": ({"lora_layers": 4}, True),
    "audio-expert": ({"lora_layers": 30, "adapter": "audio-expert"}, False),
    "vora": ({"lora_layers": 24, "lora_rank": 256, "lora_alpha": 256}, True),
    "vora-unmerged": ({"lora_layers": 24, "lora_rank": 256, "lora_alpha": 256}, False),
}


def _model(options: dict, merge: bool) -> tuple[AuraModel, int]:
    torch.manual_seed(0)
    llm, tokenizer = load_llm("smollm2-135m-instruct")
    from aura.teacher.whisper import load_teacher

    student = AuraStudent.build(ModelConfig(**options), load_teacher("whisper-tiny.en"), llm, tokenizer)
    with torch.no_grad():
        for name, param in student.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.01)
    adapter = sum(p.numel() for n, p in student.named_parameters() if "lora_" in n)
    if merge:
        student.merge_lora()
    return AuraModel(student.eval()), adapter


def _time_to_first_token(model: AuraModel, clip: np.ndarray) -> float:
    start = time.perf_counter()
    for _ in model.stream(
        audio=clip, prompt="<audio>\nAnswer the question in a few words.", max_new_tokens=1
    ):
        break
    return (time.perf_counter() - start) * 1000


def run(rounds: int = 5, decode_tokens: int = 16) -> None:
    torch.set_num_threads(2)
    rng = np.random.default_rng(0)
    clip = (0.1 * rng.standard_normal(5 * 16000)).astype(np.float32)
    models = {name: _model(*spec) for name, spec in DESIGNS.items()}
    ttft: dict[str, list[float]] = {name: [] for name in models}
    decode: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(rounds):
        for name, (model, _) in models.items():
            ttft[name].append(_time_to_first_token(model, clip))
            start = time.perf_counter()
            model.generate(audio=clip, prompt="<audio>", max_new_tokens=decode_tokens)
            decode[name].append((time.perf_counter() - start) * 1000)
    base = summarize(ttft["lora4"])["median_ms"]
    results = {}
    for name, (_, adapter) in models.items():
        first = summarize(ttft[name])
        results[name] = {
            "adapter_params": adapter,
            # an unmerged LoRA does one multiply-add per weight per token where it acts: every token for
            # plain LoRA, the prompt's audio tokens for audio-expert (its decoding runs the adapters off)
            "extra_gflop_per_token": 0.0 if DESIGNS[name][1] else 2 * adapter / 1e9,
            "ttft": first,
            "ttft_vs_lora4": first["median_ms"] / base,
            "generate_16_tokens": summarize(decode[name]),
        }
    write_result("adapters", {"rounds": rounds, "clip_seconds": 5.0, "designs": results})


if __name__ == "__main__":
    run()
