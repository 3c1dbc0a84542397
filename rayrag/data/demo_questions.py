"""The demo corpus's questions: one-hop and two-hop QA pairs drawn from the facts the document
kinds recorded, with their gold documents, answers and slices (hops, doc_type, region, access).

Candidates are collected per kind and drawn to fixed quotas, so every slice the evaluation
reports has questions.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from rayrag.data.demo_world import (
    _World,
)

# Questions per template; two-hop templates first. Sized to ~150 questions, 80 two-hop.
_TWO_HOP_QUOTA = {
    "acq_product": 16,
    "acq_target_product": 16,
    "acq_founded": 16,
    "legal_agency": 12,
    "hr_product": 10,
    "product_revenue": 10,
}


_ONE_HOP_QUOTA = {
    "acquirer": 8,
    "maker": 12,
    "condition": 8,
    "reg_agency": 6,
    "reg_year": 6,
    "position": 10,
    "revenue": 8,
    "legal_reg": 6,
    "founded": 6,
}


class _Candidate(NamedTuple):
    question: str
    answer: str
    docs: list[dict[str, Any]]  # gold evidence, bridge document first
    region: str


def _questions(world: _World) -> list[dict[str, Any]]:
    candidates = _question_candidates(world)
    rows: list[dict[str, Any]] = []
    for template, quota in (_TWO_HOP_QUOTA | _ONE_HOP_QUOTA).items():
        for candidate in world.rng.sample(candidates[template], quota):
            rows.append(_qa_row(len(rows), candidate))
    return rows


def _question_candidates(world: _World) -> dict[str, list[_Candidate]]:
    """Every question the world can answer, per template; quotas pick from these."""
    facts, doc_of = world.facts, world.doc_of
    cand: dict[str, list[_Candidate]] = {k: [] for k in _TWO_HOP_QUOTA | _ONE_HOP_QUOTA}

    def add(template: str, question: str, answer: object, docs: list[dict], region: str) -> None:
        cand[template].append(_Candidate(question, str(answer), docs, region))

    for a in facts["acquisition"]:
        buyer, target, press = a["buyer"], a["target"], a["doc"]
        buyer_product, target_product = (
            doc_of["product", buyer.name],
            doc_of["product", target.name],
        )
        add(
            "acq_product",
            f"Which {buyer.product_kind} is made by the company that acquired {target.name}?",
            buyer.product,
            [press, buyer_product],
            buyer.region,
        )
        add(
            "acq_target_product",
            f"Which company acquired the maker of {target.product}?",
            buyer.name,
            [target_product, press],
            buyer.region,
        )
        add(
            "acq_founded",
            f"In what year was the company that acquired {target.name} founded?",
            buyer.founded,
            [press, doc_of["profile", buyer.name]],
            buyer.region,
        )
        add("acquirer", f"Which company acquired {target.name}?", buyer.name, [press], buyer.region)
    regulations = {r["name"]: r for r in facts["regulation"]}
    for legal in facts["legal"]:
        c, reg = legal["company"], regulations[legal["regulation"]]
        add(
            "legal_agency",
            f"Which agency issued the regulation that counsel found applies to {c.product}?",
            reg["agency"],
            [legal["doc"], reg["doc"]],
            c.region,
        )
        add(
            "legal_reg",
            f"Which regulation did counsel conclude applies to {c.product}?",
            reg["name"],
            [legal["doc"]],
            c.region,
        )
    for e in facts["employee"]:
        c, employee = e["company"], e["employee_id"]
        add(
            "hr_product",
            f"Which {c.product_kind} is made by the company that employs {employee}?",
            c.product,
            [e["doc"], doc_of["product", c.name]],
            c.region,
        )
        add(
            "position",
            f"What position does employee {employee} hold?",
            e["position"],
            [e["doc"]],
            c.region,
        )
    for r in facts["revenue"]:
        c = r["company"]
        add(
            "product_revenue",
            f"What revenue did the maker of {c.product} report for fiscal {r['fiscal']}?",
            r["revenue"],
            [doc_of["product", c.name], r["doc"]],
            c.region,
        )
        add(
            "revenue",
            f"What revenue did {c.name} report for fiscal {r['fiscal']}?",
            r["revenue"],
            [r["doc"]],
            c.region,
        )
    for m in facts["maker"]:
        c = m["company"]
        add("maker", f"Which company manufactures {c.product}?", c.name, [m["doc"]], c.region)
    for m in facts["condition"]:
        c = m["company"]
        add(
            "condition",
            f"What condition is {c.product} approved to treat?",
            m["condition"],
            [m["doc"]],
            c.region,
        )
    for p in facts["founded"]:
        c = p["company"]
        add("founded", f"In what year was {c.name} founded?", c.founded, [p["doc"]], c.region)
    for r in facts["regulation"]:
        add(
            "reg_agency", f"Which agency issued the {r['name']}?", r["agency"], [r["doc"]], "global"
        )
        add(
            "reg_year",
            f"In what year did the {r['name']} take effect?",
            r["year"],
            [r["doc"]],
            "global",
        )
    return cand


def _qa_row(index: int, candidate: _Candidate) -> dict[str, Any]:
    question, answer, docs, region = candidate
    # The answer must be readable in the gold evidence, or the question is unanswerable.
    answer_docs = [d for d in docs if answer in d["text"]]
    if not answer_docs:
        raise RuntimeError(f"demo QA {index}: answer not in its supporting documents")
    return {
        "id": f"demo-q{index:03d}",
        "question": question,
        "answers": [answer],
        "supporting_ids": [d["id"] for d in docs],
        "metadata": {
            "hops": len(docs),
            # The answer-bearing document's type is the slice: it is what retrieval must find.
            "doc_type": answer_docs[-1]["metadata"]["doc_type"],
            "region": region,
            # "restricted" when some gold document is not public: answerable only with groups.
            "access": "public" if all("public" in d["acl"] for d in docs) else "restricted",
        },
    }
