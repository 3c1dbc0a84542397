"""rayrag.answering.guard: real Presidio, real spaCy extraction, a real (tiny) knowledge graph.

The corpus is redacted text as ingest would leave it (a pseudonym for the founder); one
document is readable by `hr` only, so the validation canary can check the ACL. Company
names are ones the small spaCy model does not mistake for people ("Orbital Labs" it does).
"""

from __future__ import annotations

import json

import pytest

from rayrag.answering.guard import CONTENT_FIELDS, Guard
from rayrag.config import GovernanceConfig, KGConfig, RAGConfig, RedactionConfig
from rayrag.governance.privacy.redaction import Redactor
from rayrag.index.graph import KnowledgeGraph
from rayrag.index.kg_extract import TripleExtractor
from rayrag.retrieval.graph_query import GraphRetriever
from rayrag.types import Chunk, Evidence, Passage, Principal

PUBLIC = Principal("visitor")
HR = Principal("hr-officer", frozenset({"public", "hr"}))
FOUNDER = "PERSON_3f9a0c1e"
CORPUS = {
    "d1": (f"{FOUNDER} founded Brightwater Labs in 2015.", ("public",)),
    "d2": ("Velora Systems acquired Brightwater Labs in 2021.", ("public",)),
    "d3": ("Orbital Systems acquired Cobalt Data in 2020.", ("public",)),
    "d4": ("Velora Systems hired engineers in Lisbon.", ("public",)),
    "d5": (f"{FOUNDER} was dismissed by Kestrel Bank after an audit.", ("hr",)),
}
EVIDENCE = Evidence(
    passages=tuple(
        Passage(f"{d}#0", d, CORPUS[d][0], score=1.0 - i / 10) for i, d in enumerate(("d1", "d2"))
    )
)
ACQUIRED = "Who acquired Brightwater Labs?"


@pytest.fixture(scope="module")
def guard() -> Guard:
    chunks = [Chunk(f"{d}#0", d, text, 0, len(text), acl=acl) for d, (text, acl) in CORPUS.items()]
    kg = KnowledgeGraph.build(
        TripleExtractor(KGConfig())(chunks),
        config=KGConfig(),
        extracted_at="2025-01-01T00:00:00+00:00",
    )
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RAYRAG_HMAC_KEY", "guard-test-hmac-key-0123456789")
        redactor = Redactor(RedactionConfig())
        redactor.warm_up()  # reads the key now; the guard reuses this warm engine
    g = Guard(RAGConfig(), redactor=redactor, graph=GraphRetriever(kg, KGConfig()))
    g.warm_up()
    return g


def graph_guard(guard: Guard, extra: dict[str, str]) -> Guard:
    """A guard over CORPUS plus public documents `extra` (doc id -> text),
    sharing `guard`'s Presidio."""
    chunks = [
        Chunk(f"{d}#0", d, t, 0, len(t), acl=a)
        for d, (t, a) in {**CORPUS, **{d: (t, ("public",)) for d, t in extra.items()}}.items()
    ]
    kg = KnowledgeGraph.build(
        TripleExtractor(KGConfig())(chunks),
        config=KGConfig(),
        extracted_at="2025-01-01T00:00:00+00:00",
    )
    return Guard(RAGConfig(), redactor=guard.redactor, graph=GraphRetriever(kg, KGConfig()))


def test_pii_in_the_answer_is_redacted_and_counted(guard):
    report = guard.check(
        ACQUIRED,
        "Velora Systems acquired Brightwater Labs [2]. Contact jane.doe@example.com for details.",
        EVIDENCE,
        PUBLIC,
    )
    assert report.redactions == {"EMAIL_ADDRESS": 1}
    assert "<EMAIL_ADDRESS>" in report.text and "jane.doe" not in report.to_json()
    assert "pii_in_answer" in report.reasons


def test_supported_answer_is_confident(guard):
    report = guard.check(
        ACQUIRED, "Velora Systems acquired Brightwater Labs in 2021 [2].", EVIDENCE, PUBLIC
    )
    assert report.validation["supported"] == 1 and report.validation["contradicted"] == 0
    [claim] = report.validation["claims"]
    assert (claim["kind"], claim["verdict"], claim["fact_doc_ids"]) == (
        "stated",
        "supported",
        ["d2"],
    )
    assert report.groundedness == 1.0 and report.confidence == 1.0
    assert not report.escalated and report.reasons == []
    assert report.citations == {"cited": [2], "out_of_range": []}


