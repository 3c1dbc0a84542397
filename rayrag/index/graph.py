"""The knowledge graph: entities, passages, relations and synonyms, with provenance.

Follows HippoRAG's offline index (Gutiérrez et al. 2024): entity nodes linked by extracted
relation edges, passage nodes linked to the entities they mention, and synonym edges
between entity names whose embeddings are close (cosine >= `KGConfig.synonym_threshold`,
HippoRAG's 0.8), so personalized PageRank seeded at query entities spreads to passages.

Shape: a `networkx.MultiDiGraph` keyed by relation. Between two entities a verb link
("acquire") and a co-occurrence are different facts with different provenance, so they stay
separate edges rather than one DiGraph edge with merged attributes; the edge key *is* the
relation, so the same (subject, relation, object) seen in several chunks is one edge whose
provenance is merged. `co_occurs` is symmetric and stored once, subject < object. Synonym
edges are directed k-nearest-neighbour edges (u -> v: v is one of u's closest names).

Provenance: every edge and entity node keeps `support` {chunk_id: confidence}, the source
of truth, and the derived `chunk_ids`, `doc_ids`, `acl` (union over the supporting chunks),
`confidence` and `extracted_at`. Confidence is the *max* over chunks, not a noisy-or:
overlapping chunks repeat the same sentence, and noisy-or would count it as independent
evidence. Passage nodes keep their chunk's extraction (the "ledger"), so documents can be
removed exactly and aliases re-resolved without re-running NER.

Aliases: keys equal after normalisation share a node; trailing legal forms are dropped
("Velora Systems Inc" = "Velora Systems"); an upper-case acronym seen in the corpus joins
the one multi-word name whose initials it spells ("IBM" = "International Business
Machines"). Node ids are a pure function of the corpus, so removing and re-adding a
document gives the graph a from-scratch build would.

    >>> kg = KnowledgeGraph.build(extractions, config=KGConfig(), embed_fn=embedder.encode)
    >>> kg.stats()["entities"], kg.subgraph_for(Principal("ann")).stats()["passages"]
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import networkx as nx
import numpy as np

from rayrag.atomic import atomic_text
from rayrag.config import KGConfig
from rayrag.errors import BundleError, DataError
from rayrag.index.kg_extract import COOCCURS, ChunkExtraction, entity_key, is_pseudonym_key
from rayrag.types import Principal, Triple

FORMAT_VERSION = 1
MENTIONS = "mentions"
SYNONYM = "synonym"
# Edges that are not facts a question can ask about (HippoRAG's structural edges).
NON_FACT_RELATIONS = frozenset({"co_occurs", MENTIONS, SYNONYM})
EmbedFn = Callable[[list[str]], np.ndarray]

# Only unambiguous legal forms: "Company" or "Group" also end ordinary names
# ("The Walt Disney Company" must not become the person "Walt Disney").
_LEGAL_SUFFIXES = frozenset(
    {
        "inc",
        "incorporated",
        "corp",
        "corporation",
        "co",
        "ltd",
        "limited",
        "llc",
        "llp",
        "plc",
        "gmbh",
        "ag",
        "nv",
        "bv",
        "sa",
        "pty",
    }
)
_ACRONYM_FILLERS = frozenset({"of", "the", "and", "for", "&", "de", "in", "on", "at", "to"})
_SYNONYM_BLOCK = 512  # rows per matrix-product block: 512 x 50k float32 = 100 MB peak


def entity_node(key: str) -> str:
    return f"entity:{key}"


def passage_node(chunk_id: str) -> str:
    return f"passage:{chunk_id}"


def base_key(key: str) -> str:
    """Drop trailing legal forms: "velora systems inc" -> "velora systems"."""
    words = key.split()
    while len(words) > 1 and (
        words[-1] in _LEGAL_SUFFIXES or not any(c.isalnum() for c in words[-1])
    ):
        words.pop()
    return " ".join(words)


def _initials(key: str) -> set[str]:
    words = [w for w in key.split() if any(c.isalpha() for c in w)]
    if len(words) < 2:
        return set()
    content = [w for w in words if w not in _ACRONYM_FILLERS]
    return {"".join(w[0] for w in words), "".join(w[0] for w in content)} - {""}


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class KnowledgeGraph:
    """A HippoRAG-style entity/passage graph with per-edge provenance and ACLs.

    `graph` is the underlying `networkx.MultiDiGraph`; treat it as read-only and change it
    through `add` and `remove_documents`, which keep provenance consistent.
    """

    def __init__(
        self, config: KGConfig | None = None, graph: nx.MultiDiGraph | None = None
    ) -> None:
        self.config = config or KGConfig()
        if graph is None:
            graph = nx.MultiDiGraph(
                format_version=FORMAT_VERSION,
                acronyms={},
                synonyms_stale=False,
                kg_config=self.config.model_dump(mode="json"),
            )
        self.graph = graph
        self._read_only = False
        # Entity-name vectors from the last embed_fn, so incremental updates embed only new
        # names. In memory only: after `load` the first update re-embeds every name.
        self._vectors: dict[str, np.ndarray] = {}
        self._embed_fn: EmbedFn | None = None

    # -- construction ------------------------------------------------------------------

    @classmethod
    def build(
        cls,
        extractions: Iterable[ChunkExtraction],
        *,
        config: KGConfig | None = None,
        embed_fn: EmbedFn | None = None,
        extracted_at: str | None = None,
    ) -> KnowledgeGraph:
        kg = cls(config)
        kg.add(extractions, embed_fn=embed_fn, extracted_at=extracted_at)
        return kg

    def add(
        self,
        extractions: Iterable[ChunkExtraction],
        *,
        config: KGConfig | None = None,
        embed_fn: EmbedFn | None = None,
        extracted_at: str | None = None,
    ) -> None:
        """Add chunks (a chunk id already present is replaced). Synonyms need `embed_fn`."""
        self._check_writable()
        if config is not None and config != self.config:
            # A new threshold or fan-out invalidates every synonym edge.
            self.config = config
            self.graph.graph["kg_config"] = config.model_dump(mode="json")
            self.graph.graph["synonyms_stale"] = True
        latest = {ex.chunk_id: ex for ex in extractions}
        replaced = {cid for cid in latest if passage_node(cid) in self.graph}
        self._update(replaced, list(latest.values()), embed_fn, extracted_at or _now())

    def remove_documents(
        self, doc_ids: set[str] | Iterable[str], *, embed_fn: EmbedFn | None = None
    ) -> int:
        """Drop every chunk of `doc_ids` and the provenance it gave; returns edges deleted.

        Entities and edges left without supporting chunks go too. Synonym neighbours freed
        by a deleted entity are refilled from cached vectors or `embed_fn`; failing both,
        they are marked stale and recomputed by the next `add` given an `embed_fn`.
        """
        self._check_writable()
        doc_ids = set(doc_ids)
        chunk_ids = {d["chunk_id"] for _, d in self._nodes("passage") if d["doc_id"] in doc_ids}
        before = set(self.graph.edges(keys=True))
        self._update(chunk_ids, [], embed_fn, _now())
        return len(before - set(self.graph.edges(keys=True)))

    # -- persistence -------------------------------------------------------------------

    def save(self, path: str | Path) -> None:
        """Write node-link JSON atomically: a reader sees the old file or the new, never half."""
        path = Path(path)
        data = nx.node_link_data(self.graph, edges="edges")
        with atomic_text(path) as fh:
            json.dump(data, fh, ensure_ascii=False, separators=(",", ":"))

    @classmethod
    def load(cls, path: str | Path) -> KnowledgeGraph:
        path = Path(path)
        if not path.is_file():
            raise BundleError(f"knowledge graph not found: {path}")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            graph = nx.node_link_graph(data, directed=True, multigraph=True, edges="edges")
            version = graph.graph.get("format_version")
            config = KGConfig.model_validate(graph.graph.get("kg_config", {}))
        except (
            OSError,
            UnicodeDecodeError,
            ValueError,
            KeyError,
            TypeError,
            AttributeError,
        ) as exc:
            raise BundleError(
                f"knowledge graph is corrupt: {path} ({type(exc).__name__})"
            ) from None
        if version != FORMAT_VERSION or not isinstance(graph, nx.MultiDiGraph):
            raise BundleError(f"knowledge graph format {version!r} is not {FORMAT_VERSION}: {path}")
        if not isinstance(graph.graph.get("acronyms"), dict) or any(
            "kind" not in data for _, data in graph.nodes(data=True)
        ):
            raise BundleError(f"knowledge graph is corrupt: {path} (missing attributes)")
        return cls(config, graph)

    # -- reading -----------------------------------------------------------------------

    def stats(self) -> dict[str, int]:
        kinds = Counter(d.get("kind") for _, d in self.graph.nodes(data=True))
        rels = Counter(k for _, _, k in self.graph.edges(keys=True))
        return {
            "entities": kinds["entity"],
            "passages": kinds["passage"],
            "relation_edges": sum(rels.values()) - rels[MENTIONS] - rels[SYNONYM],
            "synonym_edges": rels[SYNONYM],
            "mention_edges": rels[MENTIONS],
        }

    def entity_node_for(self, name: str) -> str | None:
        """The node a name (or alias, or acronym) resolves to, if the graph has it."""
        node = entity_node(self._canon(entity_key(name)))
        return node if node in self.graph else None

    def subgraph_for(self, principal: Principal) -> KnowledgeGraph:
        """What `principal` may see: passages it can read and only what they support.

        Entity names, aliases and labels are recounted from the readable passages, so a
        surface form seen only in a hidden document does not leak through an alias.
        """
        g = self.graph
        view = nx.MultiDiGraph(
            format_version=FORMAT_VERSION,
            acronyms={},
            synonyms_stale=False,
            kg_config=g.graph.get("kg_config"),
            view_for=principal.name,
        )
        readable = {}
        for node, data in self._nodes("passage"):
            if principal.may_read(data["acl"]):
                readable[data["chunk_id"]] = data
                view.add_node(node, **data)
        for ex in (self._ledger(cid) for cid in readable):
            for key, label, surface in _unique(ex.entities):
                node = entity_node(self._canon(key))
                if node not in view:
                    view.add_node(node, **_new_entity())
                _count_mention(view.nodes[node], ex.chunk_id, key, label, surface, +1)
        for _, data in view.nodes(data=True):
            if data["kind"] == "entity":
                _derive_entity(data, view)
        for u, v, key, data in g.edges(keys=True, data=True):
            if u not in view or v not in view:
                continue
            if key == SYNONYM:
                view.add_edge(u, v, key=key, **dict(data))
                continue
            support = {c: s for c, s in data["support"].items() if c in readable}
            if support:
                view.add_edge(u, v, key=key, **{**data, "support": support})
                _derive_edge(view.edges[u, v, key], view)
        for u, v, _ in [e for e in view.edges(keys=True) if e[2] == SYNONYM]:
            _derive_synonym(view, u, v)
        # Keep only acronyms both of whose names are visible: a long form seen only in
        # hidden documents is itself hidden content.
        visible = {
            base_key(key)
            for _, d in view.nodes(data=True)
            if d["kind"] == "entity"
            for key in d["alias_keys"]
        }
        view.graph["acronyms"] = {
            s: long for s, long in g.graph["acronyms"].items() if s in visible and long in visible
        }
        kg = KnowledgeGraph(self.config, view)
        kg._read_only = True
        return kg

    def personalized_pagerank(
        self, seeds: dict[str, float], principal: Principal
    ) -> dict[str, float]:
        """PPR over the principal's subgraph, HippoRAG's retrieval step (damping 0.5).

        `seeds` maps node ids to weights; unknown or hidden seeds are ignored. Edges are
        walked both ways with weight = summed confidence, as HippoRAG walks an undirected
        graph. Returns {} when no seed is visible.
        """
        view = self.subgraph_for(principal).graph
        personalization = {n: float(w) for n, w in seeds.items() if n in view and w > 0}
        if not personalization:
            return {}
        walk = nx.Graph()
        walk.add_nodes_from(view.nodes)
        for u, v, data in view.edges(data=True):
            if u == v:
                continue
            prior = walk.get_edge_data(u, v, {}).get("weight", 0.0)
            walk.add_edge(u, v, weight=prior + float(data.get("confidence", 1.0)))
        return nx.pagerank(
            walk, alpha=self.config.ppr_damping, personalization=personalization, weight="weight"
        )

    # -- the one mutation path ---------------------------------------------------------

    def _update(
        self,
        drop_chunks: set[str],
        new: list[ChunkExtraction],
        embed_fn: EmbedFn | None,
        extracted_at: str,
    ) -> None:
        g = self.graph
        keys_before = self._synonym_keys()
        neighbours_before = self._synonym_neighbours()
        touched_nodes: set[str] = set()
        touched_edges: set[tuple[str, str, str]] = set()
        for cid in sorted(drop_chunks):
            self._subtract(cid, touched_nodes, touched_edges)
        for ex in new:
            self._contribute(ex, extracted_at, touched_nodes, touched_edges)
        self._reresolve_acronyms(touched_nodes, touched_edges)
        # Entity nodes are deleted only now, so one emptied and refilled within this update
        # (an acronym re-resolved) keeps its synonym edges.
        for node in sorted(touched_nodes):
            if node in g and not g.nodes[node]["support"]:
                g.remove_node(node)
        for node in touched_nodes:
            if node in g:
                _derive_entity(g.nodes[node], g)
        for u, v, key in touched_edges:
            if g.has_edge(u, v, key):
                _derive_edge(g.edges[u, v, key], g)
        synonyms = self._maintain_synonyms(keys_before, neighbours_before, embed_fn, extracted_at)
        for node in touched_nodes:
            if node in g:
                synonyms.update(
                    (u, v) for u, v, key in g.in_edges(node, keys=True) if key == SYNONYM
                )
                synonyms.update(
                    (u, v) for u, v, key in g.out_edges(node, keys=True) if key == SYNONYM
                )
        for u, v in synonyms:
            _derive_synonym(g, u, v)

    def _contribute(
        self,
        ex: ChunkExtraction,
        extracted_at: str,
        touched_nodes: set[str],
        touched_edges: set[tuple[str, str, str]],
    ) -> None:
        g = self.graph
        entities = _unique(ex.entities)
        known = {key for key, _, _ in entities}
        for t in ex.triples:
            if t.subject not in known or t.object not in known:
                raise DataError(
                    f"triple endpoint is not among the chunk's entities (chunk {ex.chunk_id})"
                )
        pnode = passage_node(ex.chunk_id)
        g.add_node(
            pnode,
            kind="passage",
            chunk_id=ex.chunk_id,
            doc_id=ex.doc_id,
            acl=sorted(set(ex.acl)),
            extracted_at=extracted_at,
            entities=[list(e) for e in entities],
            triples=[[t.subject, t.relation, t.object, float(t.confidence)] for t in ex.triples],
        )
        for key, label, surface in entities:
            node = entity_node(self._canon(key))
            if node not in g:
                g.add_node(node, **_new_entity())
            _count_mention(g.nodes[node], ex.chunk_id, key, label, surface, +1)
            touched_nodes.add(node)
            self._support(pnode, node, MENTIONS, ex.chunk_id, 1.0, extracted_at, touched_edges)
        for t in ex.triples:
            ends = self._endpoints(t.subject, t.relation, t.object)
            if ends is not None:
                self._support(
                    *ends, t.relation, ex.chunk_id, float(t.confidence), extracted_at, touched_edges
                )

    def _subtract(
        self, chunk_id: str, touched_nodes: set[str], touched_edges: set[tuple[str, str, str]]
    ) -> None:
        g = self.graph
        pnode = passage_node(chunk_id)
        if pnode not in g:
            return
        ledger = g.nodes[pnode]
        for key, label, surface in ledger["entities"]:
            node = entity_node(self._canon(key))
            _count_mention(g.nodes[node], chunk_id, key, label, surface, -1)
            touched_nodes.add(node)
        for subject, relation, obj, _ in ledger["triples"]:
            ends = self._endpoints(subject, relation, obj)
            if ends is not None and g.has_edge(*ends, relation):
                support = g.edges[(*ends, relation)]["support"]
                support.pop(chunk_id, None)
                touched_edges.add((*ends, relation))
                if not support:
                    g.remove_edge(*ends, relation)
        g.remove_node(pnode)  # and its mention edges

    def _support(
        self,
        u: str,
        v: str,
        relation: str,
        chunk_id: str,
        confidence: float,
        extracted_at: str,
        touched_edges: set[tuple[str, str, str]],
    ) -> None:
        g = self.graph
        if not g.has_edge(u, v, relation):
            g.add_edge(u, v, key=relation, relation=relation, support={}, extracted_at=extracted_at)
        data = g.edges[u, v, relation]
        data["support"][chunk_id] = max(confidence, data["support"].get(chunk_id, 0.0))
        data["extracted_at"] = max(data["extracted_at"], extracted_at)
        touched_edges.add((u, v, relation))

    def _endpoints(self, subject: str, relation: str, obj: str) -> tuple[str, str] | None:
        s, o = self._canon(subject), self._canon(obj)
        if s == o:
            return None  # an alias relating to itself ("Velora Systems Inc" acquires "Velora")
        if relation == COOCCURS and o < s:
            s, o = o, s
        return entity_node(s), entity_node(o)

    def _canon(self, key: str) -> str:
        if is_pseudonym_key(key):
            return key
        base = base_key(key)
        return self.graph.graph["acronyms"].get(base, base)

    def _ledger(self, chunk_id: str) -> ChunkExtraction:
        d = self.graph.nodes[passage_node(chunk_id)]
        return ChunkExtraction(
            chunk_id=chunk_id,
            doc_id=d["doc_id"],
            acl=tuple(d["acl"]),
            entities=[tuple(e) for e in d["entities"]],
            triples=[Triple(s, r, o, chunk_id, d["doc_id"], c) for s, r, o, c in d["triples"]],
        )

    # -- aliases -----------------------------------------------------------------------

    def _acronym_map(self) -> dict[str, str]:
        """short base key -> long base key, from every name the corpus holds now."""
        shorts: set[str] = set()
        longs: dict[str, set[str]] = {}
        for _, data in self._nodes("entity"):
            for key, surfaces in data["forms"].items():
                if is_pseudonym_key(key):
                    continue
                base = base_key(key)
                if 2 <= len(base) <= 6 and base.isalpha() and any(s.isupper() for s in surfaces):
                    shorts.add(base)
                # "British Broadcasting Corporation" spells BBC with its legal form.
                spelled = _initials(base) | (_initials(key) if " " in base else set())
                for initials in spelled:
                    longs.setdefault(initials, set()).add(base)
        return {
            s: next(iter(longs[s]))
            for s in sorted(shorts)
            if len(longs.get(s, ())) == 1 and s not in longs[s]
        }

    def _reresolve_acronyms(
        self, touched_nodes: set[str], touched_edges: set[tuple[str, str, str]]
    ) -> None:
        """Re-home the chunks of every acronym whose long form appeared or went away."""
        old = self.graph.graph["acronyms"]
        new = self._acronym_map()
        if new == old:
            return
        changed = {s for s in old.keys() | new.keys() if old.get(s) != new.get(s)}
        chunk_ids: set[str] = set()
        for short in changed:
            node = entity_node(old.get(short, short))
            if node in self.graph:
                chunk_ids.update(self.graph.nodes[node]["support"])
        ledgers = [
            (self._ledger(c), self.graph.nodes[passage_node(c)]["extracted_at"])
            for c in sorted(chunk_ids)
        ]
        for ex, _ in ledgers:
            self._subtract(ex.chunk_id, touched_nodes, touched_edges)
        self.graph.graph["acronyms"] = new
        for ex, at in ledgers:
            self._contribute(ex, at, touched_nodes, touched_edges)

    # -- synonyms ----------------------------------------------------------------------

    def _synonym_keys(self) -> set[str]:
        # Pseudonyms are exact join keys: two HMAC tokens that embed alike are not synonyms.
        return {
            n.removeprefix("entity:")
            for n, _ in self._nodes("entity")
            if not is_pseudonym_key(n.removeprefix("entity:"))
        }

    def _synonym_neighbours(self) -> dict[str, set[str]]:
        out: dict[str, set[str]] = {}
        for u, v, key in self.graph.edges(keys=True):
            if key == SYNONYM:
                out.setdefault(u.removeprefix("entity:"), set()).add(v.removeprefix("entity:"))
        return out

    def _maintain_synonyms(
        self,
        keys_before: set[str],
        neighbours_before: dict[str, set[str]],
        embed_fn: EmbedFn | None,
        extracted_at: str,
    ) -> set[tuple[str, str]]:
        """Recompute the k-NN rows that can have changed; all rows when marked stale.

        A row u changes only if u is new, a new name is within the threshold of u, or u
        lost a neighbour while it had a full k (a freed slot may refill). Returns the
        synonym edges it added.
        """
        g = self.graph
        k = self.config.max_synonyms_per_entity
        keys = self._synonym_keys()
        added, removed = keys - keys_before, keys_before - keys
        refill = {
            u
            for u in keys - added
            if len(neighbours_before.get(u, ())) >= k and neighbours_before[u] & removed
        }
        stale = bool(g.graph.get("synonyms_stale"))
        if k == 0:
            if stale:  # fan-out set to 0 by a new config: drop what the old one made
                g.remove_edges_from([e for e in g.edges(keys=True) if e[2] == SYNONYM])
                g.graph["synonyms_stale"] = False
            return set()
        if not (stale or added or refill):
            return set()
        if embed_fn is not None:
            self._embed(sorted(keys), embed_fn)
        elif stale or not keys <= self._vectors.keys():
            g.graph["synonyms_stale"] = True
            return set()
        order = sorted(keys)
        index = {key: i for i, key in enumerate(order)}
        matrix = (
            np.stack([self._vectors[key] for key in order])
            if order
            else np.zeros((0, 1), np.float32)
        )
        if stale or 2 * len(added) >= len(order):
            rows = set(order)
        else:
            rows = added | refill
            new_ids = [index[a] for a in sorted(added)]
            for start in range(0, len(new_ids), _SYNONYM_BLOCK):
                sims = np.round(matrix @ matrix[new_ids[start : start + _SYNONYM_BLOCK]].T, 5)
                # A hair below the threshold: recomputing a spare row is harmless, missing one is
                # not.
                near = (sims >= self.config.synonym_threshold - 1e-4).any(axis=1)  # (entities,)
                rows |= {order[i] for i in np.flatnonzero(near)}
        g.graph["synonyms_stale"] = False
        return self._recompute_synonym_rows(sorted(rows), order, index, matrix, extracted_at)

    def _recompute_synonym_rows(
        self,
        rows: list[str],
        order: list[str],
        index: dict[str, int],
        matrix: np.ndarray,
        extracted_at: str,
    ) -> set[tuple[str, str]]:
        g, k, threshold = (
            self.graph,
            self.config.max_synonyms_per_entity,
            self.config.synonym_threshold,
        )
        added: set[tuple[str, str]] = set()
        for u in rows:
            node = entity_node(u)
            g.remove_edges_from(
                [(node, v, key) for _, v, key in g.out_edges(node, keys=True) if key == SYNONYM]
            )
        for start in range(0, len(rows), _SYNONYM_BLOCK):
            block = rows[start : start + _SYNONYM_BLOCK]
            ids = np.array([index[u] for u in block])
            # Rounded so a row computed alone and in a full rebuild agree to the last bit.
            sims = np.round(matrix[ids] @ matrix.T, 5)  # (block, entities)
            sims[np.arange(len(block)), ids] = -np.inf
            for row, u in enumerate(block):
                cand = np.flatnonzero(sims[row] >= threshold)
                cand = cand[np.lexsort((cand, -sims[row, cand]))][:k]  # best first, ties by name
                for j in cand:
                    g.add_edge(
                        entity_node(u),
                        entity_node(order[j]),
                        key=SYNONYM,
                        relation=SYNONYM,
                        confidence=float(sims[row, j]),
                        extracted_at=extracted_at,
                    )
                    added.add((entity_node(u), entity_node(order[j])))
        return added

    def _embed(self, keys: list[str], embed_fn: EmbedFn) -> None:
        # `==`, not `is`: `embedder.encode` makes a new (but equal) bound method each time.
        if embed_fn != self._embed_fn:
            self._vectors, self._embed_fn = {}, embed_fn
        wanted = set(keys)
        self._vectors = {key: vec for key, vec in self._vectors.items() if key in wanted}
        missing = [key for key in keys if key not in self._vectors]
        if not missing:
            return
        vectors = np.asarray(embed_fn(missing), dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[0] != len(missing) or not np.isfinite(vectors).all():
            raise DataError(
                f"embed_fn must return {len(missing)} finite rows, got shape {vectors.shape}"
            )
        # Re-normalised defensively: a cosine above 1 would pass any threshold.
        vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        self._vectors.update(zip(missing, vectors, strict=True))

    # -- helpers -----------------------------------------------------------------------

    def _nodes(self, kind: str) -> list[tuple[str, dict[str, Any]]]:
        return [(n, d) for n, d in self.graph.nodes(data=True) if d.get("kind") == kind]

    def _check_writable(self) -> None:
        if self._read_only:
            raise DataError("a principal's subgraph is a read-only view; change the full graph")


def _unique(entities: Iterable[tuple[str, str, str] | list[str]]) -> list[tuple[str, str, str]]:
    return list(dict.fromkeys(tuple(e) for e in entities))  # type: ignore[misc]


def _new_entity() -> dict[str, Any]:
    return {"kind": "entity", "forms": {}, "labels": {}, "support": {}}


def _count_mention(
    data: dict[str, Any], chunk_id: str, key: str, label: str, surface: str, step: int
) -> None:
    """Add (+1) or take back (-1) one chunk's mention; counts at zero are dropped."""
    forms = data["forms"].setdefault(key, {})
    _bump(forms, surface, step)
    if not forms:
        del data["forms"][key]
    _bump(data["labels"], label, step)
    _bump(data["support"], chunk_id, step)


