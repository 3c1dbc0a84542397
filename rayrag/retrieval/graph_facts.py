"""Facts from the graph: the relation a question asks, fact paths, hop candidates, claim checks.

Multi-hop support for the hybrid retriever (`question_relation`, `answering`,
`hop_candidates`, `path`) and the Guard's claim validation (`validate`). All run on the
principal's view, so a bridge, a candidate or a fact never comes from a document it may
not read.
"""

from __future__ import annotations

import re
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

from rayrag.index.graph import (
    MENTIONS,
    SYNONYM,
    passage_node,
)
from rayrag.index.kg_extract import (
    COOCCURS,
    is_pseudonym_key,
)
from rayrag.retrieval.graph_view import MAX_CACHED_QUESTIONS, GraphView, unit_rows
from rayrag.types import Fact, Principal

MAX_BRIDGE_PASSAGES = 1000  # a bridge named by more passages is a hub ("United States"), not a hop
_NOT_FACTS = frozenset({MENTIONS, SYNONYM})
_RELATION_CHARS = re.compile(r"[^a-z0-9_]+")
_CONTENT_POS = frozenset({"VERB", "NOUN", "ADJ"})
_RELATION_FILLERS = frozenset(
    {"be", "not", "of", "in", "to", "at", "for", "as", "by", "on", "with", "from", "into"}
)


@dataclass(frozen=True)
class ClaimCheck:
    """One claim's verdict evidence: the facts that support it, or the facts it contradicts."""

    claim: tuple[str, str, str]
    facts: tuple[Fact, ...] = ()


@dataclass(frozen=True)
class HopCandidate:
    """A second-hop passage: the bridge entity that reaches it, the bridge's weight x
    specificity, the first-hop chunks the bridge came from, and whether the passage holds a
    relation fact on the bridge that the question asks about."""

    chunk_id: str
    bridge: str
    weight: float
    sources: tuple[str, ...]
    answers: bool
    asked: bool = False  # the bridge is joined to the question by a relation it asks about