def test_unsupported_answer_is_escalated(guard):
    report = guard.check(ACQUIRED, "Quantum Foods sells frozen pizza.", EVIDENCE, PUBLIC)
    assert report.groundedness == 0.0 and report.escalated
    assert {"low_groundedness", "low_confidence"} <= set(report.reasons)


def test_contradicted_claim_lowers_confidence_and_escalates(guard):
    report = guard.check(
        ACQUIRED, "Orbital Systems acquired Brightwater Labs [2].", EVIDENCE, PUBLIC
    )
    assert report.validation["contradicted"] == 1
    [claim] = report.validation["claims"]
    assert claim["verdict"] == "contradicted" and set(claim["fact_doc_ids"]) <= {"d2", "d3"}
    # "orbital" is the one content token of five that d2 lacks: 0.8, then x 0.25.
    assert report.groundedness == pytest.approx(0.8)
    assert report.confidence == pytest.approx(0.2)
    assert report.escalated and "contradicted_claim" in report.reasons


def test_short_entity_answer_is_checked_through_the_asked_relation(guard):
    right = guard.check(ACQUIRED, "Velora Systems [2]", EVIDENCE, PUBLIC)
    [claim] = right.validation["claims"]
    assert (claim["kind"], claim["verdict"], claim["relation"]) == (
        "implied",
        "supported",
        "acquire",
    )
    assert not right.escalated
    wrong = guard.check(ACQUIRED, "Orbital Systems", EVIDENCE, PUBLIC)
    assert wrong.validation["contradicted"] == 1 and wrong.escalated


def test_validation_sees_only_the_principals_facts(guard):
    answer = f"Kestrel Bank dismissed {FOUNDER}."
    hr = guard.validate("Why was the founder dismissed?", answer, EVIDENCE, HR)
    public = guard.validate("Why was the founder dismissed?", answer, EVIDENCE, PUBLIC)
    assert hr["supported"] == 1 and hr["claims"][0]["fact_doc_ids"] == ["d5"]
    assert public["supported"] == 0 and public["unknown"] == 1
    assert public["claims"][0]["fact_chunk_ids"] == []


def test_log_fields_drop_all_answer_content(guard):
    report = guard.check(ACQUIRED, f"Kestrel Bank dismissed {FOUNDER} [1].", EVIDENCE, HR)
    logged = json.dumps(report.log_fields())
    assert "Kestrel" not in logged and "kestrel" not in logged and FOUNDER.lower() not in logged
    assert not set(CONTENT_FIELDS) & set(report.log_fields()["validation"]["claims"][0])
    assert "kestrel bank" in json.dumps(report.validation)  # in-process report keeps it


def test_groundedness_and_citations_on_hand_made_evidence(guard):
    passages = [Passage("p1", "d4", "Velora Systems hired engineers in Lisbon.", 1.0)]
    # velora, hired, engineers, paris: three of four content tokens ("in" is a stopword).
    assert guard.groundedness("Velora hired engineers in Paris", passages) == pytest.approx(0.75)
    assert guard.groundedness("The <EMAIL_ADDRESS> [1] of it", passages) == 0.0
    assert Guard.citations("See [1], [5] and [1] and [0].", 2) == {
        "cited": [1],
        "out_of_range": [5, 0],
    }
    report = guard.check(
        ACQUIRED, "Velora Systems acquired Brightwater Labs [2] [7].", EVIDENCE, PUBLIC
    )
    assert "bad_citation" in report.reasons and report.citations["out_of_range"] == [7]
    assert report.confidence == pytest.approx(0.8)


def test_empty_answer_scores_zero_and_escalates(guard):
    report = guard.check(ACQUIRED, "  ", EVIDENCE, PUBLIC)
    assert (report.groundedness, report.confidence, report.escalated) == (0.0, 0.0, True)
    assert "empty_answer" in report.reasons
    assert guard.check(ACQUIRED, "Velora Systems", Evidence(passages=()), PUBLIC).escalated


