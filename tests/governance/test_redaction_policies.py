"""Redaction policies per collection: a rule picks each document's policy at ingest, the
bundle records them, and a question is redacted as the bundle says, once per policy.

Real Presidio, real ingest (the local engine), real FAISS/BM25/graph on a six-document
corpus: three Wikipedia-style passages (collection=wikipedia -> public_knowledge) and three
HR notes (no collection -> personal).
"""

from __future__ import annotations

import json

import pytest

from rayrag.config import RedactionConfig, load_config, resolve_config
from rayrag.errors import ConfigError
from rayrag.governance.privacy.redaction import QueryRedactor, Redactor
from rayrag.index.bundle import IndexBundle
from rayrag.pipelines.ingest import ingest
from rayrag.types import Principal

EVERYONE = Principal("staff", frozenset({"public", "hr"}))
WIKI = {"collection": "wikipedia"}
DOCS = [
    {
        "id": "w1",
        "title": "Arthur Conan Doyle",
        "metadata": WIKI,
        "text": "Arthur Conan Doyle was a British writer who created the detective Sherlock "
        "Holmes. He was born in Edinburgh in 1859. Write to the society at fans@doyle-society.org.",
    },
    {
        "id": "w2",
        "title": "Agatha Christie",
        "metadata": WIKI,
        "text": (
            "Agatha Christie was an English writer known for "
            "her detective novels featuring Hercule Poirot."
        ),
    },
    {
        "id": "w3",
        "title": "Edinburgh",
        "metadata": WIKI,
        "text": (
            "Edinburgh is the capital city of Scotland, home to a medieval Old Town and a castle."
        ),
    },
    {
        "id": "h1",
        "title": "Leave note",
        "acl": ["hr"],
        "text": "Maria Lopez is on parental leave until March. Her manager Tom Becker covers her "
        "accounts. Call her at 212-555-0199 only in an emergency.",
    },
    {
        "id": "h2",
        "title": "Onboarding",
        "acl": ["hr"],
        "text": "Daniel Okafor joins the finance team on Monday and sits next to Maria Lopez.",
    },
    {
        "id": "h3",
        "title": "Expense policy",
        "acl": ["hr"],
        "text": "Travel over 500 dollars needs a manager's approval before booking.",
    },
]


