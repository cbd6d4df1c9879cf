"""`aura data import`: turn existing speech corpora into a manifest.

Sources: LibriSpeech-style folders (`*.flac` + `*.trans.txt`), a CSV/TSV of `path,text`, a Hugging
Face `datasets` dataset saved with `save_to_disk` that has an Audio column, a folder of untranscribed
recordings (`audio-folder`: task `audio`, for distillation, which needs no transcript), and the Asterisk
English telephone prompts (real recorded speech, for evaluation only: `import_asterisk`). Every clip is decoded once
(which proves it is readable and gives its true duration); clips already 16-kHz mono are copied (or
referenced in place), others are resampled to 16-kHz wav. Bad items fail the import with every problem
listed, or with `skip_bad` go to `rejects.jsonl`: nothing is dropped unseen.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
from tqdm import tqdm

from aura.audio.features import SAMPLE_RATE, AudioError, has_sound, load_audio
from aura.data.manifest import (
    AUDIO_TASK,
    DEFAULT_MAX_SECONDS,
    REJECTS_NAME,
    Example,
    ManifestError,
    Problem,
    write_manifest,
    write_rejects,
)
from aura.metrics import normalize_transcript
from aura.model.prompt import ASR_PROMPTS

SOURCES = ("librispeech", "csv", "hf-disk", "audio-folder", "asterisk")
# Debian's `asterisk-core-sounds-en-wav` (audio) and `asterisk-core-sounds-en` (transcripts).
ASTERISK_AUDIO = Path("/usr/share/asterisk/sounds/en_US_f_Allison")
ASTERISK_TRANSCRIPTS = Path("/usr/share/doc/asterisk-core-sounds-en/core-sounds-en.txt.gz")
ASTERISK_INSTALL = "apt-get install asterisk-core-sounds-en-wav asterisk-core-sounds-en"
_ASTERISK_NOTE = re.compile(r"\s*(\[[^\]]*\]|<[^>]*>|\([^)]*\))")
TEXT_COLUMNS = ("text", "transcript", "transcription", "sentence", "normalized_text")
PATH_COLUMNS = ("path", "audio", "file", "filename")
_AUDIO_SUFFIXES = (".flac", ".wav")
_FOLDER_SUFFIXES = (".flac", ".wav", ".ogg")  # what soundfile decodes


@dataclass(frozen=True)
class Item:
    """One clip found in a source, before decoding. `where`/`line` locate it for error messages."""

    id: str
    audio: Path | bytes | None
    text: str
    where: str
    line: int
    problem: str = ""


def _safe_id(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "clip"


def librispeech_items(src: Path) -> Iterator[Item]:
    """Utterances of every `*.trans.txt` (lines `ID words...`), audio `ID.flac` beside it; clips
    without a transcript line are reported too."""
    transcripts = sorted(src.rglob("*.trans.txt"))
    if not transcripts:
        raise ValueError(f"{src}: no *.trans.txt files under it, so it is not a LibriSpeech-style folder.")
    covered: set[Path] = set()
    for trans in transcripts:
        for number, raw in enumerate(
            trans.read_text(encoding="utf-8", errors="replace").splitlines(), start=1
        ):
            if not raw.strip():
                continue
            utt, _, text = raw.strip().partition(" ")
            audio = next(
                (
                    trans.parent / f"{utt}{s}"
                    for s in _AUDIO_SUFFIXES
                    if (trans.parent / f"{utt}{s}").is_file()
                ),
                None,
            )
            if audio is None:
                yield Item(
                    utt, None, text, str(trans), number, f"audio {trans.parent / utt}.flac does not exist"
                )
                continue
            covered.add(audio)
            yield Item(
                utt, audio, text.strip(), str(trans), number, "" if text.strip() else "empty transcript"
            )
    for audio in sorted(p for s in _AUDIO_SUFFIXES for p in src.rglob(f"*{s}")):
        if audio not in covered:
            yield Item(audio.stem, audio, "", str(audio), 0, "no line for this clip in any *.trans.txt")


def csv_items(src: Path) -> Iterator[Item]:
    """Rows of a CSV/TSV (tab if the file ends in .tsv): `path,text`, header optional; paths are
    relative to the file's folder."""
    if not src.is_file():
        raise FileNotFoundError(f"{src}: no such CSV/TSV file.")
    delimiter = "\t" if src.suffix.lower() == ".tsv" else ","
    with src.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.reader(handle, delimiter=delimiter))
    path_col, text_col, start = 0, 1, 0
    if rows:
        header = [h.strip().lower() for h in rows[0]]
        if any(h in PATH_COLUMNS for h in header) and any(h in TEXT_COLUMNS for h in header):
            path_col = next(i for i, h in enumerate(header) if h in PATH_COLUMNS)
            text_col = next(i for i, h in enumerate(header) if h in TEXT_COLUMNS)
            start = 1
    for number, row in enumerate(rows[start:], start=start + 1):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) <= max(path_col, text_col):
            yield Item(
                f"line{number}",
                None,
                "",
                str(src),
                number,
                f"expected path and text columns, got {len(row)} column(s)",
            )
            continue
        rel, text = row[path_col].strip(), row[text_col].strip()
        audio = src.parent / rel
        clip_id = f"{number:06d}-{_safe_id(Path(rel).stem)}"
        if not audio.is_file():
            yield Item(clip_id, None, text, str(src), number, f"audio file {audio} does not exist")
        else:
            yield Item(clip_id, audio, text, str(src), number, "" if text else "empty text")


