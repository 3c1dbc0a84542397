"""Sidecars and folder rule files: resolution order, merge rules, malformed input."""

from __future__ import annotations

import pytest

from rayrag.data.files.meta import MetaResolver, is_meta_file, parse_sidecar
from rayrag.data.files.parsed import FileRejected

RULES = {
    ".rayrag.json": b'{"acl": ["staff"], "metadata": {"source": "share", "tier": "low"},'
    b' "rules": [{"glob": "*.pdf", "metadata": {"kind": "pdf"}}]}',
    "hr/.rayrag.json": b'{"acl": ["hr"], "metadata": {"tier": "high"}}',
}


def test_deeper_rules_and_sidecar_win() -> None:
    sidecars = {
        "hr/pay.pdf.meta.json": b'{"acl": ["payroll"], "title": "Pay", "metadata": {"y": 1}}'
    }
    resolver = MetaResolver(RULES, sidecars)
    top = resolver.resolve("a.pdf")
    assert top.acl == ("staff",) and top.metadata == {
        "source": "share",
        "tier": "low",
        "kind": "pdf",
    }
    hr = resolver.resolve("hr/notes.md")
    assert hr.acl == ("hr",) and hr.metadata == {"source": "share", "tier": "high"}
    pay = resolver.resolve("hr/pay.pdf")
    assert pay.acl == ("payroll",) and pay.title == "Pay"
    assert pay.metadata == {"source": "share", "tier": "high", "kind": "pdf", "y": 1}
    assert MetaResolver({}, {}).resolve("x.md").acl is None  # the reader makes it public


def test_malformed_rule_file_quarantines_everything_below_it() -> None:
    resolver = MetaResolver({**RULES, "hr/.rayrag.json": b"{not json"}, {})
    with pytest.raises(FileRejected, match=r"malformed rule file: invalid JSON .* \(in hr\)"):
        resolver.resolve("hr/deep/file.md")
    assert resolver.resolve("other.md").acl == ("staff",)


@pytest.mark.parametrize(
    "raw, reason",
    [
        (b"[1]", "malformed sidecar: not a JSON object"),
        (b'{"acl": []}', "malformed sidecar: 'acl' must be a non-empty list of group names"),
        (b'{"metadata": {"k": [1]}}', "malformed sidecar: metadata key 'k' must hold a scalar"),
        (b'{"owner": "x"}', "malformed sidecar: unknown key 'owner'"),
        (b"\xff", "malformed sidecar: not valid UTF-8"),
    ],
)
def test_malformed_sidecars(raw: bytes, reason: str) -> None:
    with pytest.raises(FileRejected) as info:
        parse_sidecar(raw)
    assert info.value.reason == reason


def test_meta_files_are_not_documents() -> None:
    assert is_meta_file("a/b.pdf.meta.json") and is_meta_file("a/.rayrag.json")
    assert not is_meta_file("a/b.json")
