"""Follow-ups made standalone: hand-written conversations over the demo world's kinds of
entities, and the generated set built from a QA file."""

from __future__ import annotations

import json

import pytest

from rayrag.answering.followup import rewrite_followup
from rayrag.evaluation.followup_eval import evaluate_followups, followups_from_qa, same_question

ACQ = [("user", "Which company acquired Avenra Logistics?"), ("assistant", "Helix Corp")]
MAKER = [
    ("user", "Which company manufactures tollodex?"),
    ("assistant", "Kelvane Pharmaceuticals [1]"),
]

CASES = [
    (ACQ, "In what year was it founded?", "In what year was Helix Corp founded?"),
    (
        ACQ,
        "What revenue did the company report for fiscal 2023?",
        "What revenue did Helix Corp report for fiscal 2023?",
    ),
    (ACQ, "Which product is made by it?", "Which product is made by Helix Corp?"),
    (ACQ, "What is its revenue?", "What is Helix Corp's revenue?"),
    (ACQ, "Its founding year?", "Helix Corp's founding year?"),
    (MAKER, "Who acquired them?", "Who acquired Kelvane Pharmaceuticals?"),
    (MAKER, "What did the firm's CEO say?", "What did Kelvane Pharmaceuticals's CEO say?"),
    # A lower-case answer is no name: the last name of the earlier question is the antecedent.
    (
        [("user", "Which drug does Kelvane Pharmaceuticals make?"), ("assistant", "tollodex")],
        "In what year was it founded?",
        "In what year was Kelvane Pharmaceuticals founded?",
    ),
    # Two turns back, the most recent name wins.
    (
        [
            *ACQ,
            ("user", "Which company manufactures Granite Process Engine?"),
            ("assistant", "Tidewater Data"),
        ],
        "What revenue did it report for fiscal 2021?",
        "What revenue did Tidewater Data report for fiscal 2021?",
    ),
]
UNCHANGED = [
    (ACQ, "In what year was Brightwater Labs founded?"),  # names its own entity
    (ACQ, "Did Helix Corp say what it makes?"),  # its antecedent is in the question
    ([], "What does it make?"),  # nothing to refer back to
    (ACQ, "Which agency issued the Clinical Transparency Rule?"),  # no reference
    ([("user", "How many employees are there?"), ("assistant", "42")], "Where do they work?"),
]


@pytest.mark.parametrize(("history", "followup", "expected"), CASES)
def test_a_reference_back_takes_the_most_recent_name(history, followup, expected):
    rewrite = rewrite_followup(history, followup)
    assert rewrite.question == expected and rewrite.rewritten


@pytest.mark.parametrize(("history", "question"), UNCHANGED)
def test_a_question_that_stands_alone_is_left_as_it_is(history, question):
    rewrite = rewrite_followup(history, question)
    assert rewrite.question == question and not rewrite.rewritten and rewrite.antecedent is None


def test_same_question_ignores_case_punctuation_and_articles():
    assert same_question(
        "Which agency issued Clinical Rule?", "which agency issued the Clinical Rule"
    )
    assert not same_question("Which agency issued it?", "Which agency issued the Clinical Rule?")


def test_the_generated_set_chains_one_hop_questions_and_scores_retrieval(demo_corpus):
    rows = [json.loads(line) for line in demo_corpus.qa_path.read_text().splitlines()]
    items = followups_from_qa(rows)
    assert len(items) >= 5
    for item in items:
        (_, first), (_, answer) = item.history
        assert answer in item.expected and answer not in item.followup
        assert any(r["question"] == first and r["answers"][0] == answer for r in rows)

    def retrieve(question):  # a retriever that finds only what a standalone question names
        return [
            g for item in items if same_question(question, item.expected) for g in item.gold_ids
        ]

    result = evaluate_followups(items, retrieve, k=5)
    assert result["n"] == len(items) and result["hit@5_original"] == 1.0
    assert result["hit@5_raw"] == 0.0  # a follow-up never equals its standalone question
    assert result["hit@5_rewritten"] == result["rewrite_exact"] > 0.5
