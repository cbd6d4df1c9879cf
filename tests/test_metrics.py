"""Metric values checked against numbers worked out by hand."""

from __future__ import annotations

import pytest

from aura.metrics import (
    clip_wer,
    contains_answer,
    error_rates,
    exact_match,
    normalize_answer,
    normalize_transcript,
    picks_answer,
    qa_scores,
    token_f1,
)


def test_whisper_normalisation_removes_spelling_and_case_differences() -> None:
    assert normalize_transcript("Mr. Smith's COLOUR!") == normalize_transcript("mister smith's color")
    assert clip_wer("Mr. Smith likes the colour red.", "mister smith likes the color red") == 0.0


def test_corpus_wer_and_cer_by_hand() -> None:
    # clip 1: 6 words, one substitution (the -> a); clip 2: 3 words, one deletion (gone "blue").
    rates = error_rates(["the cat sat on the mat", "sky is blue"], ["the cat sat on a mat", "sky is"])
    assert rates.words == 9
    assert (rates.substitutions, rates.deletions, rates.insertions) == (1, 1, 0)
    assert rates.wer == pytest.approx(2 / 9)
    # characters: "the cat sat on the mat" (22) vs "the cat sat on a mat": "the"->"a" = 1 sub + 2 del;
    # "sky is blue" (11) vs "sky is": 5 deletions (" blue"). 8 edits / 33 characters.
    assert rates.cer == pytest.approx(8 / 33)


def test_error_rates_rejects_mismatched_lengths() -> None:
    with pytest.raises(ValueError, match="2 references but 1 hypotheses"):
        error_rates(["a b", "c"], ["a b"])


def test_squad_normalisation_and_scores_by_hand() -> None:
    assert normalize_answer("The  Eiffel-Tower!") == "eiffeltower"
    assert exact_match("Paris.", "paris") == 1.0
    assert exact_match("It is Paris", "Paris") == 0.0
    # pred tokens [eiffel, tower, in, paris], gold [eiffel, tower]: P = 2/4, R = 2/2, F1 = 2/3
    assert token_f1("Eiffel Tower in Paris", "the Eiffel Tower") == pytest.approx(2 / 3)
    assert token_f1("London", "Paris") == 0.0
    assert contains_answer("The capital is Paris.", "Paris") == 1.0
    assert contains_answer("Parisian food", "Paris") == 0.0
    scores = qa_scores(["Paris.", "Eiffel Tower in Paris", "London"], ["Paris", "the Eiffel Tower", "Rome"])
    assert scores["em"] == pytest.approx(1 / 3)
    assert scores["f1"] == pytest.approx((1 + 2 / 3 + 0) / 3)
    assert scores["contained"] == pytest.approx(2 / 3) and "accuracy" not in scores


def test_accuracy_refuses_answers_that_also_name_a_distractor() -> None:
    assert picks_answer("Asia", "Asia", ["Africa"]) == 1.0
    assert picks_answer("Asia or Africa", "Asia", ["Africa"]) == 0.0  # lists the candidates
    assert picks_answer("South Africa", "Asia", ["Africa"]) == 0.0  # wrong, names a distractor only
    assert picks_answer("It is in Asia.", "Asia", []) == 1.0
    scores = qa_scores(
        ["Asia", "Asia and Europe", "Euro"], ["Asia", "Asia", "Franc"], [["Europe"], ["Europe"], []]
    )
    assert scores["contained"] == pytest.approx(2 / 3) and scores["accuracy"] == pytest.approx(1 / 3)
