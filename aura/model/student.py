"""The AuRA student: a causal LLM with LoRA on its first N blocks, reading audio through `AudioEmbedding`.

API (used by the trainer and by `aura.infer.aura_model`):

- `AuraStudent.build(config, teacher=None, llm=None, tokenizer=None)`: a fresh student for training
  (LLM loaded by `aura.model.llm.load_llm(config.llm)` unless given; embedding initialised from the teacher).
- `AuraStudent.from_pretrained(path, dtype=..., device=...)` / `student.save_pretrained(path)`: the
  inference checkpoint `final/` = `aura_config.yaml` + peft `adapter_model.safetensors` +
  `adapter_config.json` + `audio_embedding.safetensors`. No teacher or head weights are ever written.
- `student.render(messages)` / `student.render_prompt(prompt)`: chat-templated prompt text ending with
  the assistant generation prompt; `<audio>` placeholders survive templating as plain text.
- `student.audio_features(wave)`: unpadded log-mel `(n_mels, 2F)` of one 16-kHz clip.
- `student.build_batch(texts, audio, responses=None)` -> `StudentBatch` (`aura.model.batching`): audio
  embeddings spliced at each `<audio>`, rows padded, the attention mask and positions.
- Generation with a KV cache: run `student.llm(inputs_embeds=b.embeds, attention_mask=b.mask,
  position_ids=b.positions, cache=cache, use_cache=True)` (`past_key_values=` before
  transformers 5.24; `aura.compat.CACHE_KWARG` names it) once, then feed token ids with a
  `(B, 1, 1, T + t)` additive padding mask and `positions + 1` per step (plain causal decoding).
- `student.hidden_states(batch, layers, blocks=None)`: states `hidden_states[i]` (0 = input embeddings,
  i = output of block i) for i in `layers`; with `blocks=n` the forward stops after block n, so blocks
  past n and the LM head are never computed (the distillation-only stage).
- `student.merge_lora()`: fold LoRA into the base weights for faster inference (not for audio-expert
  adapters, whose effect depends on the position).
- `student.positions(mask)`: context for any direct `student.llm(...)` call over a batch: with
  audio-expert adapters (`model.adapter=audio-expert`, `student.expert`) LoRA acts only where `mask`
  (`batch.audio_mask`) is true, and a forward with no audio runs the base LLM; otherwise a no-op.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from aura.audio.chunks import causal_log_mel
from aura.audio.features import log_mel
from aura.config import ConfigError, ModelConfig
from aura.model import batching, checkpoint
from aura.model.audio_expert import AudioExpert
from aura.model.batching import StudentBatch, chunk_tokens, pad_rows, splice_row
from aura.model.checkpoint import CheckpointError, StudentMeta
from aura.model.embedding import AudioEmbedding, token_embedding_rms
from aura.model.llm import base_model, decoder_layers, load_llm
from aura.model.prompt import AUDIO_PLACEHOLDER, audio_first, render_chat


def submodule_state(state_dict: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The entries of a submodule (`prefix`), named as the submodule names them."""
    return {k.removeprefix(prefix): v for k, v in state_dict.items() if k.startswith(prefix)}


class _Stop(Exception):
    """Raised by a forward hook to end the LLM forward after block N (distillation-only stage)."""


