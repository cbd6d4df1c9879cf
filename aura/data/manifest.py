"""The manifest: one JSON object a line, each a training or evaluation example with its audio clip.

Every producer (synthesis, imports) writes it through `write_manifest` and every consumer (check,
trainer, eval) reads it through `read_manifest`, so the format is defined exactly once: `Example`.
Bad lines are never dropped silently: they either fail the read with every problem listed (file and
line), or, with `skip_bad`, are written to `rejects.jsonl` beside the manifest.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from aura.audio.features import SAMPLE_RATE, AudioError, load_audio
from aura.data.augment import Augmentation
from aura.model.prompt import AUDIO_PLACEHOLDER

DEFAULT_MAX_SECONDS = 30.0
DURATION_TOLERANCE = 0.1  # seconds; declared vs decoded length (resampling rounds a few samples)
REJECTS_NAME = "rejects.jsonl"
# the task of untranscribed audio: distillation needs only the clip (the teacher labels it), so it has no response
AUDIO_TASK = "audio"


class Example(BaseModel):
    """One manifest line. `audio` is relative to the manifest's folder when stored on disk."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(min_length=1, description="unique within the manifest")
    audio: str = Field(min_length=1, description="clip path, relative to the manifest file")
    task: str = Field(min_length=1, description="asr, spoken-qa, context-qa, summarize, ...")
    prompt: str = Field(description="text part of the request; `<audio>` marks where the clip goes")
    response: str | None = Field(
        default=None, min_length=1, description=f"target text (none only for task '{AUDIO_TASK}')"
    )
    transcript: str | None = Field(default=None, description="normalised gold words of the clip")
    duration: float = Field(gt=0, description="clip length in seconds")
    engine: str | None = Field(
        default=None, description="synthesis engine of a synthetic clip (espeak, piper, ...)"
    )
    voice: str | None = Field(default=None, description="the engine's voice (espeak: voice+variant)")
    augment: Augmentation | None = Field(
        default=None, description="speaker and channel augmentation applied to the clip (aura.data.augment)"
    )
    entity: str | None = Field(default=None, description="what the split was decided on (country, sentence)")
    distractors: list[str] | None = Field(
        default=None, description="wrong answers the prompt also offers; a correct answer names none of them"
    )
    parts: list[str] | None = Field(
        default=None, description="ids of the clips a packed window joins, in order (aura.data.pack)"
    )

    @model_validator(mode="after")
    def _response_unless_audio(self) -> Example:
        if self.response is None and self.task != AUDIO_TASK:
            raise ValueError(
                f"task '{self.task}' needs a response; only task '{AUDIO_TASK}' (untranscribed) has none"
            )
        return self


@dataclass(frozen=True)
class Problem:
    """One thing wrong with one manifest line (line 0: the file as a whole)."""

    file: str
    line: int
    message: str
    raw: str = ""

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.message}"


