"""Token-aware, sentence-preferring chunking of documents into `Chunk`s.

Chunk sizes are counted in the embedder's own tokens (all-MiniLM-L6-v2's WordPiece, special
[CLS]/[SEP] excluded), so a chunk never silently loses its tail to the model's truncation.
The packing follows LlamaIndex's `SentenceSplitter`: split into sentences, pack whole
sentences greedily up to `chunk_size`, start the next chunk with the trailing sentences
worth at most `chunk_overlap` tokens; a sentence longer than `chunk_size` is cut at token
(preferably word) boundaries with a `chunk_overlap`-token stride.

Each document is tokenized once (`chunk_documents` tokenizes a whole batch in one call to
the Rust tokenizer); the tokenizer's offset mapping gives exact character offsets, so
`doc.text[chunk.start:chunk.end] == chunk.text` always holds.

    >>> chunker = Chunker(ChunkingConfig(chunk_size=128, chunk_overlap=16))
    >>> chunks = chunker(Document(id="d1", text="Alice met Bob. They talked."))
    >>> chunks[0].chunk_id, chunks[0].text
    ('d1#0', 'Alice met Bob. They talked.')
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterable, Sequence
from typing import Any

from rayrag.config import ChunkingConfig, EmbeddingConfig
from rayrag.errors import ConfigError
from rayrag.types import Chunk, Document

# Lower-cased words that end with a period without ending the sentence. Deliberately short
# and conservative: a missed split only makes a chunk boundary less tidy, a wrong split
# inside "Dr. Smith" separates a name from its title.
_ABBREVIATIONS = frozenset(
    """
    mr mrs ms dr prof sr jr st mt ft rev hon gov sen rep gen col lt sgt capt cmdr adm maj pres
    inc ltd co corp llc plc bros dept univ assn est approx vs cf al fig figs eq vol vols no nos
    pp ch sec art ed eds op jan feb mar apr jun jul aug sep sept oct nov dec mon tue wed thu fri
    sat sun ave blvd rd hwy
    """.split()
)

# A sentence ends at . ! ? (a run of them), optionally followed by closing quotes or
# brackets, then whitespace, then something that can start a sentence (an upper-case
# letter, a digit, or an opening quote/bracket). Requiring the capital keeps "e.g. the"
# and "3.5 million" together without a model.
_SENTENCE_END = re.compile(
    r"""[.!?]+["'\u201d\u2019)\]]*\s+(?=["'\u201c\u2018(\[]?[A-Z0-9\u00c0-\u00de])"""
)
# A blank line (paragraph, heading, list break) always ends a sentence.
_PARAGRAPH_BREAK = re.compile(r"\n[ \t\r\f\v]*\n\s*")
_WORD_BEFORE = re.compile(r"([A-Za-z.]+)$")


def sentence_starts(text: str) -> list[int]:
    """Character offsets where a sentence after the first begins (sorted, no 0).

    A regex splitter, robust rather than clever: abbreviations ("Dr.", "Inc."), initials
    ("J. R. R. Tolkien") and dotted acronyms ("U.S.") do not split; a lower-case start
    never does.
    """
    starts: set[int] = set()
    for match in _SENTENCE_END.finditer(text):
        if match.group(0)[0] == "." and _is_abbreviation(text, match.start()):
            continue
        starts.add(match.end())
    starts.update(match.end() for match in _PARAGRAPH_BREAK.finditer(text))
    return sorted(s for s in starts if 0 < s < len(text))


def _is_abbreviation(text: str, period_at: int) -> bool:
    word_match = _WORD_BEFORE.search(text, max(0, period_at - 20), period_at)
    if word_match is None:
        return False
    word = word_match.group(1)
    if "." in word:  # "U.S", "e.g", "Ph.D": dotted forms are abbreviations
        return True
    if len(word) == 1 and word.isupper():  # an initial: "J. Smith"
        return True
    return word.lower() in _ABBREVIATIONS