@contextlib.contextmanager
def _quiet_peft() -> Iterator[None]:
    """peft 0.21 reads transformers' `is_gradient_checkpointing`, deprecated in 5.24, whenever it wraps a
    model: a FutureWarning on every load that no AuRA user can act on."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "`is_gradient_checkpointing` is deprecated", FutureWarning)
        yield


class AuraStudent(nn.Module):
    """LLM (+ LoRA on the first `num_blocks` blocks) whose prompts may contain audio spans."""

    def __init__(
        self,
        llm: PreTrainedModel | PeftModel,
        tokenizer: PreTrainedTokenizerBase,
        audio: nn.Module,
        config: ModelConfig,
        num_blocks: int,
        n_mels: int,
    ) -> None:
        super().__init__()
        self.llm, self.audio = llm, audio
        self.tokenizer = tokenizer
        self.config, self.num_blocks, self.n_mels = config, num_blocks, n_mels
        self._capture: dict[int, torch.Tensor] | None = None
        self._stop_after: int | None = None
        self.expert = AudioExpert(llm) if config.adapter == "audio-expert" else None
        batching.check_audio_attention(config)

    # ---------------------------------------------------------------- construction
    @classmethod
    def build(
        cls,
        config: ModelConfig,
        teacher: Any | None = None,
        llm: PreTrainedModel | None = None,
        tokenizer: PreTrainedTokenizerBase | None = None,
    ) -> AuraStudent:
        """A fresh student for training. `teacher` (an `aura.teacher.whisper.Teacher`) sets N's default, the
        embedding's width and n_mels, and initialises its conv stem and positions (or, for the bridge
        baseline, is the frozen encoder)."""
        if llm is None or tokenizer is None:
            llm, tokenizer = load_llm(config.llm)
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        total = len(decoder_layers(llm))
        num_blocks = config.lora_layers or (teacher.num_layers if teacher is not None else None)
        if num_blocks is None:
            raise ConfigError(
                "model.lora_layers: set it, or give a teacher (its layer count is the default)."
            )
        if not 1 <= num_blocks <= total:
            raise ConfigError(f"model.lora_layers={num_blocks}: the LLM {config.llm} has {total} blocks.")
        n_mels = teacher.n_mels if teacher is not None else 80
        llm_width = llm.get_input_embeddings().weight.shape[1]
        if config.arch == "bridge":
            from aura.model.bridge import BridgeModel

            if teacher is None:
                raise ConfigError("model.arch=bridge needs the Whisper teacher (its encoder is the bridge).")
            audio: nn.Module = BridgeModel(teacher, llm_width, config.k, config.bridge_hidden)
        else:
            rms = token_embedding_rms(llm.get_input_embeddings(), llm.get_input_embeddings().weight.shape[0])
            width = teacher.width if teacher is not None else llm_width
            audio = AudioEmbedding(n_mels, width, llm_width, config.k, rms)
            if teacher is not None:
                audio.init_from_whisper(teacher.model.get_encoder())
        lora = LoraConfig(
            r=config.lora_rank,
            lora_alpha=config.lora_alpha,
            lora_dropout=config.lora_dropout,
            target_modules=list(config.lora_targets),
            layers_to_transform=list(range(num_blocks)),
            layers_pattern="layers",
            task_type="CAUSAL_LM",
        )
        with _quiet_peft():
            peft_llm = get_peft_model(llm, lora)
        return cls(peft_llm, tokenizer, audio, config, num_blocks, n_mels)

    def save_pretrained(self, path: str | Path, state_dict: dict[str, torch.Tensor] | None = None) -> None:
        """Write the inference checkpoint: config, peft adapter, audio embedding (never teacher/heads).

        `state_dict` (the student's own names, `llm.*` and `audio.*`) gives the weights whole when the
        live ones are sharded (FSDP)."""
        path = Path(path)
        if state_dict is None:
            self.llm.save_pretrained(path)
            audio = self.audio.trainable_state_dict()
        else:
            self.llm.save_pretrained(path, state_dict=submodule_state(state_dict, "llm."))
            audio = submodule_state(state_dict, "audio.")
        meta = StudentMeta(self.config, self.num_blocks, self.n_mels, self.audio.describe())
        checkpoint.write_student(path, meta, audio)

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        dtype: torch.dtype = torch.float32,
        device: str | torch.device = "cpu",
        llm: PreTrainedModel | None = None,
        tokenizer: PreTrainedTokenizerBase | None = None,
    ) -> AuraStudent:
        """Load `final/`. The base LLM comes from `model.llm` in its config (a registry name or folder)
        unless `llm`/`tokenizer` are given; the bridge baseline also loads its Whisper encoder by name."""
        path = Path(path)
        checkpoint.require_files(path)
        meta = checkpoint.read_meta(path)
        config = meta.model
        if llm is None or tokenizer is None:
            llm, tokenizer = load_llm(config.llm, dtype=dtype, device=device)
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        audio = checkpoint.read_audio(path, meta)
        try:
            with _quiet_peft():
                peft_llm = PeftModel.from_pretrained(llm, path)
        except RuntimeError as err:  # shape mismatch: the adapter was trained on another base LLM
            raise CheckpointError(
                f"{path}: the LoRA adapter does not fit the base LLM {config.llm!r} named in its config "
                f"({str(err).splitlines()[0]}). Point model.llm at the LLM the run was trained with."
            ) from err
        student = cls(
            peft_llm,
            tokenizer,
            audio.to(device=device, dtype=dtype),
            config,
            meta.num_blocks,
            meta.n_mels,
        )
        return student.eval()

    @property
    def mergeable(self) -> bool:
        """Whether LoRA can fold into the weights: plain LoRA can, audio-expert adapters cannot."""
        return isinstance(self.llm, PeftModel) and self.expert is None

    def merge_lora(self) -> None:
        """Fold the LoRA weights into the LLM (inference only; the adapter can no longer be saved)."""
        if self.expert is not None:
            raise ValueError(
                "audio-expert adapters act at audio positions only and cannot be merged into the weights; "
                "load the model unmerged."
            )
        if isinstance(self.llm, PeftModel):
            self.llm = self.llm.merge_and_unload()

    # ---------------------------------------------------------------- prompts
    def render(self, messages: list[dict[str, str]]) -> str:
        """Chat-templated text for `messages`, ending with the assistant's generation prompt."""
        return render_chat(self.tokenizer, messages)

    def render_prompt(self, prompt: str | None, system: str | None = None, audio: bool = True) -> str:
        """One user turn; with `audio`, a prompt without `<audio>` gets the audio before its text."""
        messages = ([{"role": "system", "content": system}] if system else []) + [
            {"role": "user", "content": audio_first(prompt, clips=int(audio))}
        ]
        return self.render(messages)

    def response_text(self, response: str) -> str:
        """The response as the chat template writes it (with its end-of-turn marker)."""
        # render the prompt with the assistant turn and keep what follows the generation prompt;
        # templates differ in how they close a turn, and this is the only template-agnostic way
        messages = [{"role": "user", "content": "\x00"}]
        head = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        full = self.tokenizer.apply_chat_template(
            messages + [{"role": "assistant", "content": response}], tokenize=False
        )
        if full.startswith(head):
            return full[len(head) :]
        return response + (self.tokenizer.eos_token or "")

    def audio_features(self, wave: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Unpadded log-mel `(n_mels, 2F)` of one clip (chunk-causal: floored at the running peak, as a stream is)."""
        if self.config.audio_attention == "chunk-causal":
            return causal_log_mel(wave, n_mels=self.n_mels)
        return log_mel(wave, n_mels=self.n_mels, pad_to_30s=False)

    def set_audio_attention(self, kind: str) -> None:
        """Run with another `model.audio_attention` than the one trained (a ConfigError names the choices)."""
        self.config = batching.with_audio_attention(self.config, kind)

    # ---------------------------------------------------------------- batching
    def _text_ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"] if text else []

    def build_batch(
        self,
        texts: Sequence[str],
        audio: Sequence[Sequence[torch.Tensor]],
        responses: Sequence[str | None] | None = None,
        stop_after_audio: bool = False,
    ) -> StudentBatch:
        """Splice audio embeddings into tokenised prompts and pad the batch (`aura.model.batching`).

        `stop_after_audio` drops the text after each row's last audio span: under causal text attention
        it cannot change any audio position, so the distillation-only stage need not compute it.
        """
        if len(texts) != len(audio):
            raise ValueError(f"{len(texts)} prompts but {len(audio)} audio lists.")
        embed_tokens = self.llm.get_input_embeddings()
        device = embed_tokens.weight.device
        mels = [m for clips in audio for m in clips]
        audio_embeds = iter(self.audio.embed_clips([m.to(device) for m in mels]) if mels else [])
        rows, chunk = [], chunk_tokens(self.config)
        for i, (text, clips) in enumerate(zip(texts, audio, strict=True)):
            pieces = text.split(AUDIO_PLACEHOLDER)
            if len(pieces) - 1 != len(clips):
                raise ValueError(
                    f"prompt {i} has {len(pieces) - 1} {AUDIO_PLACEHOLDER} placeholders but {len(clips)} clips."
                )
            if stop_after_audio and clips:
                pieces[-1] = ""
            response = responses[i] if responses is not None else None
            response_ids = None if response is None else self._text_ids(self.response_text(response))
            rows.append(
                splice_row(i, pieces, audio_embeds, response_ids, self._text_ids, embed_tokens, chunk)
            )
        bidirectional = self.config.audio_attention != "causal"  # chunk-causal: within each chunk
        return pad_rows(rows, bidirectional, device, labelled=responses is not None)

    # ---------------------------------------------------------------- forward
    @contextlib.contextmanager
    def _hooks(self, layers: Sequence[int], blocks: int | None) -> Iterator[dict[int, torch.Tensor]]:
        """Capture `hidden_states[i]` for i in `layers` and (if `blocks`) stop after block `blocks`.

        Hooks rather than `output_hidden_states`: they work for every decoder architecture, and they
        let the forward end after block N. The flags are cleared on exit so a gradient-checkpointing
        recomputation during backward neither captures nor stops.
        """
        blocks_list = decoder_layers(self.llm)
        captured: dict[int, torch.Tensor] = {}
        handles = []

        def pre_hook(_m: nn.Module, args: tuple, kwargs: dict) -> None:
            if self._capture is not None:
                self._capture[0] = args[0] if args else kwargs["hidden_states"]

        def post_hook(index: int):
            def hook(_m: nn.Module, _args: tuple, output: Any) -> None:
                if self._capture is None:
                    return
                state = output[0] if isinstance(output, tuple) else output
                if index in wanted:
                    self._capture[index] = state
                if self._stop_after == index:
                    raise _Stop

            return hook

        wanted = set(layers)
        if max(wanted, default=0) > len(blocks_list) or (
            blocks is not None and max(wanted, default=0) > blocks
        ):
            raise ValueError(
                f"hidden state {max(wanted)} is past the blocks that run ({blocks or len(blocks_list)})."
            )
        if 0 in wanted:
            handles.append(blocks_list[0].register_forward_pre_hook(pre_hook, with_kwargs=True))
        last = max([i for i in wanted if i > 0] + ([blocks] if blocks else []), default=0)
        for index in range(1, last + 1):
            if index in wanted or index == blocks:
                handles.append(blocks_list[index - 1].register_forward_hook(post_hook(index)))
        self._capture, self._stop_after = captured, blocks
        try:
            yield captured
        finally:
            self._capture, self._stop_after = None, None
            for handle in handles:
                handle.remove()

    def _decoder(self) -> nn.Module:
        return base_model(self.llm).get_decoder()

    def positions(self, audio_mask: torch.Tensor | None) -> contextlib.AbstractContextManager[None]:
        """Where the adapters act in the forwards inside (see the module docstring)."""
        return self.expert.at(audio_mask) if self.expert is not None else contextlib.nullcontext()

    def hidden_states(
        self, batch: StudentBatch, layers: Sequence[int], blocks: int | None = None
    ) -> dict[int, torch.Tensor]:
        """`{i: hidden_states[i] (B, T, d)}`; with `blocks`, blocks past it are never called."""
        with self._hooks(layers, blocks) as captured, self.positions(batch.audio_mask):
            with contextlib.suppress(_Stop):
                self._decoder()(
                    inputs_embeds=batch.embeds,
                    attention_mask=batch.mask,
                    position_ids=batch.positions,
                    use_cache=False,
                )
            return dict(captured)

    def forward_lm(
        self, batch: StudentBatch, layers: Sequence[int] = ()
    ) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
        """Full forward: mean next-token cross-entropy on `batch.labels` and the requested hidden states.

        The LM head runs only on the positions that predict a label token, not on the whole prompt.
        """
        logits, targets, states = self._response_logits(batch, layers)
        return nn.functional.cross_entropy(logits, targets), states

    def response_nll(self, batch: StudentBatch) -> list[torch.Tensor]:
        """Each row's per-token cross-entropy over its response, in order: where in the answer a loss sits."""
        logits, targets, _ = self._response_logits(batch, ())
        nll = nn.functional.cross_entropy(logits, targets, reduction="none")
        counts = (batch.labels[:, 1:] != -100).sum(1).tolist()  # type: ignore[index]
        return list(nll.split(counts))

    def _response_logits(
        self, batch: StudentBatch, layers: Sequence[int]
    ) -> tuple[torch.Tensor, torch.Tensor, dict[int, torch.Tensor]]:
        """Logits and targets of the label tokens (row-major), and the requested hidden states."""
        if batch.labels is None:
            raise ValueError("the LM loss needs a batch built with responses (labels).")
        with self._hooks(layers, None) as captured, self.positions(batch.audio_mask):
            out = self._decoder()(
                inputs_embeds=batch.embeds,
                attention_mask=batch.mask,
                position_ids=batch.positions,
                use_cache=False,
            )
            states = dict(captured)
        targets = batch.labels[:, 1:]
        keep = targets != -100
        logits = self.vocabulary_logits(out.last_hidden_state[:, :-1][keep])
        return logits, targets[keep], states

    def vocabulary_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """The LLM's own token logits (float32) for the decoder's output states (final norm applied)."""
        base = base_model(self.llm)
        logits = base.get_output_embeddings()(hidden).float()
        cap = getattr(base.config, "final_logit_softcapping", None)
        return torch.tanh(logits / cap) * cap if cap else logits
