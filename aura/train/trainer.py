"""`aura train`: the layer-wise distillation trainer (and the bridge baseline's trainer), on Accelerate.

One command runs on this CPU, or under `accelerate launch` with DDP over many processes/nodes: the
loop only uses Accelerate's model/optimizer wrapping, gradient accumulation and collectives.

Stages: `distill` runs only the first N blocks (a forward hook ends the LLM after block N; the rest and
the LM head are never computed) on the prompt up to the end of its audio; `joint` runs the whole LLM
on the chat-templated prompt + response, loss = distill.weight * distill + train.lm_weight * LM
(response tokens only). The bridge baseline trains LM-only through the same loop.

Reproducible resume: batches come from a per-epoch permutation fixed by the seed and indexed by a
global micro-batch counter (sharded by rank), so a checkpoint's (step, counter, optimizer, scheduler,
RNG) continue the exact same run.

RUN_DIR holds: config.yaml, metrics.csv, tb/ (TensorBoard), checkpoints/step-N/, final/ (inference
checkpoint: adapter + embedding + config; no teacher or heads), heads.safetensors (for diagnosis) and
finished.json (the step final/ was written at).

A run folder is recoverable whenever the process dies: every file is written whole or not at all (to a
`.tmp` name, then renamed), a checkpoint is complete only once its `state.pt` is in place, and
`--resume` continues from the last complete checkpoint, or starts again from step 0 when there is none
yet. A finished run is left alone by `--resume`.
"""

from __future__ import annotations

import csv
import json
import math
import os
import random
import shutil
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator, PartialState
from accelerate.state import AcceleratorState, GradientState
from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin, set_seed
from peft import set_peft_model_state_dict
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm.auto import tqdm

from aura.audio.features import encoder_frames, load_audio
from aura.config import AuraConfig, ConfigError
from aura.data.manifest import Example, read_manifest
from aura.distill.heads import (
    HEADS_FILE,
    DistillHeads,
    TranscriptReader,
    distill_terms,
    layer_map,
)
from aura.distill.probe import ProbeTracker, load_clips
from aura.model.checkpoint import CheckpointError, read_trained_weights, run_folders
from aura.model.prompt import AUDIO_PLACEHOLDER
from aura.model.student import AuraStudent, submodule_state
from aura.registry import ModelNotFoundError, aura_home
from aura.teacher.cache import TeacherCache

CHECKPOINTS = "checkpoints"
METRICS_FILE = "metrics.csv"
FINISHED_FILE = "finished.json"
SHARDED = "sharded"  # a sharded (FSDP) run's checkpoint: one file per process, torch.distributed.checkpoint


class TrainError(ValueError):
    """A training run that cannot start or continue, with what to do about it."""


@dataclass
class Clip:
    """One training example with its decoded audio (kept in memory: clips are short)."""

    example: Example
    wave: np.ndarray
    mel: torch.Tensor | None = None