class Chunker:
    """Splits documents into token-bounded chunks with stable ids `"{doc.id}#{i}"`.

    `tokenizer` is any HF fast tokenizer (offset mappings need the Rust one); by default
    the tokenizer of the embedder `embedding` names (the packaged MiniLM by default) is loaded
    on `warm_up()`, so chunks are counted in the units that model reads. Pass
    `Embedder.tokenizer` to share the already-loaded one.
    """

    def __init__(
        self,
        config: ChunkingConfig | None = None,
        tokenizer: Any = None,
        embedding: EmbeddingConfig | None = None,
    ) -> None:
        self.config = config or ChunkingConfig()
        self._tokenizer = tokenizer
        self._embedding = embedding
        if tokenizer is not None:
            self._check_tokenizer(tokenizer)

    def warm_up(self) -> None:
        if self._tokenizer is None:
            from rayrag.index.embedder import load_tokenizer

            tokenizer = load_tokenizer(self._embedding)
            self._check_tokenizer(tokenizer)
            self._tokenizer = tokenizer

    @staticmethod
    def _check_tokenizer(tokenizer: Any) -> None:
        if not getattr(tokenizer, "is_fast", False):
            raise ConfigError(
                "the chunker needs a fast (Rust) tokenizer for "
                f"character offsets, got {type(tokenizer).__name__}"
            )

    @property
    def tokenizer(self) -> Any:
        self.warm_up()
        return self._tokenizer

    def count_tokens(self, text: str) -> int:
        """Tokens of `text` without [CLS]/[SEP], as the chunk budget counts them."""
        return len(self.tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])

    def __call__(self, doc: Document) -> list[Chunk]:
        return self.chunk_documents([doc])

    def chunk_documents(self, docs: Iterable[Document], batch_size: int = 256) -> list[Chunk]:
        """Chunk many documents, tokenizing `batch_size` of them per tokenizer call."""
        chunks: list[Chunk] = []
        batch: list[Document] = []
        for doc in docs:
            batch.append(doc)
            if len(batch) >= batch_size:
                chunks.extend(self._chunk_batch(batch))
                batch = []
        if batch:
            chunks.extend(self._chunk_batch(batch))
        return chunks

    def _chunk_batch(self, docs: Sequence[Document]) -> list[Chunk]:
        live = [doc for doc in docs if doc.text.strip()]
        if not live:
            return []
        encoded = self.tokenizer(
            [doc.text for doc in live],
            add_special_tokens=False,
            return_offsets_mapping=True,
            return_attention_mask=False,
            return_token_type_ids=False,
            truncation=False,
            verbose=False,  # silences "longer than model_max_length": we never feed it whole
        )
        chunks: list[Chunk] = []
        for doc, offsets in zip(live, encoded["offset_mapping"], strict=True):
            chunks.extend(self._chunk_one(doc, offsets))
        return chunks

    def _chunk_one(self, doc: Document, offsets: list[tuple[int, int]]) -> list[Chunk]:
        spans = self.token_spans(doc.text, offsets)
        return [
            Chunk(
                chunk_id=f"{doc.id}#{i}",
                doc_id=doc.id,
                text=doc.text[offsets[a][0] : offsets[b - 1][1]],
                start=offsets[a][0],
                end=offsets[b - 1][1],
                acl=tuple(doc.acl),
                title=doc.title,
                metadata=dict(doc.metadata),
            )
            for i, (a, b) in enumerate(spans)
        ]

    def token_spans(self, text: str, offsets: list[tuple[int, int]]) -> list[tuple[int, int]]:
        """Token ranges [a, b) of the chunks of `text`, given its token offset mapping."""
        n = len(offsets)
        if n == 0:
            return []
        size, overlap = self.config.chunk_size, self.config.chunk_overlap
        token_starts = [start for start, _ in offsets]
        # Token index where each sentence after the first begins; a sorted set of cut points.
        bounds: list[int] = []
        if self.config.respect_sentences:
            for char_pos in sentence_starts(text):
                t = bisect.bisect_left(token_starts, char_pos)
                if 0 < t < n and (not bounds or bounds[-1] != t):
                    bounds.append(t)

        def word_start_at_or_before(i: int, floor: int) -> int:
            # A token is a word start when whitespace precedes it; cutting there keeps
            # "##"-pieces with their word, so the chunk re-tokenizes to the same count.
            for j in range(i, floor, -1):
                if offsets[j][0] > offsets[j - 1][1]:
                    return j
            return i

        def cut(a: int) -> tuple[int, bool]:
            """End of the chunk starting at a, and whether it is a sentence boundary."""
            limit = a + size
            if limit >= n:
                return n, True
            idx = bisect.bisect_right(bounds, limit) - 1
            if idx >= 0 and bounds[idx] > a:
                return bounds[idx], True
            # No boundary fits: the sentence at a is longer than the chunk.
            return word_start_at_or_before(limit, a + max(1, size // 2)), False

        spans: list[tuple[int, int]] = []
        a = 0
        while True:
            b, at_sentence = cut(a)
            spans.append((a, b))
            if b >= n:
                return spans
            if overlap == 0:
                a = b
            elif at_sentence:
                # Carry the trailing whole sentences worth <= overlap tokens, but only if
                # the next chunk then reaches past b (else it would repeat this one).
                lo = bisect.bisect_left(bounds, max(b - overlap, a + 1))
                hi = bisect.bisect_left(bounds, b)
                a = next((s for s in bounds[lo:hi] if cut(s)[0] > b), b)
            else:
                # Inside a long sentence: slide by size - overlap tokens.
                a = word_start_at_or_before(max(b - overlap, a + 1), a + 1)