def hf_disk_items(src: Path) -> Iterator[Item]:
    """Rows of a `save_to_disk` dataset (every split of a DatasetDict); needs the `datasets` package."""
    try:
        import datasets
    except ImportError as err:
        raise ImportError(
            "importing a Hugging Face dataset needs the `datasets` package: pip install datasets "
            "(or pip install 'aura-speech[test]')."
        ) from err
    try:
        loaded = datasets.load_from_disk(str(src))
    except (FileNotFoundError, ValueError) as err:
        raise ValueError(f"{src}: not a dataset saved with save_to_disk ({err}).") from err
    parts = loaded.items() if isinstance(loaded, datasets.DatasetDict) else [("", loaded)]
    for split, table in parts:
        audio_col = next((k for k, f in table.features.items() if isinstance(f, datasets.Audio)), None)
        text_col = next((k for k in TEXT_COLUMNS if k in table.features), None)
        if audio_col is None or text_col is None:
            raise ValueError(
                f"{src}: the dataset needs an Audio column and a text column (one of {', '.join(TEXT_COLUMNS)}); "
                f"it has {', '.join(table.features)}."
            )
        table = table.cast_column(audio_col, datasets.Audio(decode=False))  # we decode ourselves
        where = f"{src}[{split}]" if split else str(src)
        for index, row in enumerate(table):
            cell = row[audio_col] or {}
            audio = cell.get("bytes") or (Path(cell["path"]) if cell.get("path") else None)
            clip_id = f"{split + '-' if split else ''}{index:06d}"
            text = (row[text_col] or "").strip()
            problem = "no audio in this row" if audio is None else ("" if text else "empty text")
            yield Item(clip_id, audio, text, where, index + 1, problem)


def audio_folder_items(src: Path) -> Iterator[Item]:
    """Every .wav, .flac and .ogg file under `src`, untranscribed; ids are the paths below `src`."""
    if not src.is_dir():
        raise ValueError(f"{src}: not a folder; --from audio-folder imports every audio file under a folder.")
    files = sorted(p for p in src.rglob("*") if p.suffix.lower() in _FOLDER_SUFFIXES and p.is_file())
    if not files:
        raise ValueError(f"{src}: no {', '.join(_FOLDER_SUFFIXES)} files under it.")
    for audio in files:
        yield Item(_safe_id("-".join(audio.relative_to(src).with_suffix("").parts)), audio, "", str(audio), 0)


