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


def _key(default: Any = dataclasses.MISSING, help: str = "", *, factory: Any = dataclasses.MISSING) -> Any:
    """A config key: its default (or default factory) and the one-line help `--print-config` shows."""
    if not help:
        raise TypeError("every config key needs a one-line help text")
    if factory is not dataclasses.MISSING:
        return field(default_factory=factory, metadata={"help": help})
    return field(default=default, metadata={"help": help})


@dataclass
class ModelConfig:
    """The student (LLM + LoRA + audio embedding) and the teacher it learns from."""

    arch: Literal["aura", "bridge"] = _key(
        "aura",
        "aura: the LLM's first blocks read the audio; bridge: the baseline (frozen encoder + projector)",
    )
    llm: str = _key(
        "smollm2-135m-instruct", "the student LLM: a name from `aura models` or a local HF folder"
    )
    teacher: str = _key(
        "whisper-tiny.en", "the Whisper teacher: a name from `aura models` or a local HF folder"
    )
    k: int = _key(4, "audio frames stacked into one LLM token: 50 / k audio tokens per second")
    lora_rank: int = _key(64, "LoRA rank of every adapted projection")
    lora_alpha: int = _key(64, "LoRA scale numerator: the update is scaled by lora_alpha / lora_rank")
    lora_dropout: float = _key(0.0, "dropout on the LoRA input while training")
    lora_targets: list[str] = _key(
        help="the linear projections of each adapted block that get LoRA",
        factory=lambda: list(DEFAULT_LORA_TARGETS),
    )
    adapter: Literal["lora", "audio-expert"] = _key(
        "lora",
        "lora: one LoRA at every position (mergeable); audio-expert: LoRA at audio positions only, text "
        "runs the exact base weights (not mergeable)",
    )
    lora_layers: int | None = _key(
        None, "blocks with LoRA from the first, all the distill stage runs (null: the teacher's layer count)"
    )
    audio_attention: Literal["bidirectional", "chunk-causal", "causal"] = _key(
        "bidirectional",
        "bidirectional: a clip's audio tokens see each other; chunk-causal: each sees its own chunk of "
        "audio_chunk_seconds and the chunks before it (audio can then be read while it is spoken); causal: "
        "plain causal attention",
    )
    audio_chunk_seconds: float = _key(
        0.96,
        "chunk-causal only: seconds per chunk, a whole number of k-frame audio tokens (a multiple of k / 50)",
    )
    layer_map: str | list[list[int]] = _key(
        "identity",
        "student layer per teacher layer: identity (i <-> i), strided, or a list of [student, teacher] pairs",
    )
    bridge_hidden: int | None = _key(None, "bridge only: hidden width of the MLP projector (null: LLM width)")


@dataclass
class DistillConfig:
    """Layer-wise distillation losses and the teacher cache."""

    weight: float = _key(1.0, "weight of the layer-wise cosine loss (0 in the joint stage: the ablation)")
    decoder_weight: float = _key(
        0.0, "weight of the transcript loss: Whisper's frozen decoder reads the last mapped states (0: off)"
    )
    standardize: bool = _key(False, "standardise teacher targets per dimension (training-set mean and std)")
    cache_dir: str | None = _key(
        None, "where frozen-teacher outputs are kept between runs (null: $AURA_HOME/teacher_cache)"
    )


@dataclass
class DataConfig:
    """Manifests (JSONL of aura.data.Example) and how examples become prompts."""

    train: str | None = _key(None, "training manifest (JSON Lines of aura.data.Example)")
    dev: str | None = _key(None, "dev manifest, evaluated every train.dev_every steps (null: none)")
    probe: str | None = _key(
        None,
        "manifest whose decoder-probe WER and loss are logged every train.dev_every steps: real recorded speech "
        "(null: none)",
    )
    max_audio_seconds: float = _key(30.0, "longest clip a manifest may hold; a longer one is an error")
    system_prompt: str | None = _key(None, "system message of the chat template (null: the template's own)")


@dataclass
class TrainConfig:
    """The optimisation loop."""

    stage: Literal["distill", "joint"] = _key(
        "distill", "distill: the LoRA blocks alone, distillation losses; joint: the whole LLM, + the LM loss"
    )
    max_steps: int = _key(600, "optimizer steps to run")
    schedule_steps: int | None = _key(
        None, "length of the warmup + cosine schedule (null: max_steps); longer pauses the run, resumable"
    )
    batch_size: int = _key(8, "examples per micro-batch and process")
    grad_accum: int = _key(1, "micro-batches per optimizer step")
    lr: float = _key(5e-4, "peak learning rate of LoRA and the audio embedding")
    head_lr: float = _key(1e-3, "peak learning rate of the distillation heads")
    weight_decay: float = _key(0.0, "AdamW weight decay")
    warmup_steps: int = _key(30, "linear warmup steps before the cosine decay")
    head_warmup_steps: int = _key(
        0, "first steps in which only fresh heads learn (none when init_from brings trained heads)"
    )
    max_grad_norm: float = _key(1.0, "gradient clipping norm (0: off)")
    lm_weight: float = _key(1.0, "joint stage: weight of the LM loss on response tokens")
    save_every: int = _key(100, "a resumable checkpoint every n steps (the last two are kept)")
    log_every: int = _key(10, "a metrics.csv row every n steps")
    seed: int = _key(0, "seed of the initialisation and of the data order")
    bf16: bool = _key(False, "bf16 autocast (faster on GPUs and on CPUs with AMX or AVX512-BF16)")
    grad_checkpointing: bool = _key(False, "recompute activations in the backward pass to save memory")
    init_from: str | None = _key(
        None, "RUN_DIR, RUN_DIR/final or a shipped name: trainable weights (and heads) to start from"
    )
    dev_every: int = _key(0, "evaluate on data.dev every n steps (0: never); joint adds the listening gap")


@dataclass
class AuraConfig:
    """Everything `aura train` needs; `aura train --print-config` prints these defaults as YAML."""

    model: ModelConfig = field(default_factory=ModelConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self, with_help: bool = False) -> str:
        """YAML of every key; `with_help` puts each section's and key's help above it as a comment."""
        if not with_help:
            return yaml.safe_dump(self.to_dict(), sort_keys=False)
        lines = []
        for section in dataclasses.fields(self):
            values = getattr(self, section.name)
            lines += [f"# {type(values).__doc__}", f"{section.name}:"]
            for key in dataclasses.fields(values):
                dumped = yaml.safe_dump({key.name: getattr(values, key.name)}, sort_keys=False)
                lines += [f"  # {key.metadata['help']}", *(f"  {line}" for line in dumped.splitlines())]
        return "\n".join(lines) + "\n"

    def save(self, path: str | Path) -> None:
        """Write the YAML whole or not at all (a run killed mid-write must still have its config)."""
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(self.to_yaml())
        os.replace(tmp, path)

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = "config") -> AuraConfig:
        config = cls()
        for key, value in flatten(data).items():
            _set(config, key, value, source)
        return config


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, f"{name}."))
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
