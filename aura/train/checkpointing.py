"""The checkpointing phase: periodic checkpoints (sharded under FSDP), resuming from the last complete one
after a kill at any moment, and the final inference checkpoint.

A checkpoint's (step, micro-batch counter, optimizer, scheduler, RNG) continue the exact same run: batches
come from seeded epoch permutations indexed by the global micro-batch counter (`batches.batch_indices`).
"""

from __future__ import annotations

import csv
import json
import shutil
import warnings
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from aura.distill.heads import HEADS_FILE
from aura.model.student import submodule_state
from aura.train.run_dir import (
    CHECKPOINTS,
    FINISHED_FILE,
    METRICS_FILE,
    SHARDED,
    TrainError,
    checkpoints,
    discard,
    last_checkpoint,
    rng_state,
    set_rng_state,
    write_atomic,
)


class Checkpointing:
    """The `Trainer`'s checkpoint methods (they read the trainer's accelerator, model, optimizer and
    scheduler)."""

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
                "rng": rng_state(),
            }
            torch.save(state, tmp / "state.pt")
            discard(folder)
            tmp.rename(folder)
            for old in checkpoints(self.run_dir)[:-2]:  # keep the last two
                discard(old)
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
        set_rng_state(state["rng"])
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

        write_atomic(path, write)

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
            discard(final)
            tmp.rename(final)
            if self.heads is not None:
                heads = None if whole is None else submodule_state(whole, "heads.")
                write_atomic(self.run_dir / HEADS_FILE, lambda tmp: module.heads.save(tmp, heads))
            write_atomic(
                self.run_dir / FINISHED_FILE,
                lambda tmp: tmp.write_text(json.dumps({"step": self.step}) + "\n"),
            )
        self.acc.wait_for_everyone()
        return final