def asterisk_half(name: str) -> str:
    """The fixed half (`dev` or `test`) of an Asterisk prompt: a stable hash of its name."""
    return ("dev", "test")[hashlib.sha256(name.encode()).digest()[0] % 2]


def asterisk_items(audio_dir: Path, transcripts: Path) -> Iterator[Item]:
    """The prompts of a `name: text` transcript file (gzipped or not), audio `audio_dir/name.wav`.

    The file marks what is not spoken in brackets: `[this is a simple beep tone]`, `<beep ascending>`,
    `(1 second of silence)`, `at [@]`, `IAX (note: does not say "2")`. Those notes are dropped from the
    text, and a line with nothing left (a tone or a silence) is skipped.
    """
    if not transcripts.is_file():
        raise FileNotFoundError(
            f"{transcripts}: no Asterisk transcript file. Install it with `{ASTERISK_INSTALL}`, "
            "or pass --transcripts FILE (one `name: text` line per prompt)."
        )
    opener = gzip.open if transcripts.suffix == ".gz" else open
    with opener(transcripts, "rt", encoding="utf-8", errors="replace") as handle:
        lines = handle.read().splitlines()
    for number, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line or line.startswith(";"):
            continue
        name, colon, text = line.partition(":")
        if not colon:
            yield Item(_safe_id(name), None, "", str(transcripts), number, "expected `name: text`")
            continue
        name, text = name.strip(), _ASTERISK_NOTE.sub("", text).strip()
        if not text:  # a tone or a silence
            continue
        audio = audio_dir / f"{name}.wav"
        clip_id = _safe_id(name.replace("/", "-"))
        problem = "" if audio.is_file() else f"audio {audio} is not in the package"
        yield Item(clip_id, audio if audio.is_file() else None, text, str(transcripts), number, problem)


def import_asterisk(
    out: str | Path,
    *,
    audio_dir: str | Path = ASTERISK_AUDIO,
    transcripts: str | Path = ASTERISK_TRANSCRIPTS,
    max_seconds: float = float("inf"),
    progress: bool = True,
) -> dict[str, tuple[Path, int, int]]:
    """Import the Asterisk prompts into `out/dev/` and `out/test/` (a fixed half each, by name).

    Real recorded speech of one professional speaker at 8 kHz, resampled to 16 kHz: for measuring,
    never for training. Prompts whose audio the package lacks, or that do not decode or are longer than
    `max_seconds` (default: no limit; inference reads long clips in 30-s windows), go to each half's
    `rejects.jsonl`, so nothing is dropped unseen.
    Returns, per half, (manifest, examples, rejects).
    """
    audio_dir, out = Path(audio_dir), Path(out)
    if not audio_dir.is_dir():
        raise FileNotFoundError(
            f"{audio_dir}: no Asterisk sounds folder. Install it with `{ASTERISK_INSTALL}`, or pass the "
            "folder of the prompts' .wav files as SRC."
        )
    items = list(asterisk_items(audio_dir, transcripts))
    halves = {}
    for half in ("dev", "test"):
        mine = [item for item in items if asterisk_half(item.id) == half]
        halves[half] = _import_items(
            mine, out / half, f"asterisk {half}", max_seconds=max_seconds, skip_bad=True, progress=progress
        )
    return halves


def _natural(text: str) -> str:
    """LibriSpeech-style ALL CAPS becomes sentence case, the form a chat model should answer in."""
    return text.lower().capitalize() if text.isupper() else text


