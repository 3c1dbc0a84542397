"""Answer support (support.py): the answer in the relation the question asks, or nothing."""

from __future__ import annotations

import pytest
from spacy.lang.en.stop_words import STOP_WORDS

from rayrag.answering.support import answer_support, inner_clause, terms

STOP = frozenset(STOP_WORDS)
PRESS = (
    "Kingsmere Technologies acquires Zandor Systems\nKingsmere Technologies completed its "
    "acquisition of Zandor Systems in 2012. Kingsmere Technologies acquired Zandor Systems for "
    "$1,775 million."
)
PROFILE = (
    "Kingsmere Technologies company profile\nKingsmere Technologies is an enterprise software "
    "company headquartered in Chicago. It was founded in 2004."
)
EVIDENCE = [PRESS, PROFILE]


def test_terms_are_stemmed_content_words():
    assert terms("Which company acquired the acquisitions in 2012?", STOP) == {"acqui", "2012"}
    assert terms("the maker makes", STOP) == {"mak"}


def test_the_right_answer_is_supported_and_the_question_entity_is_not():
    assert (
        answer_support(
            "Which company acquired Zandor Systems?", "Kingsmere Technologies", EVIDENCE, STOP
        )
        == 1.0
    )
    assert (
        answer_support("Which company acquired Zandor Systems?", "Zandor Systems", EVIDENCE, STOP)
        == 0.0
    )


def test_two_hop_support_goes_through_a_bridge_entity():
    question = "In what year was the company that acquired Zandor Systems founded?"
    right = answer_support(question, "2004", EVIDENCE, STOP)
    wrong_year = answer_support(question, "2012", EVIDENCE, STOP)
    wrong_city = answer_support(question, "Chicago", EVIDENCE, STOP)
    assert right == 1.0 and right > wrong_year and right > wrong_city
    # Without the press release there is no bridge to "acquired Zandor Systems".
    assert answer_support(question, "2004", [PROFILE], STOP) == pytest.approx(0.25)


def test_unknown_answers_and_unrelated_questions_score_low():
    assert (
        answer_support("Which company acquired Zandor Systems?", "Quantum Foods", EVIDENCE, STOP)
        == 0.0
    )
    assert (
        answer_support(
            "Which firm acquired the Qorvanthe Zylmarch Consortium in 1741?",
            "Kingsmere Technologies",
            EVIDENCE,
            STOP,
        )
        < 0.25
    )
    assert answer_support("Which company acquired Zandor Systems?", "", EVIDENCE, STOP) == 0.0


def test_facts_count_as_evidence_sentences():
    facts = ["Kingsmere Technologies acquire Zandor Systems"]
    assert (
        answer_support(
            "Which company acquired Zandor Systems?",
            "Kingsmere Technologies",
            [PROFILE],
            STOP,
            facts,
        )
        == 1.0
    )


def test_a_passage_title_is_the_topic_of_each_of_its_sentences():
    # "It was founded in 2004." names no company; its title does.
    question = "In what year was Kingsmere Technologies founded?"
    bare = answer_support(question, "2004", [PROFILE.split("\n", 1)[1]], STOP)
    titled = answer_support(
        question,
        "2004",
        [PROFILE.split("\n", 1)[1]],
        STOP,
        titles=["Kingsmere Technologies company profile"],
    )
    assert bare == pytest.approx(1 / 3) and titled == 1.0  # "found" alone, then all three terms
    # A title helps only its own passage's sentences, and never supplies the answer.
    assert (
        answer_support(
            question,
            "Chicago",
            [PROFILE.split("\n", 1)[1]],
            STOP,
            titles=["Kingsmere Technologies company profile"],
        )
        < titled
    )
    assert answer_support(
        question,
        "2004",
        ["Chicago is large.", "It was founded in 2004."],
        STOP,
        titles=["Kingsmere Technologies company profile", None],
    ) == pytest.approx(1 / 3)