class TrainModule(nn.Module):
    """Student + distillation heads: what Accelerate wraps, so DDP syncs every trainable weight."""

    def __init__(
        self,
        student: AuraStudent,
        heads: DistillHeads | None,
        config: AuraConfig,
        reader: TranscriptReader | None = None,
    ) -> None:
        super().__init__()
        self.student, self.heads, self.config = student, heads, config
        # FSDP's transformer wrap policy shards each of these (the LLM's decoder block classes) on its own
        self._no_split_modules = list(getattr(student.llm.get_base_model(), "_no_split_modules", None) or [])
        # the distillation stage ends the LLM's forward after block N by raising from a hook; FSDP cannot
        # reshard a forward cut short, so a sharded run computes (and ignores) the later blocks instead
        self.stop_after_blocks = True
        self.reader = reader  # not a submodule: the frozen teacher is neither trained nor synced

    def forward(
        self,
        texts: list[str],
        mels: list[list[torch.Tensor]],
        responses: list[str] | None,
        targets: list[torch.Tensor] | None,
        transcripts: list[tuple[int, str | None]] | None = None,
    ) -> dict[str, torch.Tensor]:
        cfg = self.config
        joint = cfg.train.stage == "joint"
        batch = self.student.build_batch(
            texts, mels, responses=responses if joint else None, stop_after_audio=not joint
        )
        layers = self.heads.student_layers if (self.heads is not None and targets is not None) else []
        out: dict[str, torch.Tensor] = {}
        if joint:
            lm_loss, states = self.student.forward_lm(batch, layers)
            out["lm_loss"] = lm_loss.detach()
            loss = cfg.train.lm_weight * lm_loss
        else:
            states = self.student.hidden_states(
                batch,
                layers,
                blocks=max(layers, default=self.student.num_blocks) if self.stop_after_blocks else None,
            )
            loss = torch.zeros((), device=batch.embeds.device)
        if layers:
            distill, metrics = distill_terms(self.heads, states, batch.audio_mask, targets)
            loss = loss + cfg.distill.weight * distill
            out["distill_loss"] = distill.detach()
            out.update(metrics)
            if self.reader is not None and transcripts is not None:
                audio = states[self.reader.student_layer][batch.audio_mask]
                decoder = self.reader(audio, batch.audio_mask.sum(1).tolist(), transcripts)
                if decoder is not None:
                    loss = loss + cfg.distill.decoder_weight * decoder
                    out["decoder_loss"] = decoder.detach()
        out["loss"] = loss
        out["tokens"] = torch.tensor(float(batch.valid.sum()))
        return out


def _cache_root(cfg: AuraConfig) -> Path:
    """Where frozen-teacher outputs are kept between runs: AuRA's targets, and the bridge's encoder states."""
    if cfg.distill.cache_dir is not None:
        return Path(cfg.distill.cache_dir)
    return aura_home() / "teacher_cache"


def _distills(cfg: AuraConfig) -> bool:
    """Whether the run has distillation heads (and so a teacher cache): an AuRA student with distillation on."""
    return cfg.model.arch == "aura" and (cfg.train.stage == "distill" or cfg.distill.weight > 0)


def _lr_lambda(delay: int, warmup: int, total: int):
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


def _load_clips(path: str, max_seconds: float, role: str) -> list[Clip]:
    examples = read_manifest(path, max_seconds=max_seconds)
    if not examples:
        raise TrainError(f"{path}: the {role} manifest has no examples.")
    clips = []
    for ex in examples:
        if ex.prompt.count(AUDIO_PLACEHOLDER) > 1:
            raise TrainError(f"{path}: example {ex.id} has several {AUDIO_PLACEHOLDER} but one audio clip.")
        clips.append(Clip(ex, load_audio(ex.audio, max_seconds=max_seconds, name=f"{path}: {ex.id}")))
    return clips


def _batch_indices(
    micro: int, n: int, batch: int, world: int, rank: int, seed: int, perms: dict
) -> list[int]:
    """Indices of this rank's share of global micro-batch `micro` in a stream of seeded epoch permutations."""
    out = []
    for j in range(batch):
        p = micro * batch * world + rank * batch + j
        epoch = p // n
        if epoch not in perms:
            perms[epoch] = torch.randperm(
                n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch)
            ).tolist()
        out.append(perms[epoch][p % n])
    return out


def _shard_on_cpu_if_asked(acc: Accelerator) -> None:
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


def _rng_state() -> dict[str, Any]:
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}


def _set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])


def last_checkpoint(run_dir: Path) -> Path | None:
    return (_checkpoints(run_dir) or [None])[-1]


def _checkpoint_step(folder: Path) -> int:
    return int(folder.name[5:])


def finished_step(run_dir: Path) -> int | None:
    """The step at which the run last wrote final/ and stopped (None while it is unfinished)."""
    marker = Path(run_dir) / FINISHED_FILE
    return int(json.loads(marker.read_text())["step"]) if marker.is_file() else None


