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
- `student.build_batch(texts, audio, responses=None)` -> `StudentBatch`: each
  `<audio>` in `texts[i]` is replaced by the embeddings of the next clip in `audio[i]` (a list of
  log-mels, any number of clips, anywhere in the text). Returns `embeds (B, T, d)`, a 4-D additive
  `mask (B, 1, T, T)` (0 = attend; causal, bidirectional inside each audio span if configured, padding
  masked; rows right-padded), `positions (B, T)` (count real tokens only),
  `valid (B, T)`, `lengths`, `audio_mask (B, T)` and, with `responses`, `labels (B, T)` (-100 except
  response tokens, HF convention: label at the token's own position).
- Generation with a KV cache: run `student.llm(inputs_embeds=b.embeds, attention_mask=b.mask,
  position_ids=b.positions, cache=cache, use_cache=True)` (`past_key_values=` before
  transformers 5.24; `aura.model.llm.CACHE_KWARG` names it) once, then feed token ids with a
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
import dataclasses
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from aura.audio.chunks import causal_log_mel, chunk_frames
from aura.audio.features import log_mel
from aura.config import ConfigError, ModelConfig
from aura.data.manifest import AUDIO_PLACEHOLDER
from aura.model.audio_expert import AudioExpert
from aura.model.embedding import AudioEmbedding, token_embedding_rms

CONFIG_FILE = "aura_config.yaml"
EMBEDDING_FILE = "audio_embedding.safetensors"
MAX_CHUNKS = 1 << 16  # more chunks than one clip can have: numbers clip * MAX_CHUNKS + chunk stay apart


def with_transcript(prompt: str | None, transcript: str) -> str:
    """`prompt` with `transcript` as text where its audio was (before the text when the prompt names no
    place: the rule `AuraStudent.render_prompt` applies to audio)."""
    prompt = prompt or ""
    if AUDIO_PLACEHOLDER not in prompt:
        return f"{transcript}\n{prompt}".rstrip("\n")
    return prompt.replace(AUDIO_PLACEHOLDER, transcript)


class CheckpointError(FileNotFoundError):
    """A checkpoint folder that is missing a file or does not describe an AuRA student."""


@dataclass
class StudentBatch:
    """A padded batch ready for the LLM (see the module docstring)."""

    embeds: torch.Tensor
    mask: torch.Tensor
    positions: torch.Tensor
    valid: torch.Tensor
    lengths: list[int]
    audio_mask: torch.Tensor
    labels: torch.Tensor | None = None


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


def base_model(llm: nn.Module) -> nn.Module:
    """The causal LM itself, under its peft wrapper if it has one (the same modules, LoRA layers included)."""
    return llm.get_base_model() if isinstance(llm, PeftModel) else llm


def decoder_layers(llm: nn.Module) -> nn.ModuleList:
    """The decoder block list of a (possibly peft-wrapped) causal LM."""
    base = base_model(llm)
    layers = getattr(base.get_decoder(), "layers", None)
    if not isinstance(layers, nn.ModuleList):
        raise TypeError(f"{type(base).__name__}: cannot find its decoder blocks (expected `.layers`).")
    return layers


def span_attention_mask(
    valid: torch.Tensor, spans: torch.Tensor, bidirectional: bool, dtype: torch.dtype
) -> torch.Tensor:
    """4-D additive mask: causal over real tokens, plus full attention inside each audio span.

    `spans` holds 0 for text/padding and a per-row span number (> 0) for audio positions. Padding rows
    may attend to themselves only, so no softmax row is empty.
    """
    length = valid.shape[1]
    causal = torch.ones(length, length, dtype=torch.bool, device=valid.device).tril()
    allowed = causal[None] & valid[:, None, :]
    if bidirectional:
        allowed |= (spans[:, :, None] == spans[:, None, :]) & (spans[:, :, None] > 0)
    allowed |= torch.eye(length, dtype=torch.bool, device=valid.device)[None]
    mask = torch.zeros(allowed.shape, dtype=dtype, device=valid.device)
    return mask.masked_fill(~allowed, torch.finfo(dtype).min)[:, None]


def _check_attention(config: ModelConfig) -> None:
    """Chunk-causal attention needs AuRA's embedding layer and chunks of whole audio tokens."""
    if config.audio_attention != "chunk-causal":
        return
    if config.arch == "bridge":
        raise ConfigError(
            "model.audio_attention=chunk-causal reads audio chunk by chunk through AuRA's embedding layer; "
            "the bridge's Whisper encoder attends over the whole clip. Use model.arch=aura."
        )
    chunk_frames(config.audio_chunk_seconds, config.k)


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
        _check_attention(config)

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
            from aura.model.llm import load_llm

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
        path.mkdir(parents=True, exist_ok=True)
        if state_dict is None:
            self.llm.save_pretrained(path)
            audio = self.audio.trainable_state_dict()
        else:
            self.llm.save_pretrained(path, state_dict=submodule_state(state_dict, "llm."))
            audio = submodule_state(state_dict, "audio.")
        tensors = {k: v.detach().contiguous().cpu() for k, v in audio.items()}
        save_file(tensors, path / EMBEDDING_FILE)
        meta = {
            "model": dataclasses.asdict(self.config),
            "num_blocks": self.num_blocks,
            "n_mels": self.n_mels,
            "audio": self.audio.describe(),
        }
        (path / CONFIG_FILE).write_text(yaml.safe_dump(meta, sort_keys=False))

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
        for name in (CONFIG_FILE, EMBEDDING_FILE, "adapter_config.json"):
            if not (path / name).is_file():
                raise CheckpointError(
                    f"{path}: missing {name}; expected an AuRA checkpoint (RUN_DIR/final written by `aura train`)."
                )
        meta = yaml.safe_load((path / CONFIG_FILE).read_text())
        from aura.config import AuraConfig

        config = AuraConfig.from_dict({"model": meta["model"]}, source=str(path / CONFIG_FILE)).model
        if llm is None or tokenizer is None:
            from aura.model.llm import load_llm

            llm, tokenizer = load_llm(config.llm, dtype=dtype, device=device)
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        audio_meta = meta["audio"]
        if config.arch == "bridge":
            from aura.model.bridge import BridgeModel
            from aura.teacher.whisper import load_teacher

            audio: nn.Module = BridgeModel(
                load_teacher(config.teacher), audio_meta["llm_width"], config.k, audio_meta["hidden"]
            )
        else:
            audio = AudioEmbedding(
                audio_meta["n_mels"],
                audio_meta["width"],
                audio_meta["llm_width"],
                config.k,
                audio_meta["target_rms"],
            )
        missing, _ = audio.load_state_dict(load_file(path / EMBEDDING_FILE), strict=False)
        if any(not name.startswith("encoder.") for name in missing):
            raise CheckpointError(f"{path / EMBEDDING_FILE}: missing weights {missing}.")
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
            meta["num_blocks"],
            meta["n_mels"],
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
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def render_prompt(self, prompt: str | None, system: str | None = None, audio: bool = True) -> str:
        """One user turn; with `audio`, a prompt without `<audio>` gets the audio before its text."""
        prompt = prompt or ""
        if audio and AUDIO_PLACEHOLDER not in prompt:
            prompt = f"{AUDIO_PLACEHOLDER}\n{prompt}".rstrip("\n")
        messages = ([{"role": "system", "content": system}] if system else []) + [
            {"role": "user", "content": prompt}
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
        """Unpadded log-mel `(n_mels, 2F)` of one 16-kHz clip, the embedding layer's input (floored at the
        running peak when chunk-causal, so a stream computes the same features; see `aura.audio.chunks`)."""
        if self.config.audio_attention == "chunk-causal":
            return causal_log_mel(wave, n_mels=self.n_mels)
        return log_mel(wave, n_mels=self.n_mels, pad_to_30s=False)

    def set_audio_attention(self, kind: str) -> None:
        """Run with another `model.audio_attention` than the one trained (a ConfigError names the choices)."""
        from aura.config import AuraConfig

        checked = AuraConfig.from_dict({"model": {"audio_attention": kind}}, source="audio_attention").model
        config = dataclasses.replace(self.config, audio_attention=checked.audio_attention)
        _check_attention(config)
        self.config = config

    @property
    def chunk_tokens(self) -> int | None:
        """Audio tokens per chunk under chunk-causal attention; None under the other attentions."""
        if self.config.audio_attention != "chunk-causal":
            return None
        return chunk_frames(self.config.audio_chunk_seconds, self.config.k) // self.config.k

    def _span_numbers(self, tokens: int, clip: int) -> torch.Tensor:
        """The mask's numbers for one clip's audio tokens: tokens sharing a number see each other both ways,
        so a clip has one number, or one per chunk under chunk-causal attention."""
        numbers = torch.full((tokens,), clip + 1, dtype=torch.long)
        if self.chunk_tokens is None:
            return numbers
        return numbers * MAX_CHUNKS + torch.arange(tokens) // self.chunk_tokens

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
        """Splice audio embeddings into tokenised prompts and pad the batch (see module docstring).

        `stop_after_audio` drops the text after each row's last audio span: under causal text attention
        it cannot change any audio position, so the distillation-only stage need not compute it.
        """
        if len(texts) != len(audio):
            raise ValueError(f"{len(texts)} prompts but {len(audio)} audio lists.")
        embed_tokens = self.llm.get_input_embeddings()
        device = embed_tokens.weight.device
        mels = [m for clips in audio for m in clips]
        audio_embeds = iter(self.audio.embed_clips([m.to(device) for m in mels]) if mels else [])
        rows: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]] = []
        for i, (text, clips) in enumerate(zip(texts, audio, strict=True)):
            pieces = text.split(AUDIO_PLACEHOLDER)
            if len(pieces) - 1 != len(clips):
                raise ValueError(
                    f"prompt {i} has {len(pieces) - 1} {AUDIO_PLACEHOLDER} placeholders but {len(clips)} clips."
                )
            if stop_after_audio and clips:
                pieces[-1] = ""
            parts, spans, labels = [], [], []
            for j, piece in enumerate(pieces):
                ids = self._text_ids(piece)
                if ids:
                    parts.append(embed_tokens(torch.tensor(ids, device=device)))
                    spans.append(torch.zeros(len(ids), dtype=torch.long))
                    labels.append(torch.full((len(ids),), -100))
                if j < len(clips):
                    emb = next(audio_embeds).to(parts[0].dtype if parts else embed_tokens.weight.dtype)
                    parts.append(emb)
                    spans.append(self._span_numbers(emb.shape[0], j))
                    labels.append(torch.full((emb.shape[0],), -100))
            response = responses[i] if responses is not None else None
            if response is not None:
                ids = self._text_ids(self.response_text(response))
                parts.append(embed_tokens(torch.tensor(ids, device=device)))
                spans.append(torch.zeros(len(ids), dtype=torch.long))
                labels.append(torch.tensor(ids))
            if not parts:
                raise ValueError(f"prompt {i} is empty.")
            rows.append(
                (torch.cat(parts), torch.cat(spans), torch.cat(labels), torch.ones(sum(map(len, spans))))
            )
        length = max(r[0].shape[0] for r in rows)
        width = rows[0][0].shape[1]
        b = len(rows)
        embeds = torch.zeros(b, length, width, dtype=rows[0][0].dtype, device=device)
        span_ids = torch.zeros(b, length, dtype=torch.long)
        label_ids = torch.full((b, length), -100, dtype=torch.long)
        valid = torch.zeros(b, length, dtype=torch.bool)
        for i, (emb, spans_i, labels_i, _) in enumerate(rows):
            n = emb.shape[0]
            embeds[i, :n], span_ids[i, :n], label_ids[i, :n], valid[i, :n] = emb, spans_i, labels_i, True
        positions = (valid.long().cumsum(1) - 1).clamp(min=0)
        bidirectional = self.config.audio_attention != "causal"  # chunk-causal: within each chunk
        mask = span_attention_mask(valid, span_ids, bidirectional, embeds.dtype)
        return StudentBatch(
            embeds=embeds,
            mask=mask.to(device),
            positions=positions.to(device),
            valid=valid.to(device),
            lengths=[r[0].shape[0] for r in rows],
            audio_mask=(span_ids > 0).to(device),
            labels=label_ids.to(device) if responses is not None else None,
        )

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