def test_without_a_graph_or_redaction_the_checks_degrade_visibly(monkeypatch):
    monkeypatch.delenv("RAYRAG_BUNDLE", raising=False)
    config = RAGConfig(governance=GovernanceConfig(redaction=RedactionConfig(enabled=False)))
    guard = Guard(config)
    report = guard.check("Who?", "Velora Systems acquired Brightwater Labs [2].", EVIDENCE, PUBLIC)
    assert report.validation == {
        "checked": False,
        "supported": 0,
        "contradicted": 0,
        "unknown": 0,
        "claims": [],
    }
    assert report.redactions == {} and report.confidence == 1.0


def test_an_answer_that_only_repeats_the_question_entity_is_escalated(guard):
    # The name is in the passages, but it answers nothing (the failure mode of a small reader):
    # no support, where token overlap used to score it 1.0.
    report = guard.check(ACQUIRED, "Brightwater Labs", EVIDENCE, PUBLIC)
    assert report.groundedness == 0.0
    assert "answer_repeats_question" in report.reasons and report.escalated
    assert report.validation["claims"][0]["kind"] == "repeats_question"


def test_groundedness_needs_the_asked_relation_and_separates_right_from_wrong(guard):
    right = guard.check(ACQUIRED, "Velora Systems", EVIDENCE, PUBLIC)
    # The founder stands in a sentence about Brightwater Labs too, but not in the relation
    # asked (acquired): partly supported; a name from outside the evidence: not at all.
    founder = guard.check(ACQUIRED, FOUNDER, EVIDENCE, PUBLIC)
    outside = guard.check(ACQUIRED, "Kestrel Bank", EVIDENCE, PUBLIC)
    assert right.groundedness == 1.0 > founder.groundedness > outside.groundedness == 0.0


def test_the_generators_own_probability_moves_confidence(guard):
    sure = guard.check(ACQUIRED, "Velora Systems", EVIDENCE, PUBLIC, answer_logprob=0.0)
    unsure = guard.check(ACQUIRED, "Velora Systems", EVIDENCE, PUBLIC, answer_logprob=-6.0)
    assert sure.confidence > unsure.confidence
    assert sure.groundedness == unsure.groundedness  # support reads the evidence, not the model


def test_a_two_hop_answer_on_a_graph_path_is_supported_not_contradicted(guard):
    # d6 gives Velora Systems a product; "the company that acquired Brightwater Labs" is the
    # bridge (d2). The product is not in the asked relation (acquire) with Brightwater Labs.
    text = (
        "Velora Systems makes Nimbus Data Platform."  # (a name Presidio does not take for a person)
    )
    two_hop = graph_guard(guard, {"d6": text})
    evidence = Evidence(passages=(EVIDENCE.passages[1], Passage("d6#0", "d6", text, 0.9)))
    question = "Which product is made by the company that acquired Brightwater Labs?"
    right = two_hop.check(question, "Nimbus Data Platform", evidence, PUBLIC)
    assert right.validation["contradicted"] == 0
    assert [c["kind"] for c in right.validation["claims"]] == ["path"]
    assert right.groundedness >= 0.75 and not right.escalated  # "product" is in no passage


def test_a_two_hop_path_in_the_evidence_facts_is_enough(guard, monkeypatch):
    # The graph's own top facts for the question need not hold the second hop: retrieval's
    # path facts (first in the evidence, already the principal's) join the answer to it.
    from rayrag.answering import guard as guard_module
    from rayrag.types import Fact

    text = "Velora Systems makes Nimbus Data Platform."
    two_hop = graph_guard(guard, {"d6": text})
    monkeypatch.setattr(guard_module, "MAX_FACTS", 1)  # the graph offers one fact, not the path
    passages = (EVIDENCE.passages[1], Passage("d6#0", "d6", text, 0.9))
    question = "Which product is made by the company that acquired Brightwater Labs?"
    bare = two_hop.check(question, "Nimbus Data Platform", Evidence(passages=passages), PUBLIC)
    path = (
        Fact("Velora Systems", "acquire", "Brightwater Labs", 1.0, ("d2#0",), ("d2",)),
        Fact("Velora Systems", "make", "Nimbus Data Platform", 1.0, ("d6#0",), ("d6",)),
    )
    right = two_hop.check(
        question, "Nimbus Data Platform", Evidence(passages=passages, facts=path), PUBLIC
    )
    assert [c["kind"] for c in bare.validation["claims"]] != ["path"]
    assert [c["kind"] for c in right.validation["claims"]] == ["path"]
    assert right.validation["contradicted"] == 0 and right.confidence > bare.confidence