class GraphFacts:
    """Fact methods of `GraphRetriever` (a mixin: they share its views and caches)."""

    def facts(
        self, question: str, principal: Principal, chunk_ids: list[str], max_facts: int = 10
    ) -> list[Fact]:
        """Relation paths (<= `max_hops`) from the question's entities to those of `chunk_ids`.

        Shortest paths only, one per (question entity, passage entity) pair; a fact scores
        its confidence / path length and the best `max_facts` are returned. A pair linked
        by a verb relation does not also report its co-occurrence. When nothing in the
        question links, the passages' own relations are returned instead. Provenance is the
        principal's readable chunks only, the requested chunks first (they are the citations).
        """
        view = self._view(principal)
        relations = self._relations(view)
        g = view.kg.graph
        readable = [c for c in chunk_ids if passage_node(c) in view.index]
        targets = {
            v
            for c in readable
            for _, v, key in g.out_edges(passage_node(c), keys=True)
            if key == MENTIONS
        }
        sources = sorted(self._match(question, view))
        best: dict[tuple[str, str, str], float] = {}
        if sources:
            for source in sources:
                for path in _shortest_paths(source, targets, view.neighbours, self.config.max_hops):
                    for a, b in zip(path, path[1:], strict=False):
                        for edge in _best_edges(relations[(min(a, b), max(a, b))]):
                            score = g.edges[edge]["confidence"] / (len(path) - 1)
                            best[edge] = max(score, best.get(edge, 0.0))
        else:
            wanted = set(readable)
            ordered = sorted(targets)
            for i, a in enumerate(ordered):
                for b in ordered[i + 1 :]:
                    for edge in _best_edges(relations.get((a, b), [])):
                        if wanted.intersection(g.edges[edge]["chunk_ids"]):
                            best[edge] = g.edges[edge]["confidence"]
        ranked = sorted(best, key=lambda e: (-best[e], e))[:max_facts]
        return [self._fact(view, edge, readable) for edge in ranked]

    def hop_candidates(
        self,
        question: str,
        principal: Principal,
        chunk_ids: list[str],
        mention_weight: float = 0.5,
        relation_threshold: float = 0.5,
    ) -> dict[str, HopCandidate]:
        """Second-hop chunk_id -> `HopCandidate`: passages one bridge entity away from the
        question, for a multi-hop question's second hop (IRCoT / HippoRAG-style).

        Bridges are entities the question does not name, reached from one it names:
        * weight 1 (`asked`): joined to a named entity by a relation fact whose relation the
          question asks about (`question_relation`), e.g. "Velora acquire Avenra" for "...
          the company that acquired Avenra?"; sources: the fact's chunks;
        * `mention_weight`: joined by another relation fact (not co-occurrence), or
          mentioned by the first hop: the first of `chunk_ids` (the ranking) that mentions a
          named entity, the top one when none does; sources: the fact's chunks, that chunk.
        Redaction pseudonyms are never bridges (a person is no join key between documents).
        A bridge's weight is scaled by its specificity 1 / log2(1 + passages mentioning it)
        (HippoRAG's node specificity, damped: a city names many passages, a company few); a
        bridge named by more than `MAX_BRIDGE_PASSAGES` passages is a hub and none.
        Second hops are the principal's readable passages that mention a bridge, except
        those that mention a named entity (the first hop reaches them) and the first hop.
        A candidate `answers` when it is the provenance of a relation fact from its bridge
        to an entity the question does not name, whose relation the question asks about,
        unless it only repeats the joining fact's relation in the same role (a sibling:
        "Board approve X" -> "Board approve Y"): "Cresthill make Granite" for "Which product
        is made by ...". Synonyms whose names contain one another stand for the bridge too
        (`_aliases_of`).
        """
        view = self._view(principal)
        g = view.kg.graph
        relations = self._relations(view)
        named = set(self._match(question, view))
        lowered = question.casefold()
        excluded: set[str] = set()
        for entity in named:
            excluded.update(u for u, _, key in g.in_edges(entity, keys=True) if key == MENTIONS)

        def usable(entity: str) -> bool:
            return (
                entity not in named
                and g.nodes[entity].get("kind") == "entity"
                and not is_pseudonym_key(entity.removeprefix("entity:"))
                and g.nodes[entity].get("name", "").casefold() not in lowered
            )

        asked = self.question_relation(question, principal, relation_threshold)
        bridges: dict[str, tuple[float, set[str]]] = {}  # entity -> (weight, source chunks)
        joins: dict[
            str, list[tuple[str, str, str]]
        ] = {}  # bridge -> the facts joining it to the question
        asked_bridges: set[str] = set()
        for q in sorted(named):
            for other in view.neighbours.get(q, ()):
                edges = [e for e in relations[(min(q, other), max(q, other))] if e[2] != COOCCURS]
                if edges and usable(other):
                    sources = {
                        c
                        for e in edges
                        for c in g.edges[e]["chunk_ids"]
                        if passage_node(c) in view.index
                    }
                    if any(asked(e[2]) for e in edges):
                        asked_bridges.add(other)
                    weight = 1.0 if other in asked_bridges else mention_weight
                    prior, prior_sources = bridges.get(other, (0.0, set()))
                    bridges[other] = (max(weight, prior), prior_sources | sources)
                    joins.setdefault(other, []).extend(edges)
        first = [c for c in chunk_ids if passage_node(c) in excluded][:1] or chunk_ids[:1]
        for chunk_id in first:
            node = passage_node(chunk_id)
            if node not in view.index:
                continue
            for _, entity, key in g.out_edges(node, keys=True):
                if key == MENTIONS and usable(entity):
                    weight, sources = bridges.get(entity, (mention_weight, set()))
                    bridges[entity] = (weight, sources | {chunk_id})
        out: dict[str, HopCandidate] = {}
        for entity, (weight, sources) in sorted(bridges.items()):
            names = self._aliases_of(entity, view)
            passages = list(
                dict.fromkeys(
                    u
                    for name in names
                    for u, _, key in g.in_edges(name, keys=True)
                    if key == MENTIONS and u in view.index
                )
            )
            if len(passages) > MAX_BRIDGE_PASSAGES:
                continue
            specific = weight / np.log2(1 + max(len(passages), 1))
            answering: set[str] = set()
            for name in names:
                for other in view.neighbours.get(name, ()):
                    if (
                        other in named
                        or other in names
                        or is_pseudonym_key(other.removeprefix("entity:"))
                    ):
                        continue
                    for edge in relations[(min(name, other), max(name, other))]:
                        if (
                            edge[2] != COOCCURS
                            and asked(edge[2])
                            and not any(
                                _siblings(join, entity, edge, name)
                                for join in joins.get(entity, ())
                            )
                        ):
                            answering.update(g.edges[edge]["chunk_ids"])
            for node in passages:
                chunk_id = g.nodes[node]["chunk_id"]
                if node in excluded or chunk_id in first:
                    continue
                candidate = HopCandidate(
                    chunk_id,
                    entity,
                    specific,
                    tuple(sorted(sources)),
                    chunk_id in answering,
                    entity in asked_bridges,
                )
                prior = out.get(chunk_id)
                if prior is None or (candidate.answers, candidate.weight) > (
                    prior.answers,
                    prior.weight,
                ):
                    out[chunk_id] = candidate
        return out

    def path(
        self,
        question: str,
        principal: Principal,
        chunk_ids: list[str],
        relation_threshold: float = 0.5,
    ) -> list[Fact]:
        """The relation path the ranked `chunk_ids` give the question, as facts in order:
        (X acquire Avenra Logistics), (X make P) for "Which product is made by the company
        that acquired Avenra Logistics?". Empty when no relation fact touches the question.

        Hop 1 is a relation fact from an entity the question names to a bridge it does not
        name (or, when none is cited by the passages, a relation fact of the top passage
        that mentions a named entity); hop 2, a fact from the bridge to a further entity
        whose relation the question asks about (`question_relation`). Both must be cited
        by the passages (the principal's readable ones); better-ranked citations, and
        relations the question asks about, win. A question that asks nothing beyond hop 1
        gets a one-fact path.
        """
        view = self._view(principal)
        g = view.kg.graph
        relations = self._relations(view)
        named = set(self._match(question, view))
        if not named:
            return []
        asked = self.question_relation(question, principal, relation_threshold)
        rank = {c: i for i, c in enumerate(c for c in chunk_ids if passage_node(c) in view.index)}
        never = len(rank)

        def cited(edge: tuple[str, str, str]) -> int:
            return min((rank[c] for c in g.edges[edge]["chunk_ids"] if c in rank), default=never)

        def person(node: str) -> bool:
            return is_pseudonym_key(node.removeprefix("entity:"))

        first: list[tuple[tuple[int, int], tuple[str, str, str], str]] = []  # (key, edge, bridge)
        for q in sorted(named):
            for other in view.neighbours.get(q, ()):
                if other in named or person(other):
                    continue
                for edge in relations[(min(q, other), max(q, other))]:
                    if edge[2] != COOCCURS and cited(edge) < never:
                        first.append(((0 if asked(edge[2]) else 1, cited(edge)), edge, other))
        if not first:  # the named entity has no fact: the top passage naming it gives the bridge
            naming = [
                c
                for c in rank
                if any(
                    n in named
                    for _, n, key in g.out_edges(passage_node(c), keys=True)
                    if key == MENTIONS
                )
            ]
            for chunk_id in naming[:1]:
                mentioned = [
                    n
                    for _, n, key in g.out_edges(passage_node(chunk_id), keys=True)
                    if key == MENTIONS
                ]
                for entity in mentioned:
                    for other in view.neighbours.get(entity, ()):
                        for edge in relations[(min(entity, other), max(entity, other))]:
                            if edge[2] == COOCCURS or chunk_id not in g.edges[edge]["chunk_ids"]:
                                continue
                            for node in edge[:2]:
                                if node not in named and not person(node):
                                    first.append(
                                        ((0 if asked(edge[2]) else 1, cited(edge)), edge, node)
                                    )
        if not first:
            return []
        best: tuple[tuple[int, ...], list[tuple[str, str, str]]] | None = None
        for key, edge, bridge in first:
            chosen = [edge]
            follow = []
            names = self._aliases_of(bridge, view)
            for name in names:
                for other in view.neighbours.get(name, ()):
                    if other in named or other in edge or other in names or person(other):
                        continue
                    for second in relations[(min(name, other), max(name, other))]:
                        if (
                            second[2] != COOCCURS
                            and asked(second[2])
                            and cited(second) < never
                            and not _siblings(edge, bridge, second, name)
                        ):
                            follow.append((cited(second), second))
            if follow:
                chosen.append(min(follow)[1])
            score = (0 if follow else 1, *key, min(follow)[0] if follow else never)
            if best is None or score < best[0]:
                best = (score, chosen)
        assert best is not None
        cited_ids = list(rank)
        return [self._fact(view, edge, cited_ids) for edge in best[1]]

    def answering(
        self,
        question: str,
        principal: Principal,
        chunk_ids: list[str],
        relation_threshold: float = 0.5,
    ) -> list[str]:
        """Those of `chunk_ids` (order kept) that are the provenance of a relation fact on
        an entity the question names, whose relation the question asks about
        (`question_relation`): "Velora acquire Avenra" for "Which company acquired Avenra?"."""
        view = self._view(principal)
        g = view.kg.graph
        relations = self._relations(view)
        asked = self.question_relation(question, principal, relation_threshold)
        held: set[str] = set()
        for q in self._match(question, view):
            for other in view.neighbours.get(q, ()):
                for edge in relations[(min(q, other), max(q, other))]:
                    if edge[2] != COOCCURS and asked(edge[2]):
                        held.update(g.edges[edge]["chunk_ids"])
        return [c for c in chunk_ids if c in held]

    def question_relation(
        self, question: str, principal: Principal, threshold: float = 0.5
    ) -> Callable[[str], bool]:
        """A test: does the question ask about this relation? Yes when one of its words
        begins a content word of the question ("make" in "maker"), or when its words embed
        within `threshold` cosine of one of the question's verbs, or of the verb an agent
        noun comes from ("manufacture" for "made" or "maker"). Words of the names the
        question links do not count. Cached per (question, view, threshold): linking, the
        hops and the path all ask."""
        view = self._view(principal)
        key = (question, id(view), threshold)
        cached = self._asked.get(key)
        if cached is not None and cached[0] is view:
            return cached[1]
        doc = self._parse(question)
        named_tokens = set()
        for node in self._match(question, view):
            name = view.kg.graph.nodes[node].get("name", "").casefold()
            named_tokens.update(name.split())
        # By part of speech, not stop list: spaCy's stop words include "made" and "make".
        content = [
            t for t in doc if t.is_alpha and t.pos_ in _CONTENT_POS and t.lower_ not in named_tokens
        ]
        words = list(dict.fromkeys(t.lemma_.casefold() for t in content))
        verbs = list(
            dict.fromkeys(
                [
                    *(t.lemma_.casefold() for t in content if t.pos_ == "VERB"),
                    *(form for t in content if t.pos_ == "NOUN" for form in _agent_verbs(t.lower_)),
                ]
            )
        )
        vectors = (
            unit_rows(np.asarray(self.embed_fn(verbs), dtype=np.float32))
            if verbs and self.embed_fn is not None
            else None
        )
        verdicts: dict[str, bool] = {}

        def asked(relation: str) -> bool:
            verdict = verdicts.get(relation)
            if verdict is None:
                parts = [w for w in relation.split("_") if w and w not in _RELATION_FILLERS]
                verdict = any(w.startswith(p) for p in parts for w in words if len(p) >= 3)
                if not verdict and parts and vectors is not None:
                    vector = self._relation_vectors.get(relation)
                    if vector is None:
                        vector = self._relation_vectors[relation] = unit_rows(
                            np.asarray(self.embed_fn([" ".join(parts)]), dtype=np.float32)
                        )[0]
                    verdict = bool((vectors @ vector).max() >= threshold)
                verdicts[relation] = verdict
            return verdict

        self._asked[key] = (view, asked)
        while len(self._asked) > MAX_CACHED_QUESTIONS:
            self._asked.popitem(last=False)
        return asked

    def validate(
        self, claims: list[tuple[str, str, str]], principal: Principal
    ) -> dict[str, list[ClaimCheck]]:
        """Sort (subject, relation, object) claims into supported / contradicted / unknown.

        Names resolve like query mentions (exact alias, then embedding neighbour); a
        relation is matched as written, then lemmatised ("acquired" -> "acquire").
        * supported: the principal's graph has that edge (co-occurrence in either order);
        * contradicted: not supported, and the graph holds the negation (`not_acquire` vs
          `acquire`), or the relation is functional in the principal's graph (seen with
          >= 2 subjects, none with two objects) and the subject has it to a different
          object, or inverse-functional (>= 2 objects, none with two subjects) and the
          object has it from a different subject ("Orbital acquired Beta" when the graph
          says Velora did); co-occurrence never contradicts. One observation is no
          evidence of functionality, so a relation seen once contradicts nothing;
        * unknown: everything else, including names the principal cannot see.
        """
        view = self._view(principal)
        g = view.kg.graph
        functional, inverse, _ = self._functionality(view)
        out: dict[str, list[ClaimCheck]] = {"supported": [], "contradicted": [], "unknown": []}
        for claim in claims:
            subject, relation, obj = claim
            s = self._resolve(subject, view)
            o = self._resolve(obj, view)
            if s is None or o is None or s == o:
                out["unknown"].append(ClaimCheck(tuple(claim)))
                continue
            rel = self._relation_name(relation, view)
            support = [
                (u, v, rel)
                for u, v in ((s, o), (o, s))
                if g.has_edge(u, v, rel) and ((u, v) == (s, o) or rel == COOCCURS)
            ]
            if support:
                out["supported"].append(
                    ClaimCheck(tuple(claim), tuple(self._fact(view, e, []) for e in support))
                )
                continue
            negated = rel[4:] if rel.startswith("not_") else f"not_{rel}"
            conflicts = [(s, o, negated)] if g.has_edge(s, o, negated) else []
            if rel != COOCCURS and rel in functional:
                conflicts += [
                    (s, v, rel) for _, v, key in g.out_edges(s, keys=True) if key == rel and v != o
                ]
            if rel != COOCCURS and rel in inverse:
                conflicts += [
                    (u, o, rel) for u, _, key in g.in_edges(o, keys=True) if key == rel and u != s
                ]
            verdict = "contradicted" if conflicts else "unknown"
            out[verdict].append(
                ClaimCheck(tuple(claim), tuple(self._fact(view, e, []) for e in conflicts))
            )
        return out

    def _relations(self, view: GraphView) -> dict[tuple[str, str], list[tuple[str, str, str]]]:
        if view.relations is None:
            view.relations = {}
            for u, v, key in view.kg.graph.edges(keys=True):
                if key not in _NOT_FACTS and u != v:
                    view.relations.setdefault((min(u, v), max(u, v)), []).append((u, v, key))
            for a, b in view.relations:
                view.neighbours.setdefault(a, []).append(b)
                view.neighbours.setdefault(b, []).append(a)
        return view.relations

    def _functionality(self, view: GraphView) -> tuple[set[str], set[str], set[str]]:
        """Functional, inverse-functional (each seen >= 2 times, never twice), and all relations."""
        if view.functional is not None:
            return view.functional
        objects: dict[tuple[str, str], set[str]] = {}
        subjects: dict[tuple[str, str], set[str]] = {}
        for edges in self._relations(view).values():
            for u, v, key in edges:
                objects.setdefault((key, u), set()).add(v)
                subjects.setdefault((key, v), set()).add(u)
        many_objects = {key for (key, _), vs in objects.items() if len(vs) > 1}
        many_subjects = {key for (key, _), us in subjects.items() if len(us) > 1}
        relations = {key for key, _ in objects}
        seen_subjects = Counter(key for key, _ in objects)
        seen_objects = Counter(key for key, _ in subjects)
        view.functional = (
            {r for r in relations - many_objects if seen_subjects[r] >= 2},
            {r for r in relations - many_subjects if seen_objects[r] >= 2},
            relations,
        )
        return view.functional

    def _relation_name(self, relation: str, view: GraphView) -> str:
        name = _RELATION_CHARS.sub("_", relation.casefold().replace(" ", "_")).strip("_")
        if name in self._functionality(view)[2]:
            return name
        self.warm_up()
        lemmas = [t.lemma_ for t in self._nlp(name.replace("_", " "))]
        return _RELATION_CHARS.sub("_", "_".join(lemmas).casefold()).strip("_") or name

    def _fact(self, view: GraphView, edge: tuple[str, str, str], cited: list[str]) -> Fact:
        g = view.kg.graph
        data = g.edges[edge]
        # Fail closed: the view already trimmed provenance; drop anything not in it anyway.
        readable = [c for c in data["chunk_ids"] if passage_node(c) in view.index]
        first = [c for c in cited if c in readable]
        chunk_ids = tuple(dict.fromkeys([*first, *sorted(readable)]))
        doc_ids = tuple(sorted({g.nodes[passage_node(c)]["doc_id"] for c in chunk_ids}))
        u, v, key = edge
        return Fact(
            subject=g.nodes[u]["name"],
            relation=key,
            object=g.nodes[v]["name"],
            confidence=float(data["confidence"]),
            chunk_ids=chunk_ids,
            doc_ids=doc_ids,
        )