def _bump(counts: dict[str, Any], key: str, step: int) -> None:
    value = counts.get(key, 0) + step
    if value > 0:
        counts[key] = value
    else:
        counts.pop(key, None)


def _provenance(chunk_ids: Iterable[str], g: nx.MultiDiGraph) -> dict[str, list[str]]:
    chunk_ids = sorted(set(chunk_ids))
    passages = [g.nodes[passage_node(c)] for c in chunk_ids]
    return {
        "chunk_ids": chunk_ids,
        "doc_ids": sorted({p["doc_id"] for p in passages}),
        "acl": sorted({group for p in passages for group in p["acl"]}),
    }


def _derive_entity(data: dict[str, Any], g: nx.MultiDiGraph) -> None:
    surfaces: Counter[str] = Counter()
    for forms in data["forms"].values():
        surfaces.update(forms)
    # Most frequent surface; ties go to the longer, then alphabetically first, form.
    ranked = sorted(surfaces, key=lambda s: (-surfaces[s], -len(s), s))
    labels = sorted(data["labels"], key=lambda lb: (-data["labels"][lb], lb))
    data["name"] = ranked[0] if ranked else ""
    data["aliases"] = sorted(ranked[1:])
    data["alias_keys"] = sorted(data["forms"])
    data["label"] = labels[0] if labels else ""
    data.update(_provenance(data["support"], g))


def _derive_edge(data: dict[str, Any], g: nx.MultiDiGraph) -> None:
    data["confidence"] = max(data["support"].values())
    data.update(_provenance(data["support"], g))


def _derive_synonym(g: nx.MultiDiGraph, u: str, v: str) -> None:
    """A synonym edge rests on both names existing: its provenance is their union."""
    data = g.edges[u, v, SYNONYM]
    data.update(_provenance([*g.nodes[u]["chunk_ids"], *g.nodes[v]["chunk_ids"]], g))