def test_a_fact_of_a_relation_not_asked_earns_no_bonus(guard):
    # "tied to" asks no relation the graph has: the acquisition ties Velora to Brightwater Labs
    # but does not say it is the answer. The claim is "related" (counted as supported) and
    # earns no bonus: the confidence is the evidence's support alone.
    question = "Which company is tied to Brightwater Labs?"
    report = guard.check(question, "Velora Systems", EVIDENCE, PUBLIC, answer_logprob=0.0)
    assert {(c["kind"], c["verdict"]) for c in report.validation["claims"]} == {
        ("related", "supported")
    }
    assert report.validation["supported"] == 1
    from rayrag.answering.guard import MODEL_WEIGHT

    # p = 1
    assert report.confidence == pytest.approx(report.groundedness ** (1 - MODEL_WEIGHT), abs=1e-3)
    asked = guard.check(ACQUIRED, "Velora Systems", EVIDENCE, PUBLIC, answer_logprob=0.0)
    assert asked.validation["claims"][0]["kind"] == "implied" and asked.confidence == 1.0


def test_an_answer_of_the_wrong_shape_is_escalated(guard):
    report = guard.check(
        "In what year was Brightwater Labs founded?",
        "Velora Systems",
        EVIDENCE,
        PUBLIC,
        answer_logprob=0.0,
    )
    assert "answer_type_mismatch" in report.reasons and report.escalated
    right = guard.check(
        "In what year was Brightwater Labs founded?", "2015", EVIDENCE, PUBLIC, answer_logprob=0.0
    )
    assert "answer_type_mismatch" not in right.reasons


def test_a_two_hop_answer_that_is_the_bridge_is_escalated(guard):
    # "Velora Systems" answers the inner clause (the company that acquired Brightwater Labs),
    # not the question: one fact joins it to the question's entity and no path goes on.
    text = "Velora Systems makes Nimbus Data Platform."
    two_hop = graph_guard(guard, {"d6": text})
    evidence = Evidence(passages=(EVIDENCE.passages[1], Passage("d6#0", "d6", text, 0.9)))
    question = "Which product is made by the company that acquired Brightwater Labs?"
    assert two_hop.inner_clause(question, PUBLIC) == "that acquired Brightwater Labs"
    bridge = two_hop.check(question, "Velora Systems", evidence, PUBLIC, answer_logprob=0.0)
    right = two_hop.check(question, "Nimbus Data Platform", evidence, PUBLIC, answer_logprob=0.0)
    assert [c["kind"] for c in bridge.validation["claims"]] == ["bridge"]
    assert "answer_is_bridge" in bridge.reasons and bridge.escalated
    assert bridge.groundedness == 0.0  # its sentence states the acquisition, not what is made
    assert not right.escalated and right.confidence > 4 * bridge.confidence
    # One hop, the same answer is the right one.
    assert not two_hop.check(
        ACQUIRED, "Velora Systems", evidence, PUBLIC, answer_logprob=0.0
    ).escalated


def test_check_best_keeps_the_candidate_the_checks_trust_most(guard):
    from types import SimpleNamespace

    candidates = [("Brightwater Labs", -0.1), ("Velora Systems", -2.0), ("Lisbon", -3.0)]
    index, report = guard.check_best(ACQUIRED, candidates, EVIDENCE, PUBLIC)
    assert index == 1 and report.text == "Velora Systems" and not report.escalated
    # Its report is the one `check` gives that candidate; the likelier one repeats the question.
    assert report == guard.check(ACQUIRED, "Velora Systems", EVIDENCE, PUBLIC, -2.0)
    assert (
        guard.check(ACQUIRED, "Brightwater Labs", EVIDENCE, PUBLIC, -0.1).confidence
        < report.confidence
    )
    with pytest.raises(ValueError, match="at least one candidate"):
        guard.check_best(ACQUIRED, [], EVIDENCE, PUBLIC)

    # `verify` takes a reader result with its alternatives and returns the chosen one.
    def result(text, logprob, alternatives=()):
        return SimpleNamespace(
            answer=SimpleNamespace(text=text), answer_logprob=logprob, alternatives=alternatives
        )

    alternative = result("Velora Systems", -2.0)
    chosen, verified = guard.verify(
        ACQUIRED, result("Brightwater Labs", -0.1, (alternative,)), EVIDENCE, PUBLIC
    )
    assert chosen is alternative and verified == report
    alone, _ = guard.verify(ACQUIRED, result("Velora Systems", -2.0), EVIDENCE, PUBLIC)
    assert alone.answer.text == "Velora Systems"