def _shortest_paths(
    source: str, targets: set[str], neighbours: dict[str, list[str]], max_hops: int
) -> Iterable[list[str]]:
    """One BFS shortest path (<= max_hops edges) from `source` to each reachable target."""
    parent: dict[str, str | None] = {source: None}
    depth = {source: 0}
    queue = deque([source])
    while queue:
        node = queue.popleft()
        if depth[node] >= max_hops:
            continue
        for nxt in sorted(neighbours.get(node, ())):
            if nxt not in parent:
                parent[nxt], depth[nxt] = node, depth[node] + 1
                queue.append(nxt)
    for target in sorted(targets):
        if target == source or target not in parent:
            continue
        path, node = [], target
        while node is not None:
            path.append(node)
            node = parent[node]
        yield path[::-1]


def _agent_verbs(noun: str) -> list[str]:
    """The verbs an agent noun may come from: "maker" -> make, "employer" -> employ,
    "investor" -> invest; none for other nouns."""
    if len(noun) > 4 and noun.endswith("er"):
        return [noun[:-1], noun[:-2]]
    if len(noun) > 4 and noun.endswith("or"):
        return [noun[:-2]]
    return []


def _siblings(
    first: tuple[str, str, str], bridge: str, second: tuple[str, str, str], at: str
) -> bool:
    """Whether `second` (at the bridge's node or alias `at`) repeats `first`'s relation with
    the bridge in the same role, so it leads to a sibling, not onward: "Board approve
    fenmodex" then "Board approve tolnedex" (a chain has the bridge change role: "A parent_of
    B", "B parent_of C")."""
    return first[2] == second[2] and (first[0] == bridge) == (second[0] == at)


def _best_edges(edges: list[tuple[str, str, str]]) -> list[tuple[str, str, str]]:
    """A pair's verb relations, or its co-occurrence when no verb links the pair."""
    verbs = [e for e in edges if e[2] != COOCCURS]
    return verbs or edges