def test_irregular_verbs_and_a_silent_e_stem_alike():
    assert terms("made makes maker make", STOP) == {"mak"}
    assert terms("built builds", STOP) == {"build"}
    # "product" is in no sentence; "built" now meets "builds": 3 of the 4 asked terms.
    assert answer_support(
        "Which product is built by Kingsmere Technologies?",
        "Zandor Hub",
        ["Kingsmere Technologies builds Zandor Hub."],
        STOP,
    ) == pytest.approx(0.75)


def test_the_answer_must_have_the_shape_the_question_asks_for():
    from rayrag.answering.support import answer_type_ok

    assert answer_type_ok("In what year did the Rule take effect?", "2021")
    assert not answer_type_ok("In what year did the Rule take effect?", "tech companies")
    assert answer_type_ok("What revenue did Zandor report for fiscal 2021?", "$3,212.7 million")
    assert not answer_type_ok("How much did it cost?", "operating margin")
    assert answer_type_ok("Which company acquired Zandor Systems?", "Kingsmere Technologies")
    assert not answer_type_ok("What condition is X approved to treat?", "41%")
    assert answer_type_ok("Name the acquirer.", "41%")  # nothing to check


@pytest.mark.parametrize(
    ("question", "mentions", "inner"),
    [
        (
            "Which product is made by the company that acquired Avenra Logistics?",
            ["avenra logistics"],
            "that acquired Avenra Logistics",
        ),
        (
            "In what year was the company that acquired Virelle Biologics Group founded?",
            ["virelle biologics"],
            "that acquired Virelle Biologics Group",
        ),  # the capitalised run goes on past the linked key
        (
            "What revenue did the maker of cordidex report for fiscal 2023?",
            ["cordidex"],
            "the maker of cordidex",
        ),
        (
            "The director of the film Big Stone Gap is based in what city?",
            ["big stone gap"],
            "The director of the film Big Stone Gap",
        ),
        (
            "Which company acquired the maker of Anvil Hub?",
            [],
            "the maker of Anvil Hub",
        ),  # nothing linked: to the end
        ("Which company acquired Tarrow Power?", ["tarrow power"], ""),
        ("Which regulation did counsel conclude applies to Lantern?", ["lantern"], ""),
        ("What is the number of staff at Foo Labs?", ["foo labs"], ""),  # "number" is no agent noun
        (
            "In which year was Foo Labs founded?",
            ["foo labs"],
            "",
        ),  # a wh-word after a preposition asks
        (
            "In which city is the company that acquired Foo Labs based?",
            ["foo labs"],
            "that acquired Foo Labs",
        ),
        # The clause that holds the question's own wh-word is where it asks, not its bridge.
        ("Scott Howell is a consultant who has worked with the mayor of what city?", [], ""),
        ("The Adelaide team that was formed in what year plays in the WNBL?", ["adelaide"], ""),
        ("A state named after which Native American tribe was hit first?", [], ""),
        (
            "Who directed the film that was shot in Leland in 1986?",
            ["leland"],
            "that was shot in Leland",
        ),
    ],
)
def test_the_inner_clause_of_a_two_hop_question(question, mentions, inner):
    assert inner_clause(question, mentions) == inner


def test_a_two_hop_answer_must_state_the_outer_relation():
    question = "In what year was the company that acquired Zandor Systems founded?"
    inner = inner_clause(question, ["zandor systems"])
    right = answer_support(question, "2004", EVIDENCE, STOP, inner=inner)
    # 2012 sits with every inner term ("acquired Zandor Systems") but not with "founded".
    wrong_year = answer_support(question, "2012", EVIDENCE, STOP, inner=inner)
    assert right == 1.0 and wrong_year == 0.0
    # read as one question, it looked supported
    assert answer_support(question, "2012", EVIDENCE, STOP) > 0.5
    # The bridge itself answers the inner clause: its sentence does not state "founded".
    bridge = "Which product is made by the company that acquired Zandor Systems?"
    assert (
        answer_support(
            bridge,
            "Kingsmere Technologies",
            EVIDENCE,
            STOP,
            inner=inner_clause(bridge, ["zandor systems"]),
        )
        == 0.0
    )