def _corpus(tmp_path, docs=DOCS):
    path = tmp_path / "corpus.jsonl"
    path.write_text("".join(json.dumps(d) + "\n" for d in docs), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("policies")
    config = resolve_config("demo", ["tracking.enabled=false"])
    ingest(_corpus(tmp), tmp / "b", config, engine="local", progress=lambda _: None)
    return config, IndexBundle.load(tmp / "b")


def test_policies_are_validated_in_one_line(tmp_path):
    bad = tmp_path / "c.yaml"
    bad.write_text(
        "governance:\n  redaction:\n    policy_rules: {wikipedia: open_data}\n", encoding="utf-8"
    )
    with pytest.raises(ConfigError, match="unknown policy 'open_data'"):
        load_config(bad)
    with pytest.raises(ConfigError, match="default_policy names an unknown policy 'public'"):
        resolve_config("demo", ["governance.redaction.default_policy=public"])
    with pytest.raises(ValueError, match="do not redefine it"):
        RedactionConfig(policies={"personal": {"entities": ["PERSON"]}})


def test_public_knowledge_keeps_names_and_redacts_identifiers():
    config = RedactionConfig()
    assert config.policy_operator("public_knowledge", "PERSON") == "keep"
    assert config.policy_operator("personal", "PERSON") == "hmac"
    redactor = Redactor(config)
    text = "Jane Porter wrote to jane.porter@example.com from Boston; her SSN is 078-05-1120."
    forms = redactor.redact_forms([text], ["personal", "public_knowledge"])[0]
    personal, public = forms["personal"], forms["public_knowledge"]
    assert "Jane Porter" not in personal.text and "PERSON_" in personal.text
    assert (
        public.text.startswith("Jane Porter wrote to <EMAIL_ADDRESS>") and "Boston" in public.text
    )
    assert "078-05-1120" not in public.text and "jane.porter@example.com" not in personal.text
    assert (
        public.counts["EMAIL_ADDRESS"] == 1
        and "PERSON" not in public.counts
        and sum(public.counts.values()) == 2
    )
    # The same Presidio pass: each form equals redacting under that policy alone.
    assert redactor.redact(text, "public_knowledge").text == public.text
    assert redactor.redact(text).text == personal.text  # default_policy: personal


def test_the_rule_picks_each_documents_policy_and_the_manifest_records_it(mixed):
    _, bundle = mixed
    recorded = bundle.manifest["redaction"]
    assert recorded["documents"] == {"personal": 3, "public_knowledge": 3}
    assert recorded["policy_rules"] == {"wikipedia": "public_knowledge"}
    assert "PERSON" not in recorded["policies"]["public_knowledge"]["entities"]
    assert bundle.pii_report()["policies"]["public_knowledge"] == list(
        RedactionConfig().policy_entities("public_knowledge")
    )
    texts = {c["doc_id"]: c["text"] for c in bundle.chunks().to_pylist()}
    assert "Arthur Conan Doyle" in texts["w1"] and "<EMAIL_ADDRESS>" in texts["w1"]
    assert "Maria Lopez" not in texts["h1"] and "PERSON_" in texts["h1"] and "0199" in texts["h1"]
    policies = dict(
        zip(bundle.chunks().column("doc_id").to_pylist(), bundle.chunk_policies(), strict=True)
    )
    assert policies == {
        "w1": "public_knowledge",
        "w2": "public_knowledge",
        "w3": "public_knowledge",
        "h1": "personal",
        "h2": "personal",
        "h3": "personal",
    }
    assert "fans@doyle-society.org" not in json.dumps(bundle.manifest)


def test_a_question_is_redacted_per_policy_and_each_form_finds_its_collection(mixed):
    from rayrag.retrieval.hybrid import HybridRetriever

    config, bundle = mixed
    question = "Which detective did Agatha Christie write about?"
    query = QueryRedactor(bundle, config.governance.redaction).redact(question)
    assert query.forms["public_knowledge"] == question
    assert (
        "Agatha Christie" not in query.forms["personal"] and query.text == query.forms["personal"]
    )
    assert query.counts == {"PERSON": 1}
    retriever = HybridRetriever(bundle.path, config)
    for mode in ("dense", "bm25"):  # the name reaches the public passage that carries it
        top = retriever.retrieve(question, EVERYONE, mode=mode, top_k=1)
        assert [p.doc_id for p in top.passages] == ["w2"], mode
    # A personal name is pseudonymised the way the HR notes were, so the join still works
    # (and a possessive is not part of the name: "Maria Lopez's" gets Maria Lopez's pseudonym).
    for mode in ("dense", "bm25"):
        top = retriever.retrieve("Where does Maria Lopez sit?", EVERYONE, mode=mode, top_k=2)
        assert {p.doc_id for p in top.passages} == {"h1", "h2"}, mode
    note = next(c["text"] for c in bundle.chunks().to_pylist() if c["doc_id"] == "h1")
    pseudonym = retriever.dense.redact("Who covers Maria Lopez's accounts?").split()[2][
        : len("PERSON_") + 8
    ]
    assert note.startswith(pseudonym + " is on parental leave")


def test_the_answer_is_redacted_under_its_passages_policy(mixed):
    from rayrag.answering.guard import Guard

    config, bundle = mixed
    guard = Guard(config, bundle_path=bundle.path)
    guard.warm_up()
    chunks = {c["doc_id"]: c["chunk_id"] for c in bundle.chunks().to_pylist()}
    assert guard.answer_policy([chunks["w1"]]) == "public_knowledge"
    assert guard.answer_policy([chunks["w1"], chunks["h1"]]) == "personal"  # the strictest wins
    assert guard.answer_policy([]) is None
    said = "Agatha Christie, per agatha@example.com"
    public = guard.redactor.redact(said, guard.answer_policy([chunks["w2"]])).text
    assert public == "Agatha Christie, per <EMAIL_ADDRESS>"
    assert (
        "Agatha Christie"
        not in guard.redactor.redact(said, guard.answer_policy([chunks["h2"]])).text
    )


def test_default_policy_and_redaction_off_are_what_queries_follow(tmp_path):
    docs = [{k: v for k, v in d.items() if k != "metadata"} for d in DOCS[:3]]  # no collection
    public = resolve_config(
        "demo", ["tracking.enabled=false", "governance.redaction.default_policy=public_knowledge"]
    )
    ingest(
        _corpus(tmp_path, docs), tmp_path / "pub", public, engine="local", progress=lambda _: None
    )
    bundle = IndexBundle.load(tmp_path / "pub")
    assert bundle.policies_used() == ("public_knowledge",)
    # Queried with the demo config (personal by default): the bundle's policy wins.
    query = QueryRedactor(bundle, resolve_config("demo").governance.redaction).redact(
        "Who is Agatha Christie?"
    )
    assert query.text == "Who is Agatha Christie?" and query.groups() == [
        ("Who is Agatha Christie?", None)
    ]

    off = resolve_config("demo", ["tracking.enabled=false", "governance.redaction.enabled=false"])
    ingest(_corpus(tmp_path, docs), tmp_path / "off", off, engine="local", progress=lambda _: None)
    plain = IndexBundle.load(tmp_path / "off")
    assert plain.policies_used() == () and plain.manifest["redaction"]["documents"] == {}
    unredacted = QueryRedactor(plain, resolve_config("demo").governance.redaction)
    assert unredacted.redactor is None
    assert unredacted.redact("Mail ann@example.com").text == "Mail ann@example.com"


def test_wikipedia_importers_mark_their_collection(tmp_path, fixture_data):
    from rayrag.data.importers import import_hotpotqa

    imported = import_hotpotqa(fixture_data / "hotpotqa_sample", tmp_path / "hq")
    rows = [
        json.loads(line)
        for line in imported.files["corpus"].read_text(encoding="utf-8").splitlines()[:5]
    ]
    config = RedactionConfig()
    assert {config.policy_for(row["metadata"]) for row in rows} == {"public_knowledge"}
    assert (
        config.policy_for({}) == "personal"
        and config.policy_for({"collection": "hr"}) == "personal"
    )
