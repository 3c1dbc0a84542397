"""The output guard: redact the answer, check it against the graph and the evidence, score it.

The last stage of the Serve graph (the README's Architecture) runs four checks on a generated
answer:

1. PII: the project's Presidio `Redactor` (governance/privacy/redaction.py) over the answer, with
   the same operators and keys as ingest, so a pseudonym in the answer is the graph's.
2. KG validation, as in knowledge-graph fact checking of generated text (FactKG, Kim et al.
   2023; RARR's "research and revise", Gao et al. 2023): the answer's (subject, relation,
   object) claims, extracted by the ingest `TripleExtractor`, go through
   `GraphRetriever.validate` for *this* principal, so a fact from a document the principal
   may not read can neither support nor contradict. A short entity answer ("Velora
   Systems") states no triple; its implied claim is the relation the question asks about
   (a graph relation of a question entity whose verb the question uses) with the answer
   entity in the asked slot.
3. Groundedness: whether the cited passages (those its valid [n] markers name, or all
   evidence passages when it cites none) and the facts state the answer *in the relation
   the question asks* (`support.answer_support`): the best evidence sentence's share of the
   answer's terms times its share of the question's terms, a second sentence that shares a
   name with the first's passage counting for a two-hop question. A two-hop question's
   clause ("the company that acquired X", `support.inner_clause`) may be stated by that
   second sentence; its outer relation must be stated by the answer's own. An answer that
   only repeats the question's own entity scores 0; no content tokens -> 0.
4. Citations: [n] markers outside 1..len(evidence.passages).

`check_best` / `verify` run the checks on each of the reader's candidate answers
(`decoding.candidates`) and keep the one with the highest confidence.

Confidence, in [0, 1] (answers below `serve.confidence_threshold` are escalated):

    base       = groundedness ** (1 - MODEL_WEIGHT) * p_answer ** MODEL_WEIGHT
                 (p_answer: the generator's probability of its own answer, when it reports one)
               = groundedness when it reports none (a remote model, `generator.backend: openai`):
                 no prior is invented for p_answer; the mix gives the same number when the
                 model is exactly as sure as the evidence (support alone: AUROC 0.946 against
                 0.955 mixed, docs/DECISIONS.md)
    confidence = base + (1 - base) * SUPPORT_BONUS * vouched / (supported + unknown)
                 (vouched: supported claims in the asked relation, stated, or on a KG path; a
                  fact of another relation on the question's entity is only "related")
    x CONTRADICTION_FACTOR when any claim is contradicted   (0.25: always escalates at 0.5)
    x CONTRADICTION_FACTOR when the answer lacks the shape the question asks for
      (`support.answer_type_ok`: a year for "In what year", words for "Which company")
    x CONTRADICTION_FACTOR when a short answer names only entities the question names
      ("Which company acquired Tarrow Power?" -> "Tarrow Power": grounded, answers nothing)
    x CONTRADICTION_FACTOR when a two-hop question's answer is its bridge ("Which product is
      made by the company that acquired X?" -> the acquirer: one fact from X and no path,
      or a sentence that states the inner clause and not the outer relation)
    x CONTRADICTION_FACTOR when the answer is found only inside longer names ("Catalyst Power"
      where the passages say "Catalyst Power System")
    x CONTRADICTION_FACTOR when the answer is the graph's agent of a relation the question puts
      in the passive without one ("What condition is X approved to treat?" -> the agency), or
      is tied to the question's entity only by another relation (-> a regulation X is subject to)
    x CONTRADICTION_FACTOR when a two-hop answer entity has relation facts, none of them in
      the outer relation the evidence's facts hold ("made": the approving agency)
    x BAD_CITATION_FACTOR when a marker is out of range     (0.8)
    = 0 for an empty answer or empty evidence.

Claim subject/relation/object strings are answer content: they stay in the in-process
report (`CONTENT_FIELDS`) and `log_fields()` drops them, with the text.

    >>> guard = Guard(cfg, graph=graph_retriever)
    >>> report = guard.check(
    ...     "Who acquired Brightwater Labs?", "Velora Systems [1].", evidence, principal
    ... )
    >>> report.validation["supported"], report.escalated
    (1, False)
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rayrag.answering.support import (
    agentless_passive,
    answer_support,
    answer_type_ok,
    answers_inner_clause,
    inner_clause,
    question_parts,
    terms,
)
from rayrag.config import RAGConfig
from rayrag.index.graph import base_key, entity_node
from rayrag.index.kg_extract import (
    COOCCURS,
    PLACEHOLDER_RE,
    TripleExtractor,
    entity_key,
    inside_name,
)
from rayrag.types import Chunk, Evidence, Fact, Passage, Principal

MARKER_RE = re.compile(r"\[(\d+)\]")
_WORD_RE = re.compile(r"\w+")
SUPPORT_BONUS = 0.5  # KG-confirmed relations vouch for words the passages paraphrase
# the generator's own probability against the evidence's support (geometric mix; measured,
# docs/DECISIONS.md)
MODEL_WEIGHT = 0.1
CONTRADICTION_FACTOR = 0.25
BAD_CITATION_FACTOR = 0.8
SHORT_ANSWER_WORDS = 12  # an answer this short that states no relation is an entity answer
MAX_FACTS = 50
CONTENT_FIELDS = ("subject", "relation", "object")
VERDICTS = ("supported", "contradicted", "unknown")


@dataclass
class GuardReport:
    """What the guard found. `text` and the claims' `CONTENT_FIELDS` are content: never log them."""

    text: str
    redactions: dict[str, int]
    validation: dict[str, Any]
    groundedness: float
    confidence: float
    escalated: bool
    reasons: list[str]
    citations: dict[str, list[int]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        """The whole report (with content), for the HTTP response to the asking user."""
        return json.dumps(self.to_dict(), sort_keys=True)

    def log_fields(self) -> dict[str, Any]:
        """The content-free part (ids, codes, counts, scores), safe for privacy_log events."""
        row = self.to_dict()
        del row["text"]
        row["validation"] = dict(row["validation"])
        row["validation"]["claims"] = [
            {k: v for k, v in claim.items() if k not in CONTENT_FIELDS}
            for claim in row["validation"].get("claims", [])
        ]
        return row


class Guard:
    """Output checks for one answer; cheap to build, `warm_up()` loads Presidio, spaCy, the graph.

    `graph` is a `GraphRetriever` (or anything with its `link`, `facts`, `validate`); when
    None it is built in `warm_up` from `bundle_path`, `serve.bundle` or $RAYRAG_BUNDLE, and
    when none is set the KG check is skipped (`validation["checked"]` is False).
    """

    def __init__(
        self,
        config: RAGConfig,
        redactor: Any = None,
        graph: Any = None,
        *,
        bundle_path: str | Path | None = None,
    ) -> None:
        self.config = config
        self.redactor = redactor
        self.graph = graph
        self.bundle_path = bundle_path
        self._extractor: TripleExtractor | None = None
        self._stop_words: frozenset[str] | None = None
        self._chunk_policy: dict[str, str] = {}  # chunk_id -> the redaction policy its document had
        self.bundle_id = ""

    def warm_up(self) -> None:
        if self._stop_words is not None:
            return
        path = self.bundle_path or self.config.serve.bundle or os.environ.get("RAYRAG_BUNDLE")
        bundle = None
        if path and (self.graph is None or self.redactor is None):
            from rayrag.index.bundle import IndexBundle

            bundle = IndexBundle.load(path)
            self.bundle_id = bundle.bundle_id
            self._chunk_policy = dict(
                zip(
                    bundle.chunks().column("chunk_id").to_pylist(),
                    bundle.chunk_policies(),
                    strict=True,
                )
            )
        if self.redactor is None and self.config.governance.redaction.enabled:
            from rayrag.governance.privacy.redaction import Redactor

            # The bundle's policies (an answer is redacted under its passages' policy), the
            # config's when there is no bundle.
            redaction = self.config.governance.redaction
            self.redactor = Redactor(
                bundle.query_redaction(redaction).model_copy(update={"enabled": True})
                if bundle is not None
                else redaction
            )
        if self.redactor is not None:
            self.redactor.warm_up()
        if self.graph is None and bundle is not None:
            from rayrag.index.embedder import Embedder
            from rayrag.retrieval.graph_query import GraphRetriever

            embedder = Embedder(self.config.embedding)
            embedder.warm_up()
            self.graph = GraphRetriever(bundle.graph(), self.config.kg, embed_fn=embedder.encode)
        if self.graph is not None:
            prepare = getattr(self.graph, "prepare", None)
            (prepare or self.graph.warm_up)()  # entity names embedded now, not in a request
        self._extractor = TripleExtractor(self.config.kg)
        self._extractor.warm_up()
        from spacy.lang.en.stop_words import STOP_WORDS

        self._stop_words = frozenset(STOP_WORDS)  # last: marks the guard as warm

    def state(self) -> dict[str, Any]:
        """What the Guard checks with: its bundle, redaction, graph, and whether it is warm."""
        graph = getattr(self.graph, "graph", None)
        return {
            "warm": self._stop_words is not None,
            "bundle_id": self.bundle_id,
            "redaction": self.redactor is not None,
            "graph_nodes": graph.graph.number_of_nodes() if graph is not None else 0,
        }

    def answer_policy(self, chunk_ids: Sequence[str]) -> str | None:
        """The redaction policy an answer drawn from these chunks gets: the strictest of
        their documents' policies (a `public_knowledge` passage's names may be said, a
        `personal` one's may not); None (the config's default) when none is known."""
        if self.redactor is None:
            return None
        config = self.redactor.config
        known = {self._chunk_policy.get(c, "") for c in chunk_ids} & set(config.policy_names)
        if not known:
            return None
        return max(known, key=lambda p: (len(config.policy_entities(p)), p))

    # -- the check -----------------------------------------------------------------------

    def redact_text(self, text: str, chunk_ids: Sequence[str]) -> str:
        """Output redaction alone (streamed text; the full `check` runs at the end), under the
        strictest policy of the passages the answer draws on (`chunk_ids`)."""
        self.warm_up()
        if self.redactor is None or not self.config.governance.redaction.enabled:
            return text
        return self.redactor.redact(text, self.answer_policy(list(chunk_ids))).text

    def check(
        self,
        question: str,
        answer_text: str,
        evidence: Evidence,
        principal: Principal,
        answer_logprob: float | None = None,
    ) -> GuardReport:
        """Redact, validate, score; `escalated` when confidence < serve.confidence_threshold.

        `answer_logprob`: the generator's log-probability of the answer (our reader reports
        it), folded into the confidence; None (an OpenAI-compatible backend reports none):
        the confidence starts from groundedness alone (module docstring)."""
        self.warm_up()
        text, redactions = answer_text, {}
        if self.redactor is not None and self.config.governance.redaction.enabled:
            result = self.redactor.redact(
                answer_text, self.answer_policy([p.chunk_id for p in evidence.passages])
            )
            text, redactions = result.text, dict(result.counts)
        citations = self.citations(text, len(evidence.passages))
        cited = [evidence.passages[n - 1] for n in citations["cited"]] or list(evidence.passages)
        mentions = self.mentions(question, principal)
        inner = inner_clause(question, mentions)
        groundedness = self.groundedness(
            text, cited, question, evidence.facts, inner=inner, anchors=mentions
        )
        validation = self.validate(question, text, evidence, principal, inner=inner)

        reasons: list[str] = []
        empty = not self.content_tokens(text)
        if empty:
            reasons.append("empty_answer")
        if not evidence.passages:
            reasons.append("no_evidence")
        if redactions:
            reasons.append("pii_in_answer")
        threshold = self.config.serve.confidence_threshold
        if not empty and groundedness < threshold:
            reasons.append("low_groundedness")
        confidence = 0.0
        if not empty and evidence.passages:
            base = groundedness
            if answer_logprob is not None:
                p_answer = math.exp(min(float(answer_logprob), 0.0))
                base = groundedness ** (1 - MODEL_WEIGHT) * p_answer**MODEL_WEIGHT
            judged = validation["supported"] + validation["unknown"]
            vouched = sum(
                1
                for row in validation["claims"]
                if row["verdict"] == "supported" and row["kind"] != "related"
            )
            confidence = base
            if vouched:
                confidence = base + (1 - base) * SUPPORT_BONUS * vouched / judged
        if validation["contradicted"]:
            reasons.append("contradicted_claim")
            confidence *= CONTRADICTION_FACTOR
        if not empty and not answer_type_ok(question, MARKER_RE.sub(" ", text)):
            # a figure for "Which company", words for "In what year"
            reasons.append("answer_type_mismatch")
            confidence *= CONTRADICTION_FACTOR
        if any(row["kind"] == "repeats_question" for row in validation["claims"]):
            # grounded, but only in the question's own entity
            reasons.append("answer_repeats_question")
            confidence *= CONTRADICTION_FACTOR
        if any(row["kind"] == "bridge" for row in validation["claims"]) or (
            inner and self.is_bridge(question, text, cited, inner)
        ):
            reasons.append("answer_is_bridge")  # answers the two-hop question's inner clause
            confidence *= CONTRADICTION_FACTOR
        if not empty and self.partial_name(text, cited):
            # "Catalyst Power" where every passage says "Catalyst Power System"
            reasons.append("partial_name")
            confidence *= CONTRADICTION_FACTOR
        if any(row["kind"] == "agent_not_asked" for row in validation["claims"]):
            # fills the agent slot of a passive question without one
            reasons.append("answer_is_unasked_agent")
            confidence *= CONTRADICTION_FACTOR
        if any(row["kind"] == "other_relation" for row in validation["claims"]):
            # "approved to treat" -> the regulation X is subject to
            reasons.append("answer_in_other_relation")
            confidence *= CONTRADICTION_FACTOR
        if any(row["kind"] == "off_relation" for row in validation["claims"]):
            reasons.append("answer_off_relation")  # in the graph, but never in the relation asked
            confidence *= CONTRADICTION_FACTOR
        if citations["out_of_range"]:
            reasons.append("bad_citation")
            confidence *= BAD_CITATION_FACTOR
        escalated = confidence < threshold
        if escalated:
            reasons.append("low_confidence")
        return GuardReport(
            text=text,
            redactions=redactions,
            validation=validation,
            groundedness=round(groundedness, 4),
            confidence=round(confidence, 4),
            escalated=escalated,
            reasons=reasons,
            citations=citations,
        )

    def check_best(
        self,
        question: str,
        candidates: list[tuple[str, float | None]],
        evidence: Evidence,
        principal: Principal,
    ) -> tuple[int, GuardReport]:
        """`check` each (answer text, log-probability) candidate, most likely first; returns the
        index and report of the one with the highest confidence (the earlier on a tie).

        Why: the reader proposes, the checks dispose. Its n-best (`decoding.candidates`) often
        holds the right end of a two-hop path where its first choice is the bridge."""
        if not candidates:
            raise ValueError("check_best needs at least one candidate answer")
        best_index, best = (
            0,
            self.check(question, candidates[0][0], evidence, principal, candidates[0][1]),
        )
        for i, (text, logprob) in enumerate(candidates[1:], 1):
            report = self.check(question, text, evidence, principal, logprob)
            if report.confidence > best.confidence:
                best_index, best = i, report
        return best_index, best

    def verify(
        self, question: str, result: Any, evidence: Evidence, principal: Principal
    ) -> tuple[Any, GuardReport]:
        """(the chosen reader result, its report) for a `ReaderResult` and its `alternatives`
        (`decoding.candidates`): `check_best` over them; just `check` when it has none."""
        candidates = [result, *getattr(result, "alternatives", ())]
        index, report = self.check_best(
            question, [(c.answer.text, c.answer_logprob) for c in candidates], evidence, principal
        )
        return candidates[index], report

    # -- the parts (public so tests and the eval harness can call each) ------------------

    def content_tokens(self, text: str) -> list[str]:
        """Lowercased words minus stopwords, [n] markers and redaction placeholders."""
        self.warm_up()
        assert self._stop_words is not None
        return [w for w in _WORD_RE.findall(_bare(text).casefold()) if w not in self._stop_words]

    def mentions(self, question: str, principal: Principal) -> list[str]:
        """The entities the graph links in the question for this principal
        (none without a graph)."""
        if self.graph is None:
            return []
        return [node.removeprefix("entity:") for node in self.graph.link(question, principal)]

    def inner_clause(self, question: str, principal: Principal) -> str:
        """`support.inner_clause` of the question, ended by the entities the graph links in it
        for this principal ("" for a one-hop question)."""
        return inner_clause(question, self.mentions(question, principal))

    def groundedness(
        self,
        text: str,
        passages: list[Passage],
        question: str = "",
        facts: tuple[Fact, ...] | list[Fact] = (),
        inner: str = "",
        anchors: list[str] | tuple[str, ...] = (),
    ) -> float:
        """`support.answer_support` of the answer (markers and placeholders removed) over the
        passages (title and text) and the relation facts; 0.0 without content or passages.
        `inner`: the two-hop question's bridge clause (`inner_clause`); `anchors`: the
        question's linked entities (`mentions`), which a one-hop answer's own sentence or
        title must name."""
        self.warm_up()
        if not self.content_tokens(text) or not passages:
            return 0.0
        lines = [
            f"{f.subject} {f.relation.replace('_', ' ')} {f.object}"
            for f in facts
            if f.relation != COOCCURS
        ]
        return answer_support(
            question,
            _bare(text),
            _titled(passages),
            self._stop_words,
            lines,
            titles=[p.title for p in passages],
            inner=inner,
            anchors=anchors,
        )

    def is_bridge(self, question: str, text: str, passages: list[Passage], inner: str) -> bool:
        """`support.answers_inner_clause` over the passages (title and text): the answer is the
        entity the two-hop question's clause describes, stated in a sentence of its own."""
        self.warm_up()
        return answers_inner_clause(
            question,
            _bare(text),
            _titled(passages),
            self._stop_words,
            [p.title for p in passages],
            inner,
        )

    @staticmethod
    def partial_name(text: str, passages: list[Passage]) -> bool:
        """Whether the answer occurs in the passages, and every time as part of a longer
        capitalised name (`kg_extract.inside_name`): a span that stopped a word early."""
        bare = " ".join(_bare(text).split())
        if not bare:
            return False
        found = False
        for passage in passages:
            for match in re.finditer(re.escape(bare), passage.text):
                if not inside_name(passage.text, *match.span()):
                    return False
                found = True
        return found

    @staticmethod
    def citations(text: str, n_passages: int) -> dict[str, list[int]]:
        """Valid [n] markers (1-based, first mention first) and out-of-range ones."""
        cited: list[int] = []
        bad: list[int] = []
        for match in MARKER_RE.finditer(text):
            n = int(match.group(1))
            target = cited if 1 <= n <= n_passages else bad
            if n not in target:
                target.append(n)
        return {"cited": cited, "out_of_range": bad}

    def validate(
        self, question: str, text: str, evidence: Evidence, principal: Principal, inner: str = ""
    ) -> dict[str, Any]:
        """Verdict counts and per-claim rows (ids + `CONTENT_FIELDS`) for this principal.
        `inner`: the two-hop question's bridge clause, "" when one-hop (see `_implied`)."""
        out: dict[str, Any] = {
            "checked": self.graph is not None,
            **dict.fromkeys(VERDICTS, 0),
            "claims": [],
        }
        if self.graph is None:
            return out
        bare = MARKER_RE.sub(" ", text)
        stated = self.stated_claims(bare)
        rows = [
            self._row(claim, verdict, facts, "stated")
            for claim, verdict, facts in self._judge(stated, principal)
        ]
        if not any(c[1] != COOCCURS for c in stated) and len(bare.split()) <= SHORT_ANSWER_WORDS:
            rows += self._implied(question, bare, evidence, principal, inner)
        for i, row in enumerate(rows, 1):
            row["id"] = f"c{i}"
            out[row["verdict"]] += 1
        out["claims"] = rows
        return out

    def stated_claims(self, text: str) -> list[tuple[str, str, str]]:
        """(subject key, relation, object key) triples the answer states (ingest extractor)."""
        self.warm_up()
        assert self._extractor is not None
        [extraction] = self._extractor([Chunk("answer", "answer", text, 0, len(text))])
        return [(t.subject, t.relation, t.object) for t in extraction.triples]

    # -- helpers ---------------------------------------------------------------------------

    def _judge(
        self, claims: list[tuple[str, str, str]], principal: Principal
    ) -> list[tuple[tuple[str, str, str], str, tuple]]:
        """(claim, verdict, facts) in the claims' order."""
        if not claims:
            return []
        verdicts = {}
        for verdict, checks in self.graph.validate(claims, principal).items():
            for check in checks:
                verdicts[tuple(check.claim)] = (verdict, check.facts)
        return [(claim, *verdicts[tuple(claim)]) for claim in claims]

    def _implied(
        self, question: str, text: str, evidence: Evidence, principal: Principal, inner: str = ""
    ) -> list[dict[str, Any]]:
        """One claim per entity the answer names that the question does not.

        Templates are graph facts joining a question entity to another entity; those whose
        relation's words the question uses ("acquire" for "Who acquired ...?") are the
        asked relation and may contradict; without one, any relation may only support.
        For a two-hop question (`inner` set), an answer joined to the question's entity by one
        fact and by no path is the bridge ("the company that acquired X" itself): kind "bridge";
        one whose facts never take part in the outer relation is "off_relation". The graph's
        agent of a relation the question puts in the passive without "by" is "agent_not_asked";
        with such a relation asked, an answer tied to the entity by another one is "other_relation".
        """
        asked_nodes = set(self.graph.link(question, principal))
        named = list(self.graph.link(text, principal))
        answer_nodes = [n for n in named if n not in asked_nodes]
        if named and not answer_nodes:  # "Which company acquired X?" -> "X": answers nothing
            return [self._row(("", "", ""), "unknown", (), "repeats_question")]
        if not answer_nodes:
            return (
                [self._row(("", "", ""), "unknown", (), "implied")]
                if self.content_tokens(text)
                else []
            )
        facts = (
            self.graph.facts(
                question, principal, [p.chunk_id for p in evidence.passages], max_facts=MAX_FACTS
            )
            if asked_nodes
            else []
        )
        templates = []  # (question entity name, relation, question entity is the subject)
        for fact in facts:
            s_in, o_in = _node(fact.subject) in asked_nodes, _node(fact.object) in asked_nodes
            if s_in != o_in:
                templates.append((fact.subject if s_in else fact.object, fact.relation, s_in))
        # A relation is asked when a content word of its name stems like one of the question's
        # ("complete_acquisition_of" for "acquired"; not "be_subject_to" for "is ... approved").
        question_terms = terms(question, self._stop_words)
        asked = [
            t
            for t in templates
            if t[1] != COOCCURS and terms(t[1].replace("_", " "), self._stop_words) & question_terms
        ]
        # "What condition is X approved to treat?" asks no agent of "approve": a claim with the
        # answer as its subject would vouch for the agency, and a supported one names the agent.
        agents = [
            t
            for t in asked
            if not t[2]
            and agentless_passive(
                question, terms(t[1].replace("_", " "), self._stop_words), self._stop_words
            )
        ]
        asked = [t for t in asked if t not in agents]
        rows = []
        for node in answer_nodes:
            name = node.removeprefix("entity:")
            # The retrieval's own path facts (first in the evidence, the principal's already)
            # join the answer to the question even when the graph's top facts do not hold them.
            path = _bridge_path([*evidence.facts, *facts], asked_nodes, node)
            if path:
                # A two-hop question ("the product of the company that acquired X"): the answer
                # is joined to the question's entity through a bridge, not by the asked relation.
                # A one-hop question asks no such path: another drug of the same maker is "related".
                rows.append(
                    self._row(
                        (path[0].subject, path[0].relation, path[0].object),
                        "supported",
                        tuple(path),
                        "path" if inner else "other_relation" if agents else "related",
                    )
                )
                continue
            direct = [
                f
                for f in [*evidence.facts, *facts]
                if f.relation != COOCCURS
                and {_node(f.subject), _node(f.object)} & asked_nodes
                and node in (_node(f.subject), _node(f.object))
            ]
            if inner and direct:
                rows.append(
                    self._row(
                        (direct[0].subject, direct[0].relation, direct[0].object),
                        "unknown",
                        (direct[0],),
                        "bridge",
                    )
                )
                continue
            off = (
                self._off_relation(question, inner, node, text, evidence, principal)
                if inner
                else None
            )
            if off is not None:
                rows.append(
                    self._row(
                        (off.subject, off.relation, off.object), "unknown", (off,), "off_relation"
                    )
                )
                continue
            agent = next(
                (
                    j
                    for j in self._judge(
                        list(dict.fromkeys((name, rel, q) for q, rel, _ in agents)), principal
                    )
                    if j[1] == "supported"
                ),
                None,
            )
            if (
                agent is not None
            ):  # the agency that approved X, for "What condition is X approved to treat?"
                rows.append(self._row(agent[0], "unknown", agent[2], "agent_not_asked"))
                continue
            claims = list(
                dict.fromkeys(
                    (q, rel, name) if q_subject else (name, rel, q)
                    for q, rel, q_subject in (asked or templates)
                )
            )
            judged = self._judge(claims, principal)
            order = VERDICTS if asked else ("supported",)
            best = next((j for v in order for j in judged if j[1] == v), None)
            if best is None:
                best = (claims[0] if claims else (name, "", ""), "unknown", ())
            # A fact of a relation the question does not ask about ties the answer to the
            # question's entity but does not answer it: "related", counted, never a bonus; when
            # the question asks a relation the graph holds for its entity (in the passive without
            # an agent: "approved"), such an answer fills another relation's slot
            # ("other_relation").
            kind = (
                "implied"
                if asked
                else "other_relation"
                if agents and best[1] == "supported"
                else "related"
            )
            rows.append(self._row(best[0], best[1], best[2], kind))
        return rows

    def _off_relation(
        self,
        question: str,
        inner: str,
        node: str,
        text: str,
        evidence: Evidence,
        principal: Principal,
    ) -> Fact | None:
        """For a two-hop question: one of the answer entity's relation facts when the graph knows
        the question's outer relation ("made" -> make / manufacture, among the evidence's facts)
        and the answer takes part in none of it (the agency that approved the maker's drug), else
        None: the answer is not in the relation asked."""
        _, outer = question_parts(question, inner, self._stop_words, terms(text, self._stop_words))

        def outer_relation(fact: Fact) -> bool:
            return fact.relation != COOCCURS and bool(
                terms(fact.relation.replace("_", " "), self._stop_words) & outer
            )

        if not any(outer_relation(f) for f in evidence.facts):
            return None
        own = [
            f
            for f in self.graph.facts(
                text, principal, [p.chunk_id for p in evidence.passages], max_facts=MAX_FACTS
            )
            if f.relation != COOCCURS and node in (_node(f.subject), _node(f.object))
        ]
        if not own or any(outer_relation(f) for f in own):
            return None
        return own[0]

    @staticmethod
    def _row(claim: tuple[str, str, str], verdict: str, facts: tuple, kind: str) -> dict[str, Any]:
        subject, relation, obj = claim
        return {
            "id": "",
            "kind": kind,
            "verdict": verdict,
            "fact_chunk_ids": sorted({c for f in facts for c in f.chunk_ids}),
            "fact_doc_ids": sorted({d for f in facts for d in f.doc_ids}),
            "subject": subject,
            "relation": relation,
            "object": obj,
        }


def _bridge_path(facts: list[Fact], asked_nodes: set[str], answer_node: str) -> list[Fact]:
    """Two relation facts joining a question entity to a bridge entity the question does not
    name and that bridge to the answer entity ([] when there is none): the KG path a two-hop
    answer stands on. Facts come from the principal's subgraph (`GraphRetriever.facts`)."""
    relations = [f for f in facts if f.relation != COOCCURS]
    for first in relations:
        ends = {_node(first.subject), _node(first.object)}
        asked_end = ends & asked_nodes
        if not asked_end or answer_node in ends:
            continue
        bridges = ends - asked_nodes
        for second in relations:
            other = {_node(second.subject), _node(second.object)}
            if second is not first and answer_node in other and bridges & other:
                return [first, second]
    return []


def _bare(text: str) -> str:
    """The answer without [n] markers and redaction placeholders."""
    return PLACEHOLDER_RE.sub(" ", MARKER_RE.sub(" ", text))


def _titled(passages: list[Passage]) -> list[str]:
    """Each passage's text under its title (the title names what its sentences are about)."""
    return [f"{p.title}\n{p.text}" if p.title else p.text for p in passages]


def _node(name: str) -> str:
    """The entity node a fact's display name stands for (legal forms dropped, as the graph does)."""
    key = entity_key(name)
    return entity_node(base_key(key)) if key else ""