def import_corpus(
    source: str,
    src: str | Path,
    out: str | Path,
    *,
    max_seconds: float = DEFAULT_MAX_SECONDS,
    skip_bad: bool = False,
    reference: bool = False,
    progress: bool = True,
) -> tuple[Path, int, int]:
    """Import `src` of kind `source` into `out/manifest.jsonl`; return (manifest, examples, rejects).

    With `reference`, 16-kHz mono files stay where they are and the manifest points at them.
    """
    readers = {
        "librispeech": librispeech_items,
        "csv": csv_items,
        "hf-disk": hf_disk_items,
        "audio-folder": audio_folder_items,
    }
    if source not in readers:
        raise ValueError(
            f"unknown source kind '{source}'; use one of {', '.join(readers)} (asterisk: import_asterisk)"
        )
    src, out = Path(src), Path(out)
    if not src.exists():
        raise FileNotFoundError(f"{src}: does not exist.")
    items = list(readers[source](src))
    return _import_items(
        items,
        out,
        f"import {source}",
        max_seconds=max_seconds,
        skip_bad=skip_bad,
        reference=reference,
        progress=progress,
        transcribed=source != "audio-folder",
    )


def _import_items(
    items: list[Item],
    out: Path,
    desc: str,
    *,
    max_seconds: float = DEFAULT_MAX_SECONDS,
    skip_bad: bool = False,
    reference: bool = False,
    progress: bool = True,
    transcribed: bool = True,
) -> tuple[Path, int, int]:
    """Decode and store `items` as asr examples in `out/manifest.jsonl` (untranscribed: task `audio`,
    and clips without sound are rejected, since they teach distillation nothing); bad ones fail it or,
    with `skip_bad`, go to `out/rejects.jsonl`."""
    (out / "audio").mkdir(parents=True, exist_ok=True)
    examples: list[Example] = []
    problems: list[Problem] = []
    seen: set[str] = set()
    for item in tqdm(items, desc=desc, unit="clip", disable=not progress):
        raw = f"{item.id} {item.text}".strip()
        if item.problem:
            problems.append(Problem(item.where, item.line, item.problem, raw))
            continue
        if item.id in seen:
            problems.append(Problem(item.where, item.line, f"duplicate clip id '{item.id}'", raw))
            continue
        label = f"{item.where}:{item.line} ({item.id})" if isinstance(item.audio, bytes) else None
        try:
            wave = load_audio(item.audio, max_seconds=max_seconds, name=label)
        except AudioError as err:
            problems.append(Problem(item.where, item.line, str(err), raw))
            continue
        if not transcribed and not has_sound(wave):
            problems.append(Problem(item.where, item.line, "no sound: too short or silent", raw))
            continue
        seen.add(item.id)
        audio = _store(item, wave, out / "audio", reference)
        examples.append(
            Example(
                id=item.id,
                audio=str(audio.resolve()),
                task="asr" if transcribed else AUDIO_TASK,
                prompt=ASR_PROMPTS[0],
                response=_natural(item.text) if transcribed else None,
                transcript=normalize_transcript(item.text) if transcribed else None,
                duration=round(wave.size / SAMPLE_RATE, 3),
            )
        )
    if problems and (not skip_bad or not examples):
        raise ManifestError(problems)
    if problems:
        write_rejects(problems, out / REJECTS_NAME)
    return write_manifest(examples, out / "manifest.jsonl"), len(examples), len(problems)


def _store(item: Item, wave: np.ndarray, folder: Path, reference: bool) -> Path:
    """Keep a 16-kHz mono file as it is (referenced or copied); write anything else as 16-kHz wav."""
    if isinstance(item.audio, Path):
        info = sf.info(str(item.audio))
        if info.samplerate == SAMPLE_RATE and info.channels == 1:
            if reference:
                return item.audio
            target = folder / f"{_safe_id(item.id)}{item.audio.suffix.lower()}"
            shutil.copyfile(item.audio, target)
            return target
    target = folder / f"{_safe_id(item.id)}.wav"
    sf.write(target, wave, SAMPLE_RATE, subtype="PCM_16")
    return target
