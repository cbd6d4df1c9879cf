"""AuRA's configuration: typed dataclasses, the one place where defaults live.

A config is built from the defaults, then an optional YAML file, then dotted `KEY=VALUE` overrides
(`train.max_steps=20`). Every key is checked against the dataclass fields and their types, so a typo
is an error that names the key instead of a silently ignored setting.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml


class ConfigError(ValueError):
    """A config file or override that cannot be used; the message names the key and what to do."""


DEFAULT_LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@dataclass
class ModelConfig:
    """The student (LLM + LoRA + audio embedding) and the teacher it learns from."""

    arch: Literal["aura", "bridge"] = "aura"
    llm: str = "smollm2-135m-instruct"
    teacher: str = "whisper-tiny.en"
    # audio tokens per second = 50 / k. k=4 (12.5 tokens/s), by measurement (SmolLM2 + whisper-tiny.en,
    # 120 espeak clips, same seed): dev centred cosine after 150 steps, mean over layers, k=4 0.572 vs
    # k=2 0.563, while k=2 puts 57% more tokens in a distillation step (856 vs 544 per batch of 8) and
    # took 2-3x the step time. Halving the rate buys no alignment, and prefill cost grows with it.
    k: int = 4
    lora_rank: int = 64
    lora_alpha: int = 64
    lora_dropout: float = 0.0
    lora_targets: list[str] = field(default_factory=lambda: list(DEFAULT_LORA_TARGETS))
    # number of decoder blocks with LoRA (= blocks the distillation-only stage runs); None = teacher layers
    lora_layers: int | None = None
    audio_attention: Literal["bidirectional", "causal"] = "bidirectional"
    # "identity": student hidden_states[i] <-> teacher hidden_states[i]; "strided": teacher layer t maps
    # to student layer round(t * N / T); or an explicit list of [student, teacher] pairs
    layer_map: str | list[list[int]] = "identity"
    # bridge baseline only: hidden width of the MLP projector (None = LLM width)
    bridge_hidden: int | None = None


@dataclass
class DistillConfig:
    """Layer-wise distillation losses and the teacher cache."""

    loss: Literal["cosine", "mse", "cosine+mse"] = "cosine"
    weight: float = 1.0
    mse_weight: float = 1.0  # weight of the MSE term inside "cosine+mse"
    # weight of the transcript loss (0 = off): the teacher's own frozen Whisper decoder writes each clip's
    # `transcript` while reading the student's last mapped states (what `aura diagnose`'s probe measures),
    # so the states are pushed toward what carries the words, not only toward a high per-frame cosine
    decoder_weight: float = 0.0
    # weight of the token CTC loss (0 = off): the audio states after the last LoRA block, through the LLM's
    # own final norm and LM head, spell the clip's `transcript` in the LLM's tokens (CTC, blank = a lone
    # space token), so the rest of the LLM meets audio positions that look like the words it already reads
    ctc_weight: float = 0.0
    # standardise teacher targets per dimension (training-set mean/std) before the loss
    standardize: bool = False
    # frozen-teacher outputs kept between runs (AuRA's targets, the bridge's encoder states);
    # None = $AURA_HOME/teacher_cache
    cache_dir: str | None = None


@dataclass
class DataConfig:
    """Manifests (JSONL of aura.data.Example) and how examples become prompts."""

    train: str | None = None
    dev: str | None = None
    max_audio_seconds: float = 30.0
    # distillation-only stage: "template" = the chat-templated prompt up to the end of the last audio
    # span (exactly what the first N blocks see at inference, since later text cannot reach audio
    # positions through causal attention); "audio" = the audio span alone (fewer tokens, no context)
    distill_context: Literal["template", "audio"] = "template"
    system_prompt: str | None = None  # None = the chat template's own default


@dataclass
class TrainConfig:
    """The optimisation loop."""

    stage: Literal["distill", "joint"] = "distill"
    max_steps: int = 600
    # length of the warmup + cosine schedule (None = max_steps). Longer stops the run part-way along its
    # schedule with a checkpoint, so `--resume train.max_steps=...` continues it as if never stopped.
    schedule_steps: int | None = None
    batch_size: int = 8
    grad_accum: int = 1
    lr: float = 5e-4
    head_lr: float = 1e-3
    weight_decay: float = 0.0
    warmup_steps: int = 30
    head_warmup_steps: int = 0  # steps where only fresh heads learn (none if init_from brings heads)
    max_grad_norm: float = 1.0
    lm_weight: float = 1.0  # joint stage: total = distill.weight * distill + lm_weight * LM
    # joint stage, weight of the reading loss (0 = off): at every response token, each block's state with
    # the audio is pulled toward the base LLM's state (adapters off, no gradient) with the clip's gold
    # `transcript` written where the audio was. The LM loss says only which token comes next; this says,
    # at every layer, what the response should have taken from its input.
    read_weight: float = 0.0
    save_every: int = 100
    log_every: int = 10
    seed: int = 0
    bf16: bool = False
    grad_checkpointing: bool = False
    init_from: str | None = None  # RUN_DIR, RUN_DIR/final or a shipped name: trainable weights to start from
    dev_every: int = 0  # evaluate the distillation metrics on data.dev every n steps (0 = never)


@dataclass
class AuraConfig:
    """Everything `aura train` needs; `aura train --print-config` prints these defaults as YAML."""

    model: ModelConfig = field(default_factory=ModelConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def save(self, path: str | Path) -> None:
        """Write the YAML whole or not at all (a run killed mid-write must still have its config)."""
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(self.to_yaml())
        os.replace(tmp, path)

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = "config") -> AuraConfig:
        config = cls()
        for key, value in _flatten(data).items():
            _set(config, key, value, source)
        return config


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def _set(config: AuraConfig, key: str, value: Any, source: str) -> None:
    parts = key.split(".")
    target: Any = config
    for i, part in enumerate(parts):
        names = [f.name for f in dataclasses.fields(target)]
        if part not in names:
            where = ".".join(parts[:i]) or "the top level"
            raise ConfigError(
                f"{source}: unknown config key '{key}' ('{part}' is not in {where}; "
                f"valid: {', '.join(names)}). Run `aura train --print-config` to see every key."
            )
        if i == len(parts) - 1:
            hint = typing.get_type_hints(type(target))[part]
            if dataclasses.is_dataclass(hint):
                raise ConfigError(
                    f"{source}: '{key}' is a section; set one of its keys, e.g. {key}.<name>=..."
                )
            setattr(target, part, _coerce(value, hint, key, source))
        else:
            target = getattr(target, part)
            if not dataclasses.is_dataclass(target):
                raise ConfigError(
                    f"{source}: '{'.'.join(parts[: i + 1])}' is a value, not a section (key '{key}')."
                )


def _coerce(value: Any, hint: Any, key: str, source: str) -> Any:
    """Check `value` against the field's type hint, converting the few lossless cases (int -> float)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        errors = []
        for option in typing.get_args(hint):
            try:
                return _coerce(value, option, key, source)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(f"{source}: '{key}' = {value!r} has the wrong type; expected {_type_name(hint)}.")
    if hint is type(None):
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null", "")):
            return None
    elif origin is Literal:
        if value in typing.get_args(hint):
            return value
        choices = ", ".join(map(str, typing.get_args(hint)))
        raise ConfigError(f"{source}: '{key}' = {value!r} is not one of: {choices}.")
    elif origin is list:
        (item,) = typing.get_args(hint)
        if isinstance(value, str) and typing.get_origin(item) is not list:
            value = [v.strip() for v in value.split(",") if v.strip()]
        if isinstance(value, list | tuple):
            return [_coerce(v, item, key, source) for v in value]
    elif hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif hint is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "3e-4" (no dot) as a string
            with contextlib.suppress(ValueError):
                return float(value)
    elif hint is str:
        if isinstance(value, str):
            return value
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)
    raise ConfigError(f"{source}: '{key}' = {value!r} has the wrong type; expected {_type_name(hint)}.")


def _type_name(hint: Any) -> str:
    if isinstance(hint, type):
        return hint.__name__
    return str(hint).replace("typing.", "").replace("NoneType", "None")


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> AuraConfig:
    """Defaults, then the YAML file at `path` (if any), then `KEY=VALUE` overrides (values parsed as YAML)."""
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path}: no such config file.")
        try:
            loaded = yaml.safe_load(path.read_text())
        except yaml.YAMLError as err:
            raise ConfigError(f"{path}: not valid YAML ({err}).") from err
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{path}: expected a mapping of sections (model:, train:, ...) at the top.")
        data = loaded or {}
    config = AuraConfig.from_dict(data, source=str(path) if path else "config")
    for item in overrides or []:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override '{item}': expected KEY=VALUE, e.g. train.max_steps=20.")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            value = raw
        _set(config, key.strip(), value, f"override '{item}'")
    return config
