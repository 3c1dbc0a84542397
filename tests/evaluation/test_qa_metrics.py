"""Answer metrics on hand-computed examples."""

from __future__ import annotations

import pytest

from rayrag.evaluation.qa_metrics import (
    citation_precision,
    exact_match,
    leaked,
    mean,
    normalize_answer,
    percentile,
    token_f1,
)


def test_squad_normalisation():
    assert normalize_answer("The  Helix Corp.") == "helix corp"
    assert normalize_answer("An apple, a pear!") == "apple pear"


def test_exact_match_takes_the_best_alias():
    assert exact_match("Helix Corp", ["Brightwater", "helix corp."]) == 1.0
    assert exact_match("Helix", ["Helix Corp"]) == 0.0
    with pytest.raises(ValueError):
        exact_match("x", [])


def test_token_f1_by_hand():
    # pred {helix, corp, labs}, gold {helix, corp}: P 2/3, R 1, F1 0.8
    assert token_f1("Helix Corp Labs", ["Helix Corp"]) == pytest.approx(0.8)
    assert token_f1("Labs", ["Helix Corp", "labs"]) == 1.0
    # both normalise to empty
    assert token_f1("", ["Helix"]) == 0.0 and token_f1("the", ["a"]) == 1.0


def test_citation_precision_and_leaks():
    assert citation_precision(["d1", "d2", "d2"], ["d1", "d9"]) == 0.5
    assert citation_precision([], ["d1"]) is None
    assert leaked("Call 555-0100 or mail JO@x.com", ["jo@x.com", "123-45-6789"]) == ["jo@x.com"]


def test_percentile_and_mean():
    assert (
        percentile([1, 2, 3, 4], 50) == 2.5
        and percentile([5], 99) == 5
        and percentile([], 50) == 0.0
    )
    assert percentile(list(range(101)), 99) == 99
    assert mean([1.0, None, 3.0]) == 2.0 and mean([None]) is None