def finished_message(run_dir: Path, config: AuraConfig) -> str | None:
    """Why `--resume` has nothing to do in `run_dir` (it is finished), with how to go on; None otherwise.

    A run paused part-way along a longer schedule (`train.schedule_steps`) is continued by a larger
    `train.max_steps`; any other finished run is continued by a new run starting from it.
    """
    run_dir = Path(run_dir)
    step = finished_step(run_dir)
    if step is None:
        return None
    checkpoint = last_checkpoint(run_dir)
    paused = checkpoint is not None and _checkpoint_step(checkpoint) == step
    if paused and config.train.max_steps > step:
        return None
    how = f"start a new run from it: aura train --out NEW_RUN_DIR train.init_from={run_dir} ..."
    if paused:
        how += f"; or continue its schedule with --resume train.max_steps=N (N > {step})"
    return (
        f"{run_dir}: this run is finished (step {step}, inference checkpoint in {run_dir / 'final'}); "
        f"--resume has nothing to continue and changed nothing. To train further, {how}."
    )


def _write_atomic(path: Path, write: Callable[[Path], object]) -> None:
    """`write(tmp_path)`, then rename it over `path`: a kill leaves the old file or the new, never half."""
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)


def _checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoints, oldest first (a `.tmp` folder is an interrupted save, never used)."""
    folder = run_dir / CHECKPOINTS
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.glob("step-*") if p.name[5:].isdigit() and (p / "state.pt").is_file())


class Trainer:
    """One run: set up by `__init__`, executed by `run()`. `train()` is the function to call."""

    def __init__(
        self,
        config: AuraConfig,
        run_dir: str | Path,
        resume: bool = False,
        teacher: Any | None = None,
        llm: Any | None = None,
        tokenizer: Any | None = None,
        progress: bool = True,
    ) -> None:
        self.config, self.run_dir, self.progress = config, Path(run_dir), progress
        cfg = config
        self._check(resume)
        self.schedule_steps = cfg.train.schedule_steps or cfg.train.max_steps
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
        _shard_on_cpu_if_asked(self.acc)
        set_seed(cfg.train.seed)
        self.train_clips = _load_clips(cfg.data.train, cfg.data.max_audio_seconds, "training")
        self.dev_clips = _load_clips(cfg.data.dev, cfg.data.max_audio_seconds, "dev") if cfg.data.dev else []
        if teacher is None:
            from aura.teacher.whisper import load_teacher

            teacher = load_teacher(cfg.model.teacher)
        self.teacher_name = teacher.name
        student = AuraStudent.build(cfg.model, teacher, llm, tokenizer)
        self.heads: DistillHeads | None = None
        self.cache: TeacherCache | None = None
        if _distills(cfg):
            self._prepare_distillation(student, teacher)
        if cfg.model.arch == "bridge":
            student.audio.store = _cache_root(cfg) / "bridge" / teacher.name
        self.probe: ProbeTracker | None = None
        if cfg.data.probe and self.heads is not None:
            self.probe = self._probe_tracker(teacher, cfg.data.probe)
        reader = None
        if self.heads is not None and cfg.distill.decoder_weight > 0:
            reader = TranscriptReader(teacher, self.heads, cfg.model.k)
        del teacher  # targets come from the cache; only the transcript loss keeps the frozen teacher
        if cfg.train.grad_checkpointing:
            student.llm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        heads_trained = bool(cfg.train.init_from) and self._init_from(student, cfg.train.init_from)
        self.module = TrainModule(student, self.heads, cfg, reader)
        self.module.train()
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
            optimizer, [_lr_lambda(d, cfg.train.warmup_steps, self.schedule_steps) for d in delays]
        )
        self.trainable_names = {n for n, p in self.module.named_parameters() if p.requires_grad}
        if self.acc.distributed_type == DistributedType.FSDP and not self.acc.is_fsdp2:
            raise TrainError("aura train shards with FSDP2: set `fsdp_version: 2` in the accelerate config.")
        self.sharded = self.acc.is_fsdp2
        self.module.stop_after_blocks = not self.sharded
        self.model, self.optimizer = self.acc.prepare(self.module, optimizer)
        self.step, self.micro, self.perms = 0, 0, {}
        if resume and last_checkpoint(self.run_dir) is not None:
            self._resume()
        else:
            self._start_over(resume)
        if self.acc.is_main_process:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            cfg.save(self.run_dir / "config.yaml")
        self.acc.wait_for_everyone()

    # ------------------------------------------------------------------ setup
    def _check(self, resume: bool) -> None:
        cfg = self.config
        if not cfg.data.train:
            raise ConfigError("data.train: no training manifest; pass data.train=PATH (a JSONL manifest).")
        if cfg.model.arch == "bridge" and cfg.train.stage == "distill":
            raise ConfigError(
                "the bridge baseline has nothing to distill; use train.stage=joint with model.arch=bridge."
            )
        if cfg.distill.decoder_weight > 0 and not _distills(cfg):
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
        self.cache = TeacherCache(_cache_root(cfg), teacher.name, cfg.model.k, teacher)
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

    def _init_from(self, student: AuraStudent, previous: str) -> bool:
        """Start from a previous run's trained adapter, embedding and heads (e.g. joint after distill, or
        a continuation of the shipped checkpoint); True when its heads were loaded too."""
        try:
            final, run_dir = run_folders(previous)
            adapter, audio = read_trained_weights(final)
        except (CheckpointError, ModelNotFoundError) as err:
            raise TrainError(f"train.init_from={previous}: {err}") from err
        try:
            set_peft_model_state_dict(student.llm, adapter)
            student.audio.load_state_dict(audio, strict=False)
            if self.heads is not None and (run_dir / HEADS_FILE).is_file():
                previous_heads = DistillHeads.load(run_dir / HEADS_FILE)
                if previous_heads.pairs == self.heads.pairs:
                    self.heads.heads.load_state_dict(previous_heads.heads.state_dict())
                    return True
        except RuntimeError as err:
            raise TrainError(
                f"train.init_from={previous}: its weights do not fit this model config ({err})."
            ) from err
        return False

    # ------------------------------------------------------------------ checkpoints
    def _trainable(self) -> dict[str, torch.Tensor]:
        """The trainable weights as whole tensors (a sharded run gathers them: call it on every rank;
        rank 0 gets them)."""
        if self.sharded:
            return {k: v for k, v in self._gathered().items() if k in self.trainable_names}
        return {
            n: p.detach().cpu().contiguous() for n, p in self.module.named_parameters() if p.requires_grad
        }

    def _gathered(self) -> dict[str, torch.Tensor]:
        """Every weight of the sharded module, whole, on rank 0's CPU (collective: all ranks call it)."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        return get_model_state_dict(
            self.model, options=StateDictOptions(full_state_dict=True, cpu_offload=True)
        )

    def _sharded_state(self) -> dict[str, Any]:
        """This rank's shards of the trainable weights and of the optimizer, keyed by parameter name."""
        from torch.distributed.checkpoint.state_dict import get_state_dict

        weights, optimizer = get_state_dict(self.model, self.optimizer)
        return {
            "model": {k: v for k, v in weights.items() if k in self.trainable_names},
            "optimizer": optimizer,
        }

    def _save_checkpoint(self) -> None:
        """checkpoints/step-N/, built in step-N.tmp/ and renamed when whole; state.pt is written last."""
        folder = self.run_dir / CHECKPOINTS / f"step-{self.step:07d}"
        tmp = folder.with_name(folder.name + ".tmp")
        if self.sharded:  # every rank writes its own shard into the folder rank 0 made
            import torch.distributed.checkpoint as dcp

            if self.acc.is_main_process:
                shutil.rmtree(tmp, ignore_errors=True)
                tmp.mkdir(parents=True)
            self.acc.wait_for_everyone()
            dcp.save(self._sharded_state(), checkpoint_id=str(tmp / SHARDED))
        if self.acc.is_main_process:
            if not self.sharded:
                shutil.rmtree(tmp, ignore_errors=True)
                tmp.mkdir(parents=True)
                save_file(self._trainable(), str(tmp / "trainable.safetensors"))
                torch.save(self.optimizer.state_dict(), tmp / "optimizer.pt")
            state = {
                "step": self.step,
                "micro": self.micro,
                "scheduler": self.scheduler.state_dict(),
                "schedule_steps": self.schedule_steps,
                "rng": _rng_state(),
            }
            torch.save(state, tmp / "state.pt")
            _discard(folder)
            tmp.rename(folder)
            for old in _checkpoints(self.run_dir)[:-2]:  # keep the last two
                _discard(old)
        self.acc.wait_for_everyone()

    def _start_over(self, resume: bool) -> None:
        """Step 0 in a folder that may hold an interrupted start: drop its half-written checkpoint and its
        metric rows, so the new start reads like a first one."""
        if resume:
            self.acc.print(
                f"{self.run_dir}: no complete checkpoint yet (the run stopped before or during its first save); "
                "starting again from step 0."
            )
        if self.acc.is_main_process:
            for leftover in [
                *(self.run_dir / CHECKPOINTS).glob("*.tmp"),
                *(self.run_dir / CHECKPOINTS).glob("*.old"),
            ]:
                shutil.rmtree(leftover, ignore_errors=True)
            (self.run_dir / METRICS_FILE).unlink(missing_ok=True)
        self.acc.wait_for_everyone()

    def _resume(self) -> None:
        folder = last_checkpoint(self.run_dir)
        assert folder is not None  # checked by the caller
        if (folder / SHARDED).is_dir() != self.sharded:
            written, now = (
                ("a sharded (FSDP)", "without") if (folder / SHARDED).is_dir() else ("an unsharded", "with")
            )
            raise TrainError(
                f"{folder}: written by {written} run, resumed {now} FSDP; resume it under the accelerate "
                "config it was trained with."
            )
        if self.sharded:
            self._resume_sharded(folder)
        else:
            weights = load_file(str(folder / "trainable.safetensors"))
            missing = self.trainable_names - set(weights)
            if missing:
                raise TrainError(
                    f"{folder}: checkpoint lacks {len(missing)} trainable weights of this config, e.g. {sorted(missing)[0]}."
                )
            self.module.load_state_dict(weights, strict=False)
            self.optimizer.load_state_dict(torch.load(folder / "optimizer.pt", weights_only=False))
        state = torch.load(folder / "state.pt", weights_only=False)
        self.scheduler.load_state_dict(state["scheduler"])
        self.step, self.micro = state["step"], state["micro"]
        _set_rng_state(state["rng"])
        if self.acc.is_main_process:
            # a paused run goes on: it is unfinished again until its new final/ is written
            (self.run_dir / FINISHED_FILE).unlink(missing_ok=True)
            self._truncate_metrics()
            self.acc.print(f"resumed from {folder} (step {self.step})")
            self._warn_if_schedule_changed(folder, state.get("schedule_steps", self.schedule_steps))

    def _resume_sharded(self, folder: Path) -> None:
        """Each rank reads its shards back (same number of processes as the run that saved them)."""
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

        state = self._sharded_state()
        try:
            dcp.load(state, checkpoint_id=str(folder / SHARDED))
        except (RuntimeError, ValueError) as err:
            raise TrainError(f"{folder}: the sharded checkpoint does not fit this run ({err}).") from err
        set_state_dict(
            self.model,
            self.optimizer,
            model_state_dict=state["model"],
            optim_state_dict=state["optimizer"],
            options=StateDictOptions(strict=False),
        )

    def _warn_if_schedule_changed(self, folder: Path, saved: int) -> None:
        """LambdaLR keeps no horizon in its state, so a new max_steps would silently re-bend the cosine."""
        if saved == self.schedule_steps:
            return
        # the loaded scheduler still holds the old schedule's last lr; its lambda is already the new one
        before = self.scheduler.get_last_lr()[0]
        after = self.scheduler.base_lrs[0] * self.scheduler.lr_lambdas[0](self.step)
        warnings.warn(
            f"{folder}: trained on a {saved}-step schedule, resumed on a {self.schedule_steps}-step one; the "
            f"learning rate at step {self.step} jumps from {before:.3g} to {after:.3g}. Pass "
            f"train.schedule_steps={saved} to continue the original schedule.",
            stacklevel=2,
        )

    def _truncate_metrics(self) -> None:
        """Drop metric rows logged after the checkpoint, so the resumed CSV reads like one run."""
        path = self.run_dir / METRICS_FILE
        if not path.is_file():
            return
        with path.open() as handle:
            rows = list(csv.DictReader(handle))
            fields = list(rows[0].keys()) if rows else []

        def write(tmp: Path) -> None:
            with tmp.open("w", newline="") as handle:
                writer = csv.DictWriter(handle, fieldnames=fields)
                writer.writeheader()
                writer.writerows(r for r in rows if int(r["step"]) <= self.step)

        _write_atomic(path, write)

    # ------------------------------------------------------------------ data
    def _mel(self, clip: Clip) -> torch.Tensor:
        if clip.mel is None:
            clip.mel = self.module.student.audio_features(clip.wave)
        return clip.mel

    def _inputs(self, clips: list[Clip]) -> tuple:
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
            transcripts = [(encoder_frames(len(c.wave)), c.example.transcript) for c in clips]
        return texts, mels, responses, targets, transcripts

    # ------------------------------------------------------------------ loop
    def run(self) -> Path:
        cfg, acc = self.config, self.acc
        acc.init_trackers("tb", config={k: str(v) for k, v in _flat(cfg.to_dict()).items()})
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
                idx = _batch_indices(
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
                    out = self.model(*self._inputs([self.train_clips[i] for i in idx]))
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

    def _log(self, window: dict[str, list[float]], seconds_per_step: float | None) -> None:
        means = {k: float(np.mean(v)) for k, v in window.items()}
        keys = sorted(means)
        reduced = self.acc.reduce(torch.tensor([means[k] for k in keys]), reduction="mean")
        row: dict[str, float] = {"step": self.step, "lr": self.step_lrs[0]}
        if len(self.step_lrs) > 1:
            row["head_lr"] = self.step_lrs[1]
        row.update({k: float(v) for k, v in zip(keys, reduced, strict=True)})
        row["tokens_per_s"] = (
            row.pop("tokens") * self.acc.num_processes * self.config.train.grad_accum / seconds_per_step
            if seconds_per_step
            else float("nan")
        )
        row["s_per_step"] = seconds_per_step if seconds_per_step else float("nan")
        self.acc.log({k: v for k, v in row.items() if k != "step" and not math.isnan(v)}, step=self.step)
        if self.acc.is_main_process:
            self._write_row(row)

    def _write_row(self, row: dict[str, float]) -> None:
        path = self.run_dir / METRICS_FILE
        fields = None
        if path.is_file():
            with path.open() as handle:
                fields = next(csv.reader(handle), None)
        if fields is None or not set(row) <= set(fields):
            fields = _column_order(row)
            if path.is_file() and path.stat().st_size:
                with path.open() as handle:
                    old = list(csv.DictReader(handle))
                fields = _column_order({**{k: 0 for r in old for k in r}, **row})

                def write(tmp: Path) -> None:
                    with tmp.open("w", newline="") as handle:
                        writer = csv.DictWriter(handle, fieldnames=fields, restval="")
                        writer.writeheader()
                        writer.writerows(old)

                _write_atomic(path, write)
        with path.open("a", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=fields, restval="")
            if path.stat().st_size == 0:
                writer.writeheader()
            writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})

    @torch.no_grad()
    def _log_dev(self) -> None:
        """Distillation metrics on the dev clips (every rank computes the same numbers; rank 0 writes)."""
        self.module.eval()
        sums: dict[str, float] = {}
        batches = 0
        for start in range(0, len(self.dev_clips), self.config.train.batch_size):
            out = self.module(*self._inputs(self.dev_clips[start : start + self.config.train.batch_size]))
            for key, value in out.items():
                if key != "tokens":
                    sums[key] = sums.get(key, 0.0) + float(value)
            batches += 1
        row = (
            {"step": self.step, **{f"dev_{k}": v / batches for k, v in sums.items()}}
            if batches
            else {"step": self.step}
        )
        if self.probe is not None:
            row["dev_probe_wer"] = self.probe.student_wer(
                self.acc.unwrap_model(self.model).student, self.config
            )
            row["dev_probe_teacher_wer"] = self.probe.teacher_wer  # the teacher's states, same input
        # the listening gap calls the student's parts directly, which a sharded (FSDP) module cannot serve
        if self.config.train.stage == "joint" and len(self.dev_clips) > 1 and not self.sharded:
            from aura.distill.listening import listening

            heard = listening(
                self.acc.unwrap_model(self.model).student,
                [c.example.prompt for c in self.dev_clips],
                [c.example.response for c in self.dev_clips],
                [self._mel(c) for c in self.dev_clips],
                self.config.data.system_prompt,
                self.config.train.batch_size,
            )
            row["dev_listening_gap"] = heard["gap"]  # > 0: the LM loss rises when the audio is swapped
        self.module.train()
        self.acc.log({k: v for k, v in row.items() if k != "step"}, step=self.step)
        if self.acc.is_main_process:
            self._write_row(row)

    def _finish(self) -> Path:
        """final/ (inference checkpoint), heads.safetensors beside it, then finished.json: each whole.

        A sharded run gathers its weights to rank 0 first, so it writes the same files as any other run."""
        final = self.run_dir / "final"
        whole = self._gathered() if self.sharded else None
        if self.acc.is_main_process:
            module = self.acc.unwrap_model(self.model)
            tmp = final.with_name("final.new")
            shutil.rmtree(tmp, ignore_errors=True)
            module.student.save_pretrained(
                tmp, state_dict=None if whole is None else submodule_state(whole, "student.")
            )
            _discard(final)
            tmp.rename(final)
            if self.heads is not None:
                heads = None if whole is None else submodule_state(whole, "heads.")
                _write_atomic(self.run_dir / HEADS_FILE, lambda tmp: module.heads.save(tmp, heads))
            _write_atomic(
                self.run_dir / FINISHED_FILE,
                lambda tmp: tmp.write_text(json.dumps({"step": self.step}) + "\n"),
            )
        self.acc.wait_for_everyone()
        return final


def _discard(folder: Path) -> None:
    """Delete a folder by first renaming it out of sight, so a kill mid-delete leaves no half folder."""
    if folder.exists():
        doomed = folder.with_name(folder.name + ".old")
        shutil.rmtree(doomed, ignore_errors=True)
        folder.rename(doomed)
        shutil.rmtree(doomed)


def _column_order(row: dict[str, Any]) -> list[str]:
    """step first, then losses, then per-layer metrics in layer order, then the rest."""

    def key(name: str) -> tuple:
        prefix, _, layer = name.rpartition("_")
        if layer.isdigit() and prefix.split("_")[-1] in ("cos", "ccos", "cka"):
            return (2, prefix, int(layer))
        order = ["step", "loss", "distill_loss", "lm_loss", "lr", "head_lr"]
        return (0, order.index(name), 0) if name in order else (3, name, 0)

    return sorted(row, key=key)


def _flat(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


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
    return Trainer(config, run_dir, resume, teacher, llm, tokenizer, progress).run()
