"""Time one training step of the distillation-only stage vs the joint stage (same batch, same student).

The distillation-only stage runs the first N blocks on the prompt up to its audio; the joint stage runs
the whole LLM on prompt + response plus the LM head on the response. Their ratio is what the
distill-first schedule saves per step. The distillation stage is also timed with the transcript loss
(`distill.decoder_weight`: a Whisper decoder pass per clip, and the backward through it). Each variant is
also timed under bf16 autocast (what `train.bf16=true` turns on through Accelerate), whose ratio to fp32
tells whether this CPU's bf16 matmuls (AMX) pay. Writes `benchmarks/results/train_step.json`.

    .venv/bin/python -m benchmarks.train_step [--llm smollm2-135m-instruct] [--teacher whisper-tiny.en]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from aura.audio.features import load_audio
from aura.config import AuraConfig
from aura.data.manifest import read_manifest
from aura.data.synth import synthesize
from aura.distill.heads import DistillHeads, TranscriptReader, layer_map
from aura.model.student import AuraStudent
from aura.teacher.cache import TeacherCache
from aura.teacher.whisper import load_teacher
from aura.train.batches import TrainBatch
from aura.train.step import TrainModule
from benchmarks.common import write_result


@dataclass
class StepBench:
    """One student, its heads, optimizer and one fixed batch: `step(stage, precision)` runs a training step."""

    config: AuraConfig
    module: TrainModule
    reader: TranscriptReader
    optimizer: torch.optim.Optimizer
    inputs: dict

    @classmethod
    def build(cls, config: AuraConfig, batch_size: int, folder: Path) -> StepBench:
        manifest = synthesize("asr", batch_size, folder / "clips", seed=7, progress=False)
        examples = read_manifest(manifest)
        waves = [load_audio(ex.audio) for ex in examples]
        teacher = load_teacher(config.model.teacher)
        cache = TeacherCache(folder / "cache", teacher.name, config.model.k, teacher)
        cache.fill(waves)
        student = AuraStudent.build(config.model, teacher)
        pairs = layer_map(config.model.layer_map, student.num_blocks, teacher.num_layers)
        heads = DistillHeads(pairs, student.llm.get_input_embeddings().weight.shape[1], teacher.width)
        reader = TranscriptReader(teacher, heads)
        module = TrainModule(student, heads, config).train()
        per_clip = [cache.get(w)[heads.teacher_layers] for w in waves]
        inputs = {
            "prompts": [student.render_prompt(ex.prompt) for ex in examples],
            "mels": [[student.audio_features(w)] for w in waves],
            "responses": [ex.response for ex in examples],
            "targets": [torch.cat([t[j] for t in per_clip]) for j in range(len(pairs))],
            "transcripts": [ex.transcript for ex in examples],
        }
        params = [p for p in module.parameters() if p.requires_grad]
        return cls(config, module, reader, torch.optim.AdamW(params, lr=1e-5), inputs)

    def step(self, stage: str, precision: str) -> float:
        """One optimizer step of `stage` (a variant name) in `precision` (fp32 | bf16); returns its tokens."""
        config, module, x = self.config, self.module, self.inputs
        config.train.stage = stage.split("+")[0]
        module.reader = self.reader if stage == "distill+transcript" else None
        config.distill.decoder_weight = 0.1 if module.reader else 0.0
        with torch.autocast("cpu", torch.bfloat16, enabled=precision == "bf16"):
            out = module(TrainBatch(x["prompts"], x["mels"], x["responses"], x["targets"], x["transcripts"]))
        out["loss"].backward()
        self.optimizer.step()
        self.optimizer.zero_grad()
        return float(out["tokens"])


def bench_config(llm: str | None, teacher: str | None, k: int | None) -> AuraConfig:
    config = AuraConfig()
    config.model.llm = llm or config.model.llm
    config.model.teacher = teacher or config.model.teacher
    config.model.k = k or config.model.k
    return config


def run(
    llm: str | None = None,
    teacher: str | None = None,
    batch_size: int = 8,
    steps: int = 5,
    k: int | None = None,
) -> dict:
    """Median step time of each stage on the same batch; writes results/train_step.json."""
    config = bench_config(llm, teacher, k)
    with tempfile.TemporaryDirectory() as tmp:
        bench = StepBench.build(config, batch_size, Path(tmp))
        results = {}
        variants = ("distill", "distill+transcript", "joint")
        for stage, precision in [(s, p) for s in variants for p in ("fp32", "bf16")]:
            times, tokens = [], 0.0
            for i in range(steps + 1):
                start = time.perf_counter()
                step_tokens = bench.step(stage, precision)
                if i:  # the first step warms up allocators and kernels
                    times.append(time.perf_counter() - start)
                    tokens = step_tokens
            step = statistics.median(times)
            results[f"{stage}_{precision}"] = {
                "seconds_per_step": step,
                "tokens_per_step": tokens,
                "tokens_per_s": tokens / step,
            }
            print(
                f"{stage} {precision}: {step:.3f} s/step, {tokens:.0f} tokens/step, {tokens / step:.0f} tokens/s"
            )

    report = {
        "llm": config.model.llm,
        "teacher": config.model.teacher,
        "k": config.model.k,
        "lora_layers": bench.module.student.num_blocks,
        "lora_rank": config.model.lora_rank,
        "batch_size": batch_size,
        "timed_steps": steps,
        "distill_step_s": results["distill_fp32"]["seconds_per_step"],
        "joint_step_s": results["joint_fp32"]["seconds_per_step"],
        "joint_over_distill": results["joint_fp32"]["seconds_per_step"]
        / results["distill_fp32"]["seconds_per_step"],
        "transcript_loss_over_distill": {
            precision: results[f"distill+transcript_{precision}"]["seconds_per_step"]
            / results[f"distill_{precision}"]["seconds_per_step"]
            for precision in ("fp32", "bf16")
        },
        "bf16_speedup": {
            stage: results[f"{stage}_fp32"]["seconds_per_step"] / results[f"{stage}_bf16"]["seconds_per_step"]
            for stage in variants
        },
        "stages": results,
    }
    print(
        f"joint / distill step time: {report['joint_over_distill']:.2f}x; transcript loss / distill "
        f"{report['transcript_loss_over_distill']}; bf16 speed-up {report['bf16_speedup']}"
    )
    write_result("train_step", report)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--llm")
    parser.add_argument("--teacher")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=5, help="timed steps per stage (after one warm-up step)")
    parser.add_argument("--k", type=int)
    args = parser.parse_args()
    run(args.llm, args.teacher, args.batch_size, args.steps, args.k)


if __name__ == "__main__":
    main()
