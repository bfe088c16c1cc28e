"""Tests for SQuAD-style answer normalization, EM, cover-EM and F1."""

from __future__ import annotations

import pytest

from routerr1.metrics import cover_exact_match, exact_match, f1_score, normalize_answer


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("The Eiffel Tower", "eiffel tower"),
        ("  a   cat,  an apple; THE end!  ", "cat apple end"),
        ("U.S.A.", "usa"),
        ("theatre", "theatre"),  # articles only as whole words
        ("Anne and Andrew", "anne and andrew"),
        ("", ""),
        ("the", ""),
        ("tab\tand\nnewline", "tab and newline"),
    ],
)
def test_normalize_answer(raw: str, expected: str) -> None:
    assert normalize_answer(raw) == expected


def test_exact_match_case_punctuation_articles() -> None:
    assert exact_match("The Beatles!", ["beatles"]) == 1.0
    assert exact_match("paris", ["London", "Paris."]) == 1.0
    assert exact_match("Paris, France", ["Paris"]) == 0.0


def test_exact_match_none_prediction() -> None:
    assert exact_match(None, ["x"]) == 0.0
    assert cover_exact_match(None, ["x"]) == 0.0
    assert f1_score(None, ["x"]) == 0.0


def test_cover_exact_match_token_bounded() -> None:
    assert cover_exact_match("It is Paris, France.", ["paris"]) == 1.0
    assert cover_exact_match("the city of new york", ["New York"]) == 1.0
    assert cover_exact_match("Parisian cafes", ["Paris"]) == 0.0
    assert cover_exact_match("kyoto", ["Tokyo", "Kyoto"]) == 1.0
    assert cover_exact_match("tokyo", ["Kyoto"]) == 0.0


def test_cover_exact_match_empty_gold_covers_only_empty() -> None:
    assert cover_exact_match("anything", ["the"]) == 0.0
    assert cover_exact_match("a", ["the"]) == 1.0


def test_f1_partial_overlap() -> None:
    # pred tokens: barack obama ; gold: obama -> p=1/2, r=1 -> f1=2/3
    assert f1_score("Barack Obama", ["Obama"]) == pytest.approx(2 / 3)
    assert f1_score("The Barack Obama", ["Barack Obama"]) == 1.0
    assert f1_score("cat", ["dog"]) == 0.0


def test_f1_max_over_golds_and_repeated_tokens() -> None:
    assert f1_score("new york", ["york", "New York City"]) == pytest.approx(0.8)
    # Repeated tokens count once per gold occurrence: common=1, p=1/3, r=1 -> 0.5.
    assert f1_score("x y y", ["y"]) == pytest.approx(0.5)


@pytest.mark.parametrize("special", ["yes", "no", "noanswer"])
def test_f1_yes_no_must_match_exactly(special: str) -> None:
    assert f1_score(f"{special} indeed", [special]) == 0.0
    assert f1_score(special, [f"{special} indeed"]) == 0.0
    assert f1_score(special.upper() + ".", [special]) == 1.0


def test_f1_empty_normalized() -> None:
    assert f1_score("the", ["a"]) == 1.0  # both normalize to ""
    assert f1_score("", ["x"]) == 0.0


@pytest.mark.parametrize("fn", [exact_match, cover_exact_match, f1_score])
def test_bad_golds_raise(fn) -> None:
    with pytest.raises(ValueError, match="golds"):
        fn("x", "x")  # a bare str, not a list
    with pytest.raises(ValueError, match="golds"):
        fn("x", [])
    with pytest.raises(ValueError, match=r"golds\[1\]"):
        fn("x", ["a", 3])
    with pytest.raises(ValueError, match="prediction"):
        fn(7, ["a"])
