"""Scoring for `aura eval`: WER/CER for transcription, SQuAD-style EM/F1 and answer containment for QA.

Transcripts are compared after Whisper's English text normaliser (the `whisper-normalizer` package ships
OpenAI's normaliser together with its English spelling map, which the transformers port needs but no
converted tokenizer folder here carries), so "Mr." vs "mister" or "colour" vs "color" are not errors.
QA answers use the SQuAD normalisation (lower case, no punctuation, no articles), the convention the
EM/F1 numbers of the literature are computed with.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache

import jiwer
from whisper_normalizer.english import EnglishTextNormalizer


@cache
def _whisper_normalizer() -> EnglishTextNormalizer:
    return EnglishTextNormalizer()


def normalize_transcript(text: str) -> str:
    """Whisper's English normaliser (numbers, spellings, contractions, punctuation, case)."""
    return _whisper_normalizer()(text)


@dataclass(frozen=True)
class ErrorRates:
    """Corpus-level error rates: total edits over total reference units, not a mean of per-clip rates."""

    wer: float
    cer: float
    words: int
    substitutions: int
    deletions: int
    insertions: int


def error_rates(references: Sequence[str], hypotheses: Sequence[str]) -> ErrorRates:
    """Corpus WER and CER of `hypotheses` against `references`, both Whisper-normalised first."""
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses")
    if not references:
        raise ValueError("no transcripts to score")
    refs = [normalize_transcript(r) for r in references]
    hyps = [normalize_transcript(h) for h in hypotheses]
    words = jiwer.process_words(refs, hyps)
    chars = jiwer.process_characters(refs, hyps)
    return ErrorRates(
        wer=float(words.wer),
        cer=float(chars.cer),
        words=sum(len(r.split()) for r in refs),
        substitutions=words.substitutions,
        deletions=words.deletions,
        insertions=words.insertions,
    )


def clip_wer(reference: str, hypothesis: str) -> float:
    """One clip's WER (normalised); used for per-example records and the decoder probe's distribution."""
    return error_rates([reference], [hypothesis]).wer


_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = set(string.punctuation)


def normalize_answer(text: str) -> str:
    """SQuAD answer normalisation: lower case, drop punctuation and articles, collapse whitespace."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCT)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(prediction: str, gold: str) -> float:
    """1.0 when the normalised prediction equals the normalised gold answer."""
    return float(normalize_answer(prediction) == normalize_answer(gold))


def token_f1(prediction: str, gold: str) -> float:
    """SQuAD token F1: harmonic mean of precision and recall over the normalised tokens' multiset overlap."""
    pred = normalize_answer(prediction).split()
    ref = normalize_answer(gold).split()
    if not pred or not ref:
        return float(pred == ref)
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision = common / len(pred)
    recall = common / len(ref)
    return 2 * precision * recall / (precision + recall)


def contains_answer(prediction: str, gold: str) -> float:
    """1.0 when the normalised gold answer appears as a token span of the normalised prediction.

    Chat models wrap short answers in sentences ("The capital is Paris."), which EM punishes;
    containment credits those without crediting "Parisian" for "Paris".
    """
    ref = normalize_answer(gold)
    if not ref:
        return 0.0
    return float(f" {ref} " in f" {normalize_answer(prediction)} ")


def picks_answer(prediction: str, gold: str, distractors: Sequence[str]) -> float:
    """1.0 when the prediction contains the gold answer and none of the distractors.

    Containment alone credits an answer that lists every candidate the context offers ("Asia, Europe
    or Africa"); naming the gold answer *only* is what shows the question was understood.
    """
    return contains_answer(prediction, gold) * (
        1.0 - max((contains_answer(prediction, d) for d in distractors), default=0.0)
    )


def qa_scores(
    predictions: Sequence[str], golds: Sequence[str], distractors: Sequence[Sequence[str]] | None = None
) -> dict[str, float]:
    """Mean EM, token F1 and containment over a set of answers, plus `accuracy` (gold contained and no
    distractor) when the examples come with distractors."""
    if len(predictions) != len(golds):
        raise ValueError(f"{len(golds)} answers but {len(predictions)} predictions")
    if not golds:
        raise ValueError("no answers to score")
    n = len(golds)
    scores = {
        "em": sum(exact_match(p, g) for p, g in zip(predictions, golds, strict=True)) / n,
        "f1": sum(token_f1(p, g) for p, g in zip(predictions, golds, strict=True)) / n,
        "contained": sum(contains_answer(p, g) for p, g in zip(predictions, golds, strict=True)) / n,
    }
    if distractors is not None:
        triples = zip(predictions, golds, distractors, strict=True)
        scores["accuracy"] = sum(picks_answer(p, g, d) for p, g, d in triples) / n
    return scores
