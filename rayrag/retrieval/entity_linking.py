"""Entity linking: a question's mentions -> the graph entities the principal may see.

Exact matches over capitalised spans and exact lower-case names first, then spaCy entities
and noun chunks by embedding nearest neighbour (`kg.link_threshold`), as HippoRAG links
query entities to graph nodes.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from rayrag.index.graph import (
    SYNONYM,
    base_key,
)
from rayrag.index.kg_extract import (
    PSEUDONYM_RE,
    display_name,
    entity_key,
    is_pseudonym_key,
)
from rayrag.retrieval.graph_view import MAX_CACHED_QUESTIONS, GraphView, unit_rows

MAX_SPAN_TOKENS = 6  # longest alias the exact span scan tries ("Bank of the Republic of X")
_NON_ENTITY_LABELS = frozenset(
    {"DATE", "TIME", "PERCENT", "MONEY", "QUANTITY", "ORDINAL", "CARDINAL"}
)


class EntityLinking:
    """Linking methods of `GraphRetriever` (a mixin: they share its caches)."""

    def _parse(self, question: str) -> Any:
        """The question's spaCy doc; the last few are cached (linking, facts and the second
        hop all read the same question)."""
        self.warm_up()
        doc = self._parsed.get(question)
        if doc is None:
            doc = self._parsed[question] = self._nlp(question)
            while len(self._parsed) > MAX_CACHED_QUESTIONS:
                self._parsed.popitem(last=False)
        return doc

    def _match(self, question: str, view: GraphView) -> dict[str, float]:
        """Entity node -> match score for the question's mentions the principal can see.

        Exact first, over every capitalised token span (NER on short questions misses
        names a span scan still finds) and every lower-case word that is an entity's name
        exactly as written ("fenmodex": coined names are lower-case, and a word like
        "apple" never matches the entity "Apple"), then spaCy entities and noun chunks that
        matched nothing exactly go to the embedding nearest neighbour (>= `link_threshold`).
        Cached per (question, view).
        """
        key = (question, id(view))
        cached = self._matches.get(key)
        if cached is not None and cached[0] is view:
            return dict(cached[1])
        scores = self._match_uncached(question, view)
        self._matches[key] = (view, scores)
        while len(self._matches) > MAX_CACHED_QUESTIONS:
            self._matches.popitem(last=False)
        return dict(scores)

    def _match_uncached(self, question: str, view: GraphView) -> dict[str, float]:
        doc = self._parse(question)
        g = view.kg.graph
        scores: dict[str, float] = {}
        for match in PSEUDONYM_RE.finditer(question):  # exact join keys, never fuzzy
            node = view.aliases.get(match.group().casefold())
            if node is not None:
                scores[node] = 1.0
        covered: set[int] = set()
        for size in range(min(MAX_SPAN_TOKENS, len(doc)), 0, -1):  # longest names first
            for start in range(len(doc) - size + 1):
                span = doc[start : start + size]
                if covered.intersection(range(start, start + size)) or not _may_name(span):
                    continue
                node = self._exact(span.text, view)
                if node is not None:
                    scores[node] = 1.0
                    covered.update(range(start, start + size))
        for token in doc:
            if token.i in covered or not token.is_lower or not token.is_alpha or token.is_stop:
                continue
            node = view.aliases.get(token.text)
            if node is not None and g.nodes[node].get("name") == token.text:
                scores[node] = 1.0
                covered.add(token.i)
        fuzzy = []
        spans = [(span, True) for span in doc.ents if span.label_ not in _NON_ENTITY_LABELS]
        for span, named in [*spans, *((chunk, False) for chunk in doc.noun_chunks)]:
            tokens = list(span)
            while tokens and (tokens[0].is_stop or tokens[0].pos_ in ("DET", "PRON", "PUNCT")):
                tokens = tokens[1:]  # "which company", "the lab" -> the name part
            if not tokens or covered.intersection(t.i for t in tokens):
                continue
            if not named and not any(t.pos_ == "PROPN" or not t.is_lower for t in tokens):
                continue  # a common-noun chunk ("the company") names no entity; skip the encode
            text = display_name(span.doc[tokens[0].i : tokens[-1].i + 1].text)
            # Identifiers ("EMP-11547", "Form 10-K") are exact join keys: every EMP-number
            # embeds close to every other, so a nearest neighbour would be a wrong record.
            if (
                len(text) >= self.config.min_entity_chars
                and any(c.isalpha() for c in text)
                and not any(c.isdigit() for c in text)
            ):
                fuzzy.append(text)
        for node, score in self._nearest(list(dict.fromkeys(fuzzy)), view).items():
            scores[node] = max(score, scores.get(node, 0.0))
        return scores

    def _exact(self, name: str, view: GraphView) -> str | None:
        key = entity_key(name)
        return view.aliases.get(key) or view.aliases.get(base_key(key)) if key else None

    def _resolve(self, name: str, view: GraphView) -> str | None:
        node = self._exact(name, view)
        if (
            node is None
            and not is_pseudonym_key(entity_key(name))
            and not any(c.isdigit() for c in name)
        ):
            found = self._nearest([display_name(name)], view)
            node = max(found, key=found.__getitem__) if found else None
        return node

    def _nearest(self, texts: list[str], view: GraphView) -> dict[str, float]:
        """Embedding nearest neighbour among the view's alias keys, above the threshold."""
        if not texts or self.embed_fn is None:
            return {}
        self._name_matrix(view)
        if not view.name_keys:
            return {}
        queries = unit_rows(np.asarray(self.embed_fn(texts), dtype=np.float32))
        sims = queries @ view.name_matrix.T  # (mentions, names)
        found: dict[str, float] = {}
        for row in sims:
            j = int(np.argmax(row))
            if row[j] >= self.config.link_threshold:
                node = view.name_nodes[j]
                found[node] = max(float(row[j]), found.get(node, 0.0))
        return found

    def _name_matrix(self, view: GraphView) -> None:
        """The view's alias embeddings (N, dim), built once; the vectors are shared by views."""
        if view.name_matrix is None:
            keys = sorted(k for k, node in view.aliases.items() if not is_pseudonym_key(k))
            self._embed(keys)
            view.name_keys, view.name_nodes = keys, [view.aliases[k] for k in keys]
            view.name_matrix = (
                np.stack([self._vectors[k] for k in keys]) if keys else np.zeros((0, 1), np.float32)
            )

    def _embed(self, keys: list[str]) -> None:
        assert self.embed_fn is not None
        missing = [k for k in keys if k not in self._vectors]
        if missing:
            vectors = unit_rows(np.asarray(self.embed_fn(missing), dtype=np.float32))
            self._vectors.update(zip(missing, vectors, strict=True))

    @staticmethod
    def _aliases_of(entity: str, view: GraphView) -> list[str]:
        """The entity and its synonyms whose name contains its name or is contained in it,
        word for word ("Device Security Act" for "Connected Device Security Act": NER cut
        a name short in one document); a synonym by embedding alone may be another
        entity altogether ("Tarrow Power" and "Hollowell Power")."""
        g = view.kg.graph
        name = f" {g.nodes[entity].get('name', '').casefold()} "
        out = [entity]
        for u, v, key in [*g.out_edges(entity, keys=True), *g.in_edges(entity, keys=True)]:
            other = v if u == entity else u
            if key != SYNONYM or other in out or other not in view.index:
                continue
            other_name = f" {g.nodes[other].get('name', '').casefold()} "
            if (
                len(other_name.split()) >= 2
                and len(name.split()) >= 2
                and (other_name in name or name in other_name)
            ):
                out.append(other)
        return out


def _may_name(span: Any) -> bool:
    """Whether a token span could be a name: starts with a capital, digit or pseudonym."""
    first = span[0]
    return (
        not first.is_punct
        and not (first.is_stop and first.is_lower)
        and (first.text[:1].isupper() or first.text[:1].isdigit())
    )
