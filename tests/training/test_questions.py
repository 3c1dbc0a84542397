"""Question wording: conjugated relation verbs, wh-words by entity type, sentence questions."""

from __future__ import annotations

from rayrag.training.questions import (
    graph_question_forms,
    graph_questions,
    past_tense,
    present_tense,
    sentence_question,
)


def test_templates_conjugate_the_relation_and_pick_the_wh_word():
    assert [past_tense(v) for v in ("acquire", "join", "make", "lead", "supply")] == [
        "acquired",
        "joined",
        "made",
        "led",
        "supplied",
    ]
    assert [present_tense(v) for v in ("acquire", "issue", "supply", "finish", "be")] == [
        "acquires",
        "issues",
        "supplies",
        "finishes",
        "is",
    ]
    # the question word follows the answer's entity type, as real questions do
    forward, inverse = graph_questions(
        "Helix Dynamics", "acquire", "Brightwater Labs", "ORG", "ORG"
    )
    assert forward == "Which company did Helix Dynamics acquire?"
    assert inverse == "Which company acquired Brightwater Labs?"
    forward, inverse = graph_questions(
        "PERSON_3f9a0c1e", "head_research_at", "Orion Works", "PERSON", "ORG"
    )
    assert forward == "Which company did PERSON_3f9a0c1e head research at?"
    assert inverse == "Who headed research at Orion Works?"
    assert (
        graph_questions("Orion Works", "open_in", "Lima", "ORG", "GPE")[0]
        == "Which city did Orion Works open in?"
    )
    assert (
        graph_questions("Board", "issue", "Data Act", "ORG", "LAW")[0]
        == "Which regulation did Board issue?"
    )
    # products and roles are often tagged ORG: the relation picks the word for its object
    assert graph_questions("Orion Works", "make", "Falcon Drive", "ORG", "ORG")[0] == (
        "Which product did Orion Works make?"
    )
    assert graph_questions("PERSON_3f9a0c1e", "join_as", "Data Analyst", "PERSON", "ORG")[0] == (
        "Which role did PERSON_3f9a0c1e join as?"
    )
    assert graph_questions("X", "sign", "Y", "WHATEVER", "")[0] == "What did X sign?"
    forward, inverse = graph_question_forms(
        "Helix Dynamics", "acquire", "Brightwater Labs", "ORG", "ORG"
    )
    assert forward == [
        "Which company did Helix Dynamics acquire?",
        "Which company does Helix Dynamics acquire?",
        "Which company is acquired by Helix Dynamics?",
    ]
    assert inverse == [
        "Which company acquired Brightwater Labs?",
        "Which company acquires Brightwater Labs?",
    ]
    assert graph_question_forms("A", "not_supply", "B", "ORG", "ORG") == (
        ["Which company did A not supply?"],
        ["Which company did not supply B?"],
    )


def test_sentence_question_turns_a_span_into_a_wh_question():
    sentence = "Helix Corp acquired Brightwater Labs in 2019 for cash."
    assert sentence_question(sentence, 0, 10, "Which company") == (
        "Which company acquired Brightwater Labs in 2019 for cash?"
    )
    start = sentence.index("Brightwater Labs")
    assert sentence_question(sentence, start, start + 16, "Which company") == (
        "Helix Corp acquired which company in 2019 for cash?"
    )
    start = sentence.index("2019")
    assert sentence_question(sentence, start, start + 4, "In what year") == (
        "Helix Corp acquired Brightwater Labs in what year for cash?"
    )
    # an answer the question spells, or a question too short to ask anything, is skipped
    assert sentence_question("Helix Corp and Helix Corp merged.", 0, 10, "Which company") is None
    assert sentence_question("Helix Corp.", 0, 10, "Which company") is None
