"""The generator's tokenizer: a byte-level BPE trained on the corpus with HF `tokenizers`.

GPT-2's recipe (Radford et al. 2019): text is split by the byte-level pre-tokenizer, every
one of the 256 byte symbols is in the vocabulary from the start, and BPE merges are learned
on top, so any Unicode string encodes without `<unk>` and `decode(encode(s)) == s` exactly
(no normalizer, no added prefix space). Five special tokens sit at fixed ids 0..4; they are
reserved for structure: text that happens to contain "<sep>" is encoded as ordinary bytes,
so a passage cannot inject a separator into a prompt.

The frequency counts feed the adaptive softmax (Grave et al. 2017), which wants the
vocabulary sorted most frequent first: `token_order(texts)`.

    >>> tok = train_tokenizer(corpus_texts, vocab_size=8192)
    >>> ids = tok.encode("Who acquired Brightwater Labs?")
    >>> tok.decode(ids)
    'Who acquired Brightwater Labs?'
    >>> tok.save(checkpoint_dir)            # checkpoint_dir/tokenizer.json, atomic
    >>> tok = RayragTokenizer.load(checkpoint_dir)
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from rayrag.atomic import atomic_text
from rayrag.errors import ConfigError, DataError, ModelError

SPECIAL_TOKENS = ("<pad>", "<bos>", "<eos>", "<sep>", "<unk>")  # ids 0..4, in this order
PAD_ID, BOS_ID, EOS_ID, SEP_ID, UNK_ID = range(len(SPECIAL_TOKENS))
BYTE_ALPHABET_SIZE = 256
MIN_VOCAB_SIZE = len(SPECIAL_TOKENS) + BYTE_ALPHABET_SIZE
TOKENIZER_FILE = "tokenizer.json"


def train_tokenizer(
    texts: Iterable[str], vocab_size: int, min_frequency: int = 2
) -> RayragTokenizer:
    """Learn a byte-level BPE of at most `vocab_size` tokens (specials included) from `texts`.

    A small corpus may run out of merges before `vocab_size`; the result's `vocab_size` is
    then smaller, and it is the number the model's embedding and head must be built with.
    `min_frequency` keeps merges seen once (noise, typos) out of the vocabulary.
    """
    if vocab_size < MIN_VOCAB_SIZE:
        raise ConfigError(
            f"vocab_size must be >= {MIN_VOCAB_SIZE} ({len(SPECIAL_TOKENS)} special tokens + "
            f"{BYTE_ALPHABET_SIZE} byte symbols), got {vocab_size} (generator.vocab_size)"
        )
    if min_frequency < 0:
        raise ConfigError(f"min_frequency must be >= 0, got {min_frequency}")
    corpus = _non_empty(texts)
    try:
        first = next(corpus)
    except StopIteration:
        raise DataError(
            "cannot train a tokenizer on an empty corpus (no non-empty texts)"
        ) from None

    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(itertools.chain([first], corpus), trainer=trainer)
    return RayragTokenizer(tokenizer)


def _non_empty(texts: Iterable[str]) -> Iterator[str]:
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise DataError(f"tokenizer corpus item {i} is {type(text).__name__}, expected str")
        if text:
            yield text


class RayragTokenizer:
    """A trained byte-level BPE with rayrag's special tokens at ids 0..4.

    Construct with `train_tokenizer` or `RayragTokenizer.load`; wrapping a raw
    `tokenizers.Tokenizer` checks that its special tokens sit at the fixed ids.
    """

    pad_id = PAD_ID
    bos_id = BOS_ID
    eos_id = EOS_ID
    sep_id = SEP_ID
    unk_id = UNK_ID

    def __init__(self, tokenizer: Tokenizer) -> None:
        for expected_id, token in enumerate(SPECIAL_TOKENS):
            found = tokenizer.token_to_id(token)
            if found != expected_id:
                raise ModelError(
                    f"tokenizer has special token {token} at id {found}, expected {expected_id}"
                )
        # Specials are structure, never text: "<sep>" inside a passage encodes as bytes.
        # `tokenizers` serialises neither to JSON nor to pickle this flag, so it is set on
        # every construction: train, load, and unpickling on a Ray worker (`__setstate__`).
        tokenizer.encode_special_tokens = True
        self._tokenizer = tokenizer

    def __getstate__(self) -> dict[str, str]:
        return {"tokenizer_json": self._tokenizer.to_str()}

    def __setstate__(self, state: dict[str, str]) -> None:
        self.__init__(Tokenizer.from_str(state["tokenizer_json"]))

    @property
    def vocab_size(self) -> int:
        return self._tokenizer.get_vocab_size(with_added_tokens=True)

    def __len__(self) -> int:
        return self.vocab_size

    def encode(self, text: str) -> list[int]:
        return self._tokenizer.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        encodings = self._tokenizer.encode_batch(list(texts), add_special_tokens=False)
        return [e.ids for e in encodings]

    def decode(self, ids: Iterable[int], skip_special: bool = True) -> str:
        # int() accepts numpy and 0-d torch scalars alike, so a generated tensor row decodes.
        return self._tokenizer.decode([int(i) for i in ids], skip_special_tokens=skip_special)

    def token_frequencies(
        self, texts: Iterable[str], vocab_size: int | None = None, batch_size: int = 1024
    ) -> np.ndarray:
        """(V,) int64: how often each id occurs when `texts` are encoded (specials only if present).

        `vocab_size` pads V up to the model's vocabulary when the BPE ran out of merges
        before reaching it (a small corpus): the extra ids never occur and count 0.
        """
        size = self._output_size(vocab_size)
        counts = np.zeros(size, dtype=np.int64)
        iterator = iter(texts)
        while batch := list(itertools.islice(iterator, batch_size)):
            ids = [i for row in self.encode_batch(batch) for i in row]
            if ids:
                counts += np.bincount(np.asarray(ids, dtype=np.int64), minlength=size)
        return counts

    def token_order(self, texts: Iterable[str], vocab_size: int | None = None) -> np.ndarray:
        """(V,) int64 ids, most frequent first; equal counts keep id order (stable sort)."""
        counts = self.token_frequencies(texts, vocab_size=vocab_size)
        return np.argsort(-counts, kind="stable").astype(np.int64)

    def _output_size(self, vocab_size: int | None) -> int:
        if vocab_size is None:
            return self.vocab_size
        if vocab_size < self.vocab_size:
            raise ConfigError(
                f"vocab_size must be >= the tokenizer's {self.vocab_size} tokens, "
                f"got {vocab_size} (generator.vocab_size)"
            )
        return vocab_size

    def save(self, path: str | Path) -> Path:
        """Write `tokenizer.json` atomically; `path` is that file or the directory to hold it."""
        target = _json_path(path)
        with atomic_text(target) as handle:
            handle.write(self._tokenizer.to_str(pretty=True))
        return target

    @classmethod
    def load(cls, path: str | Path) -> RayragTokenizer:
        """Read a `tokenizer.json` (the file or its directory) written by `save`."""
        target = _json_path(path)
        if not target.is_file():
            raise ModelError(f"tokenizer file not found: {target}")
        try:
            tokenizer = Tokenizer.from_file(str(target))
        except Exception as exc:  # the Rust side raises a bare Exception on bad JSON
            raise ModelError(
                f"tokenizer file is corrupt or not a tokenizers JSON: {target} "
                f"({type(exc).__name__})"
            ) from None
        return cls(tokenizer)


def _json_path(path: str | Path) -> Path:
    path = Path(path)
    return path if path.suffix == ".json" else path / TOKENIZER_FILE
