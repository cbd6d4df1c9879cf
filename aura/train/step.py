"""The loss step: the student and the distillation heads as one module (what Accelerate wraps, so DDP
syncs every trainable weight), its loss composed from config-weighted terms.

Terms: `lm` (the joint stage: LM loss on the response tokens, `train.lm_weight`), `distill` (the heads'
distance to the teacher's states, `distill.weight`; the distill stage trains this alone) and `decoder`
(the teacher's own decoder reading the student's states, `distill.decoder_weight`). A term not in the
config's list is never computed.
"""

from __future__ import annotations

import torch
from torch import nn

from aura.config import AuraConfig
from aura.distill.heads import DistillHeads, TranscriptReader, distill_terms
from aura.model.batching import StudentBatch
from aura.model.student import AuraStudent
from aura.train.batches import TrainBatch
from aura.train.cpu_attention import use_float32_attention


def loss_terms(cfg: AuraConfig, heads: bool, reader: bool) -> dict[str, float]:
    """The weighted terms of the training loss, in the order they are summed."""
    terms: dict[str, float] = {}
    if cfg.train.stage == "joint":
        terms["lm"] = cfg.train.lm_weight
    if heads:
        terms["distill"] = cfg.distill.weight
    if reader:
        terms["decoder"] = cfg.distill.decoder_weight
    return terms


class TrainModule(nn.Module):
    """Student + distillation heads; `forward(batch)` returns the loss, its terms and the metrics."""

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
        use_float32_attention(student.llm)  # bf16 CPU steps: see aura.train.cpu_attention

    @property
    def terms(self) -> dict[str, float]:
        return loss_terms(self.config, self.heads is not None, self.reader is not None)

    def forward(self, batch: TrainBatch) -> dict[str, torch.Tensor]:
        terms = self.terms
        joint = "lm" in terms
        inputs = self.student.build_batch(
            batch.texts, batch.mels, responses=batch.responses if joint else None, stop_after_audio=not joint
        )
        layers = self.heads.student_layers if (self.heads is not None and batch.targets is not None) else []
        out: dict[str, torch.Tensor] = {}
        if joint:
            lm_loss, states = self.student.forward_lm(inputs, layers)
            out["lm_loss"] = lm_loss.detach()
            loss = terms["lm"] * lm_loss
        else:
            blocks = max(layers, default=self.student.num_blocks) if self.stop_after_blocks else None
            states = self.student.hidden_states(inputs, layers, blocks=blocks)
            loss = torch.zeros((), device=inputs.embeds.device)
        if layers:
            distill, metrics = distill_terms(self.heads, states, inputs.audio_mask, batch.targets)
            loss = loss + terms["distill"] * distill
            out["distill_loss"] = distill.detach()
            out.update(metrics)
            decoder = self._decoder_loss(states, inputs, batch)
            if decoder is not None:
                loss = loss + terms["decoder"] * decoder
                out["decoder_loss"] = decoder.detach()
        out["loss"] = loss
        out["tokens"] = torch.tensor(float(inputs.valid.sum()))
        return out

    def _decoder_loss(
        self, states: dict[int, torch.Tensor], inputs: StudentBatch, batch: TrainBatch
    ) -> torch.Tensor | None:
        """The teacher's decoder reading the student's audio states (None: the term is off or no clip has
        a transcript)."""
        if self.reader is None or batch.transcripts is None:
            return None
        audio = states[self.reader.student_layer][inputs.audio_mask]
        return self.reader(audio, inputs.audio_mask.sum(1).tolist(), batch.transcripts)
