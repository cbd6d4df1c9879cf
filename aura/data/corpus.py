"""Real English sentences for the `asr` task: the usage examples of WordNet 3.0.

WordNet ships offline in Debian's `wordnet-base` package (`apt-get install wordnet-base`) under the
WordNet 3.0 licence (Princeton University; free use, copy, modify and distribute with the copyright
notice kept). Its ~48,000 example sentences were written by lexicographers to show ordinary usage,
which makes them short, varied, natural English; the ~8,000 made only of everyday words are used.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections import Counter
from functools import cache
from pathlib import Path

from aura.data.splits import split_of
from aura.registry import aura_home

WORDNET_DIRS = (Path("/usr/share/wordnet"), Path("/usr/share/WordNet"), Path("/usr/local/share/wordnet"))
_FILES = ("data.noun", "data.verb", "data.adj", "data.adv")
_QUOTED = re.compile(r'"([^"]+)"')
# Only plain words and light punctuation: no digits (Whisper writes numbers its own way), no
# abbreviations-with-dots, brackets, slashes or nested quotes that espeak would read out oddly.
_CLEAN = re.compile(r"^[A-Za-z][A-Za-z ,'\-]*[A-Za-z][.!?]?$")
_WORD = re.compile(r"[a-z]+(?:'[a-z]+)?")
MIN_WORDS, MAX_WORDS = 5, 16
# A word must occur this often across all of WordNet's glosses: keeps everyday sentences, drops ones
# with rare words ("slaty", "unconfessed") that neither espeak nor a listener says clearly. A lower
# threshold (`aura data synth --min-word-count`) gives more distinct training speech: 5 keeps 13,169
# train sentences instead of 6,375. The default is what the dev and test sets are drawn with.
MIN_WORD_COUNT = 20
_FILTER_VERSION = 2  # bump when the filter changes, to refresh the cache


class CorpusError(OSError):
    """The sentence source is not installed."""


def wordnet_dir() -> Path:
    """Where WordNet's database lives (`$AURA_WORDNET_DIR` overrides the Debian location)."""
    candidates = [Path(os.environ["AURA_WORDNET_DIR"])] if os.environ.get("AURA_WORDNET_DIR") else []
    for folder in [*candidates, *WORDNET_DIRS]:
        if (folder / "data.noun").is_file():
            return folder
    raise CorpusError(
        "WordNet's database (the sentence source of the asr task) was not found in "
        f"{', '.join(str(d) for d in [*candidates, *WORDNET_DIRS])}. "
        "Install it with `apt-get install --no-install-recommends wordnet-base`, or set AURA_WORDNET_DIR."
    )


def _clean(sentence: str, counts: Counter[str], min_word_count: int) -> str | None:
    text = " ".join(sentence.replace("`", "'").split())
    if not _CLEAN.match(text) or "--" in text or "''" in text or " '" in text:
        return None
    words = text.split()
    if not MIN_WORDS <= len(words) <= MAX_WORDS:
        return None
    if any(counts[w] < min_word_count for w in _WORD.findall(text.lower())):
        return None
    text = text[0].upper() + text[1:]
    return text if text[-1] in ".!?" else text + "."


def _extract(folder: Path, min_word_count: int) -> list[str]:
    glosses = []
    for name in _FILES:
        with (folder / name).open(encoding="latin-1") as handle:
            # lines starting with two spaces are the licence header
            glosses += [line.partition(" | ")[2] for line in handle if not line.startswith("  ")]
    counts = Counter(_WORD.findall("\n".join(glosses).lower()))
    found: dict[str, None] = {}
    for gloss in glosses:
        for quoted in _QUOTED.findall(gloss):
            cleaned = _clean(quoted, counts, min_word_count)
            if cleaned:
                found.setdefault(cleaned, None)
    return list(found)


@cache
def sentences(min_word_count: int = MIN_WORD_COUNT) -> tuple[str, ...]:
    """All usable example sentences (plain words, each used at least `min_word_count` times in WordNet's
    glosses), de-duplicated, in a stable order.

    Extraction takes seconds, so the result is cached under `$AURA_HOME/data`, keyed by the version of
    this filter, its threshold and the size and time of WordNet's files.
    """
    if min_word_count < 1:
        raise ValueError(f"min_word_count must be at least 1, got {min_word_count}")
    folder = wordnet_dir()
    stamp = "-".join(f"{(folder / n).stat().st_size}.{int((folder / n).stat().st_mtime)}" for n in _FILES)
    key = hashlib.sha256(f"{_FILTER_VERSION}|{min_word_count}|{folder}|{stamp}".encode()).hexdigest()[:16]
    cached = aura_home() / "data" / f"wordnet-sentences-{key}.txt"
    if cached.is_file():
        return tuple(cached.read_text(encoding="utf-8").splitlines())
    found = _extract(folder, min_word_count)
    cached.parent.mkdir(parents=True, exist_ok=True)
    tmp = cached.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text("\n".join(found) + "\n", encoding="utf-8")
    os.replace(tmp, cached)  # atomic: concurrent runs never read half a file
    return tuple(found)


@cache
def sentences_in(split: str, min_word_count: int = MIN_WORD_COUNT) -> tuple[str, ...]:
    """The sentences of one split (partitioned by a hash of the sentence itself, so a lower threshold
    only adds sentences to each split: none moves to another)."""
    return tuple(s for s in sentences(min_word_count) if split_of(s) == split)
