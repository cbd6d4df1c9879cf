"""`aura train`: the layer-wise distillation trainer (and the bridge baseline's trainer), on Accelerate.

One command runs on this CPU, or under `accelerate launch` with DDP over many processes/nodes: the
loop only uses Accelerate's model/optimizer wrapping, gradient accumulation and collectives.

Stages: `distill` runs only the first N blocks (a forward hook ends the LLM after block N; the rest and
the LM head are never computed) on the prompt up to the end of its audio; `joint` runs the whole LLM
on the chat-templated prompt + response, loss = distill.weight * distill + train.lm_weight * LM
(response tokens only). The bridge baseline trains LM-only through the same loop.

The run folder (`run_dir`), its checkpoints and resuming (`checkpointing`), the loss step (`step`), the
typed batch (`batches`) and logging (`metrics_log`) are the phases this module runs in order.

A run folder is recoverable whenever the process dies: every file is written whole or not at all (to a
`.tmp` name, then renamed), a checkpoint is complete only once its `state.pt` is in place, and
`--resume` continues from the last complete checkpoint, or starts again from step 0 when there is none
yet. A finished run is left alone by `--resume`.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator, PartialState
from accelerate.state import AcceleratorState, GradientState
from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin, set_seed
from tqdm.auto import tqdm

from aura.config import AuraConfig, ConfigError, flatten
from aura.distill.heads import (
    DistillHeads,
    TranscriptReader,
    layer_map,
)
from aura.distill.probe import ProbeTracker, load_clips
from aura.model.student import AuraStudent
from aura.registry import aura_home
from aura.teacher.cache import TeacherCache
from aura.train.batches import Clip, TrainBatch, batch_indices, load_train_clips
from aura.train.checkpointing import Checkpointing
from aura.train.metrics_log import MetricsLog
from aura.train.run_dir import TrainError, finished_message, finished_step, last_checkpoint
from aura.train.step import TrainModule
from aura.train.warm_start import warm_start


def cache_root(cfg: AuraConfig) -> Path:
    """Where frozen-teacher outputs are kept between runs: AuRA's targets, and the bridge's encoder states."""
    if cfg.distill.cache_dir is not None:
        return Path(cfg.distill.cache_dir)
    return aura_home() / "teacher_cache"


def distills(cfg: AuraConfig) -> bool:
    """Whether the run has distillation heads (and so a teacher cache): an AuRA student with distillation on."""
    return cfg.model.arch == "aura" and (cfg.train.stage == "distill" or cfg.distill.weight > 0)


def lr_lambda(delay: int, warmup: int, total: int):
    """Linear warmup then cosine to zero, starting after `delay` steps (0 before it)."""

    def factor(step: int) -> float:
        s = step - delay
        if s < 0:
            return 0.0
        if s < warmup:
            return (s + 1) / warmup
        progress = (s - warmup) / max(1, total - delay - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))

    return factor


def shard_on_cpu_if_asked(acc: Accelerator) -> None:
    """Run FSDP on a CPU (gloo) process group when the launch config asks for it.

    `accelerate launch` with an FSDP config sets ACCELERATE_USE_FSDP, but Accelerate forms FSDP only on
    accelerators; on CPUs it would quietly train plain DDP. torch's `fully_shard` runs on gloo, so the
    process group is promoted to FSDP and the one recipe shards on CPUs as on GPUs.
    """
    wanted = os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"
    if wanted and acc.distributed_type == DistributedType.MULTI_CPU:
        # both singletons: every AcceleratorState() copies the process state's type over its own
        PartialState._shared_state["distributed_type"] = DistributedType.FSDP
        acc.state.distributed_type = DistributedType.FSDP
        acc.state.fsdp_plugin = FullyShardedDataParallelPlugin()


@dataclass
class Models:
    """Models that replace the ones the config names (tests use tiny random ones), and whether to show
    progress bars."""

    teacher: Any | None = None
    llm: Any | None = None
    tokenizer: Any | None = None
    progress: bool = True


class Trainer(Checkpointing, MetricsLog):
    """One run: set up by `__init__`, executed by `run()`. `train()` is the function to call."""

    def __init__(
        self, config: AuraConfig, run_dir: str | Path, resume: bool = False, models: Models | None = None
    ) -> None:
        models = models or Models()
        self.config, self.run_dir, self.progress = config, Path(run_dir), models.progress
        self._check(resume)
        self.schedule_steps = config.train.schedule_steps or config.train.max_steps
        self._setup_accelerator()
        self._setup_data()
        student, reader, heads_trained = self._setup_models(models.teacher, models.llm, models.tokenizer)
        self.module = TrainModule(student, self.heads, config, reader)
        self.module.train()
        optimizer = self._setup_optimizer(student, heads_trained)
        self.model, self.optimizer = self.acc.prepare(self.module, optimizer)
        self.step, self.micro, self.perms = 0, 0, {}
        if resume and last_checkpoint(self.run_dir) is not None:
            self._resume()
        else:
            self._start_over(resume)
        if self.acc.is_main_process:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            config.save(self.run_dir / "config.yaml")
        self.acc.wait_for_everyone()

    # ------------------------------------------------------------------ setup
    def _setup_accelerator(self) -> None:
        cfg = self.config
        # Accelerate keeps process-wide singletons; a second run in the same process (a distill run then
        # a joint run, tests) may want another precision. The process group (PartialState) is kept.
        AcceleratorState._reset_state(reset_partial_state=False)
        GradientState._reset_state()
        self.acc = Accelerator(
            gradient_accumulation_steps=cfg.train.grad_accum,
            mixed_precision="bf16" if cfg.train.bf16 else "no",
            log_with="tensorboard",
            project_dir=str(self.run_dir),
            step_scheduler_with_optimizer=False,
            # without a GPU, processes started by torchrun / `accelerate launch --multi_gpu` must be told
            # to form a CPU (gloo) process group, else each would train alone
            cpu=not torch.accelerator.is_available(),
        )
        shard_on_cpu_if_asked(self.acc)
        set_seed(cfg.train.seed)

    def _setup_data(self) -> None:
        cfg = self.config
        joint, limit = cfg.train.stage == "joint", cfg.data.max_audio_seconds
        self.train_clips = load_train_clips(cfg.data.train, limit, "training", joint)
        self.dev_clips = load_train_clips(cfg.data.dev, limit, "dev", joint) if cfg.data.dev else []

    def _setup_models(
        self, teacher: Any | None, llm: Any | None, tokenizer: Any | None
    ) -> tuple[AuraStudent, TranscriptReader | None, bool]:
        """The student, the heads with the teacher cache, the probe and the transcript reader; then the
        teacher is let go (targets come from the cache). Returns (student, reader, whether
        train.init_from brought trained heads)."""
        cfg = self.config
        if teacher is None:
            from aura.teacher.whisper import load_teacher

            teacher = load_teacher(cfg.model.teacher)
        self.teacher_name = teacher.name
        student = AuraStudent.build(cfg.model, teacher, llm, tokenizer)
        self.heads: DistillHeads | None = None
        self.cache: TeacherCache | None = None
        if distills(cfg):
            self._prepare_distillation(student, teacher)
        if cfg.model.arch == "bridge":
            student.audio.store = cache_root(cfg) / "bridge" / teacher.name
        self.probe: ProbeTracker | None = None
        if cfg.data.probe and self.heads is not None:
            self.probe = self._probe_tracker(teacher, cfg.data.probe)
        reader = None
        if self.heads is not None and cfg.distill.decoder_weight > 0:
            reader = TranscriptReader(teacher, self.heads)
        del teacher  # only the transcript loss keeps the frozen teacher
        if cfg.train.grad_checkpointing:
            student.llm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        heads_trained = bool(cfg.train.init_from) and warm_start(student, self.heads, cfg.train.init_from)
        return student, reader, heads_trained

    def _setup_optimizer(self, student: AuraStudent, heads_trained: bool) -> torch.optim.Optimizer:
        """AdamW over the student's and the heads' weights (two learning rates), the LR schedule, and
        which distributed wrapping the run uses."""
        cfg = self.config
        head_params = list(self.heads.parameters()) if self.heads is not None else []
        head_ids = {id(p) for p in head_params}
        student_params = [p for p in student.parameters() if p.requires_grad and id(p) not in head_ids]
        groups = [{"params": student_params, "lr": cfg.train.lr}]
        # the heads-only warm-up exists to fit fresh heads; heads brought by init_from are already fit
        delays = [cfg.train.head_warmup_steps if head_params and not heads_trained else 0]
        if head_params:
            groups.append({"params": head_params, "lr": cfg.train.head_lr})
            delays.append(0)
        optimizer = torch.optim.AdamW(groups, weight_decay=cfg.train.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, [lr_lambda(d, cfg.train.warmup_steps, self.schedule_steps) for d in delays]
        )
        self.trainable_names = {n for n, p in self.module.named_parameters() if p.requires_grad}
        if self.acc.distributed_type == DistributedType.FSDP and not self.acc.is_fsdp2:
            raise TrainError("aura train shards with FSDP2: set `fsdp_version: 2` in the accelerate config.")
        self.sharded = self.acc.is_fsdp2
        self.module.stop_after_blocks = not self.sharded
        return optimizer

    def _check(self, resume: bool) -> None:
        cfg = self.config
        if not cfg.data.train:
            raise ConfigError("data.train: no training manifest; pass data.train=PATH (a JSONL manifest).")
        if cfg.model.arch == "bridge" and cfg.train.stage == "distill":
            raise ConfigError(
                "the bridge baseline has nothing to distill; use train.stage=joint with model.arch=bridge."
            )
        if cfg.distill.decoder_weight > 0 and not distills(cfg):
            raise ConfigError(
                "distill.decoder_weight: the transcript loss reads the distillation heads, so it needs "
                "model.arch=aura with distillation on (train.stage=distill, or distill.weight > 0)."
            )
        for key in ("max_steps", "batch_size", "grad_accum", "save_every", "log_every"):
            if getattr(cfg.train, key) < 1:
                raise ConfigError(f"train.{key} must be at least 1.")
        if cfg.train.schedule_steps is not None and cfg.train.schedule_steps < cfg.train.max_steps:
            raise ConfigError(
                f"train.schedule_steps={cfg.train.schedule_steps} is shorter than train.max_steps="
                f"{cfg.train.max_steps}: the learning rate would be 0 past it. Raise it or leave it unset."
            )
        started = last_checkpoint(self.run_dir) is not None or finished_step(self.run_dir) is not None
        if resume and (message := finished_message(self.run_dir, cfg)) is not None:
            raise TrainError(message)
        if not resume and started:
            raise TrainError(
                f"{self.run_dir}: already holds a run; pass --resume to continue it or choose a new --out."
            )

    def _prepare_distillation(self, student: AuraStudent, teacher: Any) -> None:
        """Fill the teacher cache (sharded over processes), then build heads with target statistics."""
        cfg = self.config
        self.cache = TeacherCache(cache_root(cfg), teacher.name, cfg.model.k, teacher)
        waves = [c.wave for c in self.train_clips + self.dev_clips]
        todo = self.cache.missing(waves)
        mine = [waves[i] for i in todo[self.acc.process_index :: self.acc.num_processes]]
        if mine:
            bar = tqdm(
                total=len(mine),
                desc="teacher targets",
                disable=not (self.progress and self.acc.is_main_process),
            )
            self.cache.fill(mine, progress=bar)
            bar.close()
        self.acc.wait_for_everyone()
        self.cache.teacher = None
        pairs = layer_map(cfg.model.layer_map, student.num_blocks, teacher.num_layers)
        llm_width = student.llm.get_input_embeddings().weight.shape[1]
        self.heads = DistillHeads(pairs, llm_width, teacher.width)
        mean, std, norm = self.cache.statistics([c.wave for c in self.train_clips], self.heads.teacher_layers)
        self.heads.set_statistics(mean, std, norm, cfg.distill.standardize)

    def _probe_tracker(self, teacher: Any, path: str) -> ProbeTracker:
        probe_clips = load_clips(path)
        try:
            return ProbeTracker(teacher, self.heads, probe_clips, self.config.model.k)
        except ValueError as err:
            raise ConfigError(f"{path}: {err}") from err

    def _mel(self, clip: Clip) -> torch.Tensor:
        if clip.mel is None:
            clip.mel = self.module.student.audio_features(clip.wave)
        return clip.mel

    def _inputs(self, clips: list[Clip]) -> TrainBatch:
        cfg, student = self.config, self.module.student
        joint = cfg.train.stage == "joint"
        texts = [student.render_prompt(c.example.prompt, cfg.data.system_prompt) for c in clips]
        mels = [[self._mel(c)] for c in clips]
        responses = [c.example.response for c in clips] if joint else None
        targets = None
        if self.heads is not None:
            per_clip = [self.cache.get(c.wave)[self.heads.teacher_layers] for c in clips]  # (L, T_i, d)
            targets = [torch.cat([t[j] for t in per_clip]) for j in range(len(self.heads.pairs))]
        transcripts = None
        if self.module.reader is not None:
            transcripts = [c.example.transcript for c in clips]
        return TrainBatch(texts, mels, responses, targets, transcripts)

    def run(self) -> Path:
        cfg, acc = self.config, self.acc
        acc.init_trackers("tb", config={k: str(v) for k, v in flatten(cfg.to_dict()).items()})
        bar = tqdm(
            total=cfg.train.max_steps,
            initial=self.step,
            desc=f"{cfg.train.stage} ({cfg.model.arch})",
            disable=not (self.progress and acc.is_main_process),
        )
        if cfg.train.dev_every and (self.dev_clips or self.probe) and self.step == 0:
            self._log_dev()  # the starting point, before any update
        window: dict[str, list[float]] = {}
        started = time.perf_counter()
        while self.step < cfg.train.max_steps:
            for _ in range(cfg.train.grad_accum):
                idx = batch_indices(
                    self.micro,
                    len(self.train_clips),
                    cfg.train.batch_size,
                    acc.num_processes,
                    acc.process_index,
                    cfg.train.seed,
                    self.perms,
                )
                self.micro += 1
                with acc.accumulate(self.model):
                    out = self.model(self._inputs([self.train_clips[i] for i in idx]))
                    acc.backward(out["loss"])
                    if acc.sync_gradients and cfg.train.max_grad_norm > 0:
                        acc.clip_grad_norm_(self.model.parameters(), cfg.train.max_grad_norm)
                    self.optimizer.step()
                    self.optimizer.zero_grad()
                for key, value in out.items():
                    window.setdefault(key, []).append(float(value.detach()))
            self.step_lrs = self.scheduler.get_last_lr()  # the rates this step used
            self.scheduler.step()
            self.step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{window['loss'][-1]:.4f}")
            if self.step % cfg.train.log_every == 0 or self.step == cfg.train.max_steps:
                elapsed = time.perf_counter() - started
                self._log(
                    window, elapsed / cfg.train.log_every if self.step % cfg.train.log_every == 0 else None
                )
                window, started = {}, time.perf_counter()
            if (
                cfg.train.dev_every
                and (self.dev_clips or self.probe)
                and self.step % cfg.train.dev_every == 0
            ):
                self._log_dev()
            periodic = self.step < cfg.train.max_steps and self.step % cfg.train.save_every == 0
            paused = self.step == cfg.train.max_steps < self.schedule_steps  # part-way: keep it resumable
            if periodic or paused:
                self._save_checkpoint()
        bar.close()
        final = self._finish()
        acc.end_training()
        return final


def train(
    config: AuraConfig,
    run_dir: str | Path,
    resume: bool = False,
    *,
    teacher: Any | None = None,
    llm: Any | None = None,
    tokenizer: Any | None = None,
    progress: bool = True,
) -> Path:
    """Train per `config` into `run_dir` (or continue its last checkpoint) and return `run_dir/final`.

    `teacher`, `llm`, `tokenizer` replace the models named in the config (tests use tiny random ones).
    `resume` on a finished run changes nothing: it says so (and how to train further) and returns final/.
    """
    if resume and (message := finished_message(Path(run_dir), config)) is not None:
        PartialState().print(message)
        return Path(run_dir) / "final"
    return Trainer(config, run_dir, resume, Models(teacher, llm, tokenizer, progress)).run()