class ManifestError(ValueError):
    """A manifest with bad lines; `problems` lists each one with its line number."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        shown = "\n".join(f"  {p}" for p in problems[:20])
        more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        super().__init__(
            f"{len(problems)} problem(s) in the manifest:\n{shown}{more}\n"
            f"Fix them, or pass skip_bad / --skip-bad to write them to {REJECTS_NAME} instead."
        )


def _validation_message(err: ValidationError) -> str:
    parts = []
    for item in err.errors():
        field = ".".join(str(x) for x in item["loc"]) or "line"
        if item["type"] == "missing":
            parts.append(f"missing field '{field}'")
        elif not item["loc"]:  # a whole-example rule
            parts.append(str(item["msg"]).removeprefix("Value error, "))
        elif item["type"] == "extra_forbidden":
            parts.append(f"unknown field '{field}'")
        else:
            parts.append(f"field '{field}': {item['msg']}")
    return "; ".join(parts)


def _parse_lines(path: Path) -> Iterator[tuple[int, str, Example | Problem]]:
    """Parse each non-blank line into an `Example` or a `Problem` (JSON and schema only)."""
    name = str(path)
    with path.open(encoding="utf-8", errors="replace") as handle:
        for number, raw in enumerate(handle, start=1):
            text = raw.strip()
            if not text:
                continue
            try:
                data = json.loads(text)
            except json.JSONDecodeError as err:
                yield (
                    number,
                    text,
                    Problem(name, number, f"not valid JSON ({err.msg} at column {err.colno})", text),
                )
                continue
            if not isinstance(data, dict):
                yield number, text, Problem(name, number, "not a JSON object", text)
                continue
            try:
                example = Example.model_validate(data)
            except ValidationError as err:
                yield number, text, Problem(name, number, _validation_message(err), text)
                continue
            yield number, text, example


def _semantic_problems(example: Example, root: Path, max_seconds: float, check_audio: bool) -> list[str]:
    """What is wrong with a schema-valid example: placeholder count, length limit, the audio file."""
    found = []
    if example.prompt.count(AUDIO_PLACEHOLDER) > 1:
        found.append(
            f"prompt has {example.prompt.count(AUDIO_PLACEHOLDER)} '{AUDIO_PLACEHOLDER}' placeholders; use one"
        )
    if example.duration > max_seconds:
        found.append(f"clip is {example.duration:.1f} s, over the limit of {max_seconds:g} s")
    audio = root / example.audio
    if not audio.is_file():
        found.append(f"audio file {audio} does not exist")
    elif check_audio:
        try:
            wave = load_audio(audio)
        except AudioError as err:
            found.append(f"audio does not decode: {err}")
        else:
            seconds = wave.size / SAMPLE_RATE
            if abs(seconds - example.duration) > DURATION_TOLERANCE:
                found.append(f"duration says {example.duration:.3f} s but the audio is {seconds:.3f} s")
            if seconds > max_seconds and example.duration <= max_seconds:
                found.append(f"audio is {seconds:.1f} s, over the limit of {max_seconds:g} s")
    return found


def scan_manifest(
    path: str | Path, *, max_seconds: float = DEFAULT_MAX_SECONDS, check_audio: bool = True
) -> tuple[list[Example], list[Problem]]:
    """Validate every line; return the good examples (audio resolved to absolute paths) and the problems."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: no such manifest file. Create one with `aura data synth` or `aura data import`."
        )
    root = path.resolve().parent
    good: list[Example] = []
    problems: list[Problem] = []
    seen: dict[str, int] = {}
    for number, raw, parsed in _parse_lines(path):
        if isinstance(parsed, Problem):
            problems.append(parsed)
            continue
        issues = _semantic_problems(parsed, root, max_seconds, check_audio)
        if parsed.id in seen:
            issues.append(f"duplicate id '{parsed.id}' (first on line {seen[parsed.id]})")
        else:
            seen[parsed.id] = number
        if issues:
            problems.extend(Problem(str(path), number, msg, raw) for msg in issues)
            continue
        good.append(parsed.model_copy(update={"audio": os.path.normpath(root / parsed.audio)}))
    if not good and not problems:
        problems.append(Problem(str(path), 0, "the manifest has no examples"))
    return good, problems


def write_rejects(problems: Iterable[Problem], path: str | Path) -> Path:
    """Write problems as JSON lines (file, line, reason, raw input) so nothing bad vanishes unseen."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as handle:
        for p in problems:
            handle.write(
                json.dumps({"file": p.file, "line": p.line, "reason": p.message, "raw": p.raw}) + "\n"
            )
    return path


def read_manifest(
    path: str | Path,
    *,
    max_seconds: float = DEFAULT_MAX_SECONDS,
    check_audio: bool = False,
    skip_bad: bool = False,
) -> list[Example]:
    """Load a manifest for training or evaluation, with `audio` resolved to absolute paths.

    Any bad line raises `ManifestError` listing all of them, unless `skip_bad`, which writes them to
    `rejects.jsonl` beside the manifest and returns the rest. `check_audio` also decodes every clip
    (slow for big sets; `aura data check` does it once up front).
    """
    good, problems = scan_manifest(path, max_seconds=max_seconds, check_audio=check_audio)
    if problems:
        if not skip_bad or not good:
            raise ManifestError(problems)
        write_rejects(problems, Path(path).parent / REJECTS_NAME)
    return good


def write_manifest(examples: Iterable[Example], path: str | Path) -> Path:
    """Write examples as JSON lines, storing each audio path relative to the manifest's folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    root = path.resolve().parent
    with path.open("w", encoding="utf-8") as handle:
        for ex in examples:
            audio = Path(ex.audio)
            if audio.is_absolute():
                audio = Path(os.path.relpath(audio, root))
            row = ex.model_copy(update={"audio": audio.as_posix()})
            handle.write(row.model_dump_json(exclude_none=True) + "\n")
    return path