def test_an_answer_found_only_inside_a_longer_name_is_escalated(guard):
    evidence = Evidence(
        passages=(Passage("d9#0", "d9", "Velora Systems makes the Catalyst Power System.", 1.0),)
    )
    assert guard.partial_name("Catalyst Power", list(evidence.passages))
    assert not guard.partial_name("Catalyst Power System", list(evidence.passages))
    assert not guard.partial_name("Lisbon", list(evidence.passages))  # not in the passages at all
    report = guard.check(
        "What does Velora Systems make?", "Catalyst Power", evidence, PUBLIC, answer_logprob=0.0
    )
    assert "partial_name" in report.reasons and report.escalated


def test_a_passive_question_without_an_agent_is_not_answered_by_the_agent(guard):
    # "Which year was Brightwater Labs acquired in?" asks no acquirer: the acquirer fills a slot
    # the question does not ask (as the approving agency does for "What condition is X approved
    # to treat?").
    asked = guard.check(ACQUIRED, "Velora Systems", EVIDENCE, PUBLIC, answer_logprob=0.0)
    passive = guard.check(
        "Which year was Brightwater Labs acquired in?",
        "Velora Systems",
        EVIDENCE,
        PUBLIC,
        answer_logprob=0.0,
    )
    assert asked.validation["claims"][0]["kind"] == "implied" and not asked.escalated
    assert passive.validation["claims"][0]["kind"] == "agent_not_asked"
    assert "answer_is_unasked_agent" in passive.reasons and passive.escalated
    by = guard.check(
        "Which company was Brightwater Labs acquired by?",
        "Velora Systems",
        EVIDENCE,
        PUBLIC,
        answer_logprob=0.0,
    )
    assert by.validation["claims"][0]["kind"] == "implied"


def test_a_two_hop_answer_never_in_the_outer_relation_is_escalated(guard):
    from rayrag.types import Fact

    texts = {
        "d6": "Velora Systems makes Nimbus Data Platform.",
        "d7": "The Harbor Review Council approved Nimbus Data Platform in 2022.",
    }
    two_hop = graph_guard(guard, texts)
    made = Fact("Velora Systems", "make", "Nimbus Data Platform", 1.0, ("d6#0",), ("d6",))
    passages = (EVIDENCE.passages[1], *(Passage(f"{d}#0", d, t, 0.9) for d, t in texts.items()))
    evidence = Evidence(passages=passages, facts=(made,))
    question = "Which product is made by the company that acquired Brightwater Labs?"
    agency = two_hop.check(question, "Harbor Review Council", evidence, PUBLIC, answer_logprob=0.0)
    right = two_hop.check(question, "Nimbus Data Platform", evidence, PUBLIC, answer_logprob=0.0)
    assert [c["kind"] for c in agency.validation["claims"]] == ["off_relation"]
    assert "answer_off_relation" in agency.reasons and agency.escalated
    assert "answer_off_relation" not in right.reasons and not right.escalated


def test_an_answer_in_another_relation_than_the_passive_one_asked_is_escalated(guard):
    # "Which year was Brightwater Labs acquired in?" asks the acquisition; the founder is tied to
    # Brightwater Labs by another relation (founded), as a regulation is to a drug whose
    # condition "What condition is X approved to treat?" asks.
    report = guard.check(
        "Which year was Brightwater Labs acquired in?",
        FOUNDER,
        EVIDENCE,
        PUBLIC,
        answer_logprob=0.0,
    )
    assert [c["kind"] for c in report.validation["claims"]] == ["other_relation"]
    assert "answer_in_other_relation" in report.reasons and report.escalated
    # Without a relation the question asks, the same tie is only "related" (no bonus, no penalty).
    loose = guard.check(
        "Who is tied to Brightwater Labs?", FOUNDER, EVIDENCE, PUBLIC, answer_logprob=0.0
    )
    assert [c["kind"] for c in loose.validation["claims"]] == ["related"]
    assert "answer_in_other_relation" not in loose.reasons
