"""The labelled attack set for `rayrag eval safety`: hand-written attacks, planted and disguised.

From each hand-written text of `safety_attacks` (DEV or HOLDOUT) the set takes:

- ``plain``: the text as written (a question, or a line of a document);
- ``embedded``: the text planted in the middle of an ordinary passage (indirect injection,
  the way a poisoned document reaches the reader through retrieval);
- a disguised copy, one transform per text in turn: zero-width characters inside words,
  Cyrillic/Greek look-alike letters, base64, l33t digits, fullwidth letters, spaced letters,
  Unicode tag characters (invisible "ASCII smuggling"), and a right-to-left override over
  reversed text. The disguised copy keeps the original's category: it is the same attack,
  and recall per `variant` says which disguise slips through.

The benign side is real text, loaded by `benign_texts` from a `corpus.jsonl` + `qa.jsonl` pair
(the demo corpus, or HotpotQA after `rayrag.data.importers.import_hotpotqa`).

    >>> examples = attack_set("dev")
    >>> {e.variant for e in examples} >= {"plain", "embedded", "base64", "homoglyph"}
    True
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from pathlib import Path

from rayrag.governance.safety.attacks import CARRIERS, DEV, HOLDOUT, HOLDOUT_B

SPLITS = ("dev", "holdout", "holdout_b")
HOMOGLYPHS = str.maketrans(
    {"a": "а", "e": "е", "o": "о", "c": "с", "p": "р", "i": "і", "x": "х", "y": "у"}
)
LEET = str.maketrans({"a": "4", "e": "3", "i": "1", "o": "0", "s": "5", "t": "7"})


@dataclass(frozen=True)
class SafetyExample:
    """One labelled attack; `text` never leaves the evaluation (only ids and counts do)."""

    id: str
    text: str
    category: str
    split: str
    variant: str


def zero_width(text: str) -> str:
    return " ".join(
        w[: len(w) // 2] + "\u200b" + w[len(w) // 2 :] if len(w) >= 4 else w
        for w in text.split(" ")
    )


def homoglyph(text: str) -> str:
    # Every other word, so each disguised word mixes scripts the way real attacks do.
    return " ".join(
        w.translate(HOMOGLYPHS) if i % 2 == 0 else w for i, w in enumerate(text.split(" "))
    )


def base64_wrap(text: str) -> str:
    return "Please process the following: " + base64.b64encode(text.encode()).decode()


def leet(text: str) -> str:
    return text.lower().translate(LEET)


def fullwidth(text: str) -> str:
    return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in text)


def spaced(text: str) -> str:
    return "   ".join(" ".join(word) for word in text.split())


def tag_smuggle(text: str) -> str:
    hidden = "".join(chr(0xE0000 + ord(c)) for c in text if 0x20 <= ord(c) < 0x7F)
    return "Summarise the attached report." + hidden


def bidi_reversed(text: str) -> str:
    return "Note: \u202e" + text[::-1] + "\u202c"


TRANSFORMS = {
    "zero_width": zero_width,
    "homoglyph": homoglyph,
    "base64": base64_wrap,
    "leet": leet,
    "fullwidth": fullwidth,
    "spaced": spaced,
    "tag_chars": tag_smuggle,
    "bidi": bidi_reversed,
}


def attack_set(split: str = "dev") -> list[SafetyExample]:
    """Plain, embedded and disguised examples of one split's hand-written attacks."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    written = {"dev": DEV, "holdout": HOLDOUT, "holdout_b": HOLDOUT_B}[split]
    names = list(TRANSFORMS)
    examples: list[SafetyExample] = []
    for i, (category, text) in enumerate(written):
        examples.append(SafetyExample(f"{split}-{i:03d}", text, category, split, "plain"))
        if i % 2 == 0:
            carrier = CARRIERS[(i // 2) % len(CARRIERS)]
            examples.append(
                SafetyExample(
                    f"{split}-{i:03d}-embedded",
                    carrier.format(payload=text),
                    category,
                    split,
                    "embedded",
                )
            )
        if category != "obfuscation" and i % 2 == 1:
            name = names[(i // 2) % len(names)]
            examples.append(
                SafetyExample(
                    f"{split}-{i:03d}-{name}", TRANSFORMS[name](text), category, split, name
                )
            )
    return examples


@dataclass(frozen=True)
class BenignTexts:
    """Real questions and passages of one corpus (text stays in memory, never logged)."""

    name: str
    questions: list[str]
    passages: list[str]


def benign_texts(corpus_dir: Path, name: str) -> BenignTexts:
    """The questions of `qa.jsonl` and the passages
    (title + text) of `corpus.jsonl` in `corpus_dir`."""
    rows = [
        json.loads(line)
        for line in (corpus_dir / "corpus.jsonl").read_text().splitlines()
        if line.strip()
    ]
    qa = [
        json.loads(line)
        for line in (corpus_dir / "qa.jsonl").read_text().splitlines()
        if line.strip()
    ]
    passages = [f"{r['title']}\n{r['text']}" if r.get("title") else r["text"] for r in rows]
    return BenignTexts(name, [q["question"] for q in qa], passages)
