"""The checkpoint format, read and written here only.

An inference checkpoint (`RUN_DIR/final`, a shipped checkpoint, an `aura export` folder) holds
`aura_config.yaml` (the model config, the LoRA block count, the mel count and the audio module's sizes),
`audio_embedding.safetensors` (the audio module's trained weights) and peft's `adapter_config.json` +
`adapter_model.safetensors`. A merged export has the full LLM (`config.json`) in place of the adapter; an
unmerged export carries the base LLM in `llm/`. The run directory around `final/` holds the training-only
files: `config.yaml` (the whole training config) and the distillation heads.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors.torch import load_file, save_file
from torch import nn

from aura import registry
from aura.config import AuraConfig, ModelConfig, load_config
from aura.model.embedding import AudioEmbedding

CONFIG_FILE = "aura_config.yaml"
EMBEDDING_FILE = "audio_embedding.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
TRAIN_CONFIG = "config.yaml"  # the training config `aura train` writes into RUN_DIR
BASE_LLM_DIR = "llm"  # an unmerged `aura export` ships its base LLM here


class CheckpointError(FileNotFoundError):
    """A checkpoint folder that is missing a file or does not describe an AuRA student."""


@dataclass
class StudentMeta:
    """What `aura_config.yaml` records: enough to rebuild the student before loading its weights."""

    model: ModelConfig
    num_blocks: int
    n_mels: int
    audio: dict[str, Any]  # the audio module's `describe()`: its sizes


def checkpoint_folder(name_or_path: str | Path) -> Path:
    """A folder holding `aura_config.yaml`: the path itself, RUN_DIR/final, or a registered checkpoint name."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        for candidate in (path, path / "final"):
            if (candidate / CONFIG_FILE).is_file():
                return candidate
        raise CheckpointError(
            f"{path}: not an AuRA checkpoint (no {CONFIG_FILE} in it or in {path / 'final'}). "
            "Give a RUN_DIR from `aura train`, its final/ folder, or a folder written by `aura export`."
        )
    if not path.is_absolute() and len(path.parts) == 1:  # a shipped checkpoint's registry name
        return checkpoint_folder(registry.resolve_checkpoint(str(name_or_path)))
    raise CheckpointError(
        f"{name_or_path!r}: no such checkpoint folder. Give a RUN_DIR from `aura train`, its final/ folder, "
        "or a folder written by `aura export`."
    )


def run_folders(model: str | Path) -> tuple[Path, Path]:
    """(inference checkpoint folder, run directory) for RUN_DIR, RUN_DIR/final or a shipped name. The run
    directory holds the training-only files (heads, config.yaml); a shipped checkpoint keeps them inside."""
    folder = checkpoint_folder(model)
    run_dir = folder.parent if folder.name == "final" else folder
    return folder, run_dir


def read_train_config(run_dir: Path) -> AuraConfig | None:
    """The training config saved beside a checkpoint, or None (an export made without one)."""
    path = run_dir / TRAIN_CONFIG
    return load_config(path) if path.is_file() else None


def is_merged(folder: Path) -> bool:
    """A merged `aura export`: the LLM with LoRA folded in, no adapter."""
    return not (folder / ADAPTER_CONFIG).is_file() and (folder / "config.json").is_file()


def base_llm_folder(folder: Path) -> Path | None:
    """The base LLM an unmerged `aura export` carries, or None (the config's `model.llm` names it)."""
    path = folder / BASE_LLM_DIR
    return path if path.is_dir() else None


def require_files(folder: Path) -> None:
    """Refuse a folder that lacks one of an unmerged checkpoint's files, naming it."""
    for name in (CONFIG_FILE, EMBEDDING_FILE, ADAPTER_CONFIG):
        if not (folder / name).is_file():
            raise CheckpointError(
                f"{folder}: missing {name}; expected an AuRA checkpoint (RUN_DIR/final written by `aura train`)."
            )


def read_meta(folder: Path) -> StudentMeta:
    """`aura_config.yaml` of a checkpoint folder (cheap: no weights)."""
    path = folder / CONFIG_FILE
    meta = yaml.safe_load(path.read_text())
    model = AuraConfig.from_dict({"model": meta["model"]}, source=str(path)).model
    return StudentMeta(model, meta["num_blocks"], meta["n_mels"], meta["audio"])


def write_student(folder: Path, meta: StudentMeta, audio_weights: dict[str, torch.Tensor]) -> None:
    """Write the audio module's weights and `aura_config.yaml` (peft writes the adapter beside them)."""
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous().cpu() for k, v in audio_weights.items()}
    save_file(tensors, folder / EMBEDDING_FILE)
    record = {
        "model": dataclasses.asdict(meta.model),
        "num_blocks": meta.num_blocks,
        "n_mels": meta.n_mels,
        "audio": meta.audio,
    }
    (folder / CONFIG_FILE).write_text(yaml.safe_dump(record, sort_keys=False))


def read_audio_weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(folder / EMBEDDING_FILE)


def read_audio(folder: Path, meta: StudentMeta) -> nn.Module:
    """The audio module `meta` describes, with its trained weights; the bridge's frozen Whisper encoder is
    not in the checkpoint and is loaded by name."""
    config, sizes = meta.model, meta.audio
    if config.arch == "bridge":
        from aura.model.bridge import BridgeModel
        from aura.teacher.whisper import load_teacher

        audio: nn.Module = BridgeModel(
            load_teacher(config.teacher), sizes["llm_width"], config.k, sizes["hidden"]
        )
    else:
        audio = AudioEmbedding(
            sizes["n_mels"], sizes["width"], sizes["llm_width"], config.k, sizes["target_rms"]
        )
    missing, _ = audio.load_state_dict(read_audio_weights(folder), strict=False)
    if any(not name.startswith("encoder.") for name in missing):
        raise CheckpointError(f"{folder / EMBEDDING_FILE}: missing weights {missing}.")
    return audio


def read_trained_weights(folder: Path) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(LoRA adapter, audio module) weights to continue training from; a merged export has no adapter."""
    if not (folder / ADAPTER_WEIGHTS).is_file() or not (folder / EMBEDDING_FILE).is_file():
        raise CheckpointError(
            f"{folder} has no adapter + audio embedding to start from "
            "(a merged `aura export` folder cannot be trained further)."
        )
    return load_file(folder / ADAPTER_WEIGHTS), read_audio_weights(folder)