def test_a_passive_without_by_asks_no_agent():
    from rayrag.answering.support import agentless_passive

    approve = terms("approve", STOP)
    assert agentless_passive("What condition is remlodex approved to treat?", approve, STOP)
    assert not agentless_passive("Which agency approved remlodex?", approve, STOP)
    assert not agentless_passive("Which drug was approved by the Board?", approve, STOP)
    assert not agentless_passive(
        "What condition is remlodex approved to treat?", terms("acquire", STOP), STOP
    )
    # A drug name ending like a participle ("fenlotide") is no participle; "approved" is.
    assert agentless_passive("What condition is fenlotide approved to treat?", approve, STOP)
    assert not agentless_passive(
        "Which company is the acquirer of X?", terms("acquire", STOP), STOP
    )


def test_the_answer_that_the_inner_clause_describes_is_the_bridge():
    from rayrag.answering.support import answers_inner_clause

    question = "Which product is made by the company that acquired Zandor Systems?"
    inner = inner_clause(question, ["zandor systems"])
    catalogue = "Kingsmere Technologies makes the Orbit Hub."
    assert answers_inner_clause(
        question, "Kingsmere Technologies", [PRESS, catalogue], STOP, inner=inner
    )
    assert not answers_inner_clause(question, "Orbit Hub", [PRESS, catalogue], STOP, inner=inner)
    # one hop: no bridge to be
    assert not answers_inner_clause(
        "Which company acquired Zandor Systems?", "Kingsmere Technologies", [PRESS], STOP, inner=""
    )
    # A sentence that states the whole path names the answer with the outer relation: no bridge.
    both = "Kingsmere Technologies, which acquired Zandor Systems, makes the Orbit Hub."
    assert not answers_inner_clause(question, "Orbit Hub", [both], STOP, inner=inner)


def test_relation_synonyms_and_names_that_do_not_run_across_sentences():
    from rayrag.answering.support import names

    assert terms("manufactured manufacturer maker", STOP) == {"mak"}
    assert terms("bought purchased acquired", STOP) == {"acqui"}
    assert names("Hub sheet\nFalcon Hub is made by Gorsefield Data. Gorsefield Data ships it.") == {
        "Hub",
        "Falcon Hub",
        "Gorsefield Data",
    }


def test_a_bridge_never_lends_the_question_entity_to_a_one_hop_answer():
    # Two product sheets share their maker: without anchors a bridge through "Millbrook Medical"
    # lends "sarricept" to the sentence about remnezole, and both conditions look supported.
    sarricept = (
        "sarricept product sheet\nMillbrook Medical manufactures sarricept. The Council "
        "approved sarricept for the treatment of glaucoma."
    )
    remnezole = (
        "remnezole product sheet\nMillbrook Medical manufactures remnezole. The Council "
        "approved remnezole for the treatment of plaque psoriasis."
    )
    question = "What condition is sarricept approved to treat?"
    evidence = [remnezole, sarricept]
    unanchored = answer_support(question, "plaque psoriasis", evidence, STOP)
    # the defect anchors remove
    assert unanchored == answer_support(question, "glaucoma", evidence, STOP)
    right = answer_support(question, "glaucoma", evidence, STOP, anchors=["sarricept"])
    wrong = answer_support(question, "plaque psoriasis", evidence, STOP, anchors=["sarricept"])
    assert right == unanchored and wrong < right
    # The title names what its sentences are about: "It" under the entity's title still counts.
    report = "Stonebridge Logistics annual report\nIts revenue was $9,438.5 million in fiscal 2024."
    assert (
        answer_support(
            "What revenue did Stonebridge Logistics report for fiscal 2024?",
            "$9,438.5 million",
            [report],
            STOP,
            titles=["Stonebridge Logistics annual report"],
            anchors=["Stonebridge Logistics"],
        )
        == 1.0
    )
