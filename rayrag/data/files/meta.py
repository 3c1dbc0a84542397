"""Who may read a file and what it is about: sidecars and folder rule files.

- Sidecar `NAME.EXT.meta.json` next to `NAME.EXT` (the upload API writes these):
  `{"acl": ["hr"], "title": "...", "metadata": {"dept": "hr"}}`, every key optional.
- Rule file `.rayrag.json` in any folder, for the files below it:
  `{"acl": [...], "metadata": {...},
    "rules": [{"glob": "*.pdf", "acl": [...], "metadata": {...}}]}`;
  a rule's glob matches the file's path relative to that folder (fnmatch, `*` crosses `/`).

Resolution, weakest first: the root's rule file, then each deeper folder's, within a rule file
its own acl/metadata and then its matching rules in order, then the sidecar. An acl replaces
the one before; metadata merges key by key. A malformed sidecar quarantines its file; a
malformed rule file quarantines every file below it (failing open would publish them).
Sidecars and rule files are never documents.
"""

from __future__ import annotations

import fnmatch
import json
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

from rayrag.data.files.parsed import FileRejected
from rayrag.types import Scalar

SIDECAR_SUFFIX = ".meta.json"
RULE_FILE = ".rayrag.json"
_SCALARS = (str, int, float, bool, type(None))


@dataclass(frozen=True)
class FileMeta:
    """What rule files and a sidecar say about one file (None: not said)."""

    acl: tuple[str, ...] | None = None
    title: str | None = None
    metadata: dict[str, Scalar] = field(default_factory=dict)


def is_meta_file(rel: str) -> bool:
    name = PurePosixPath(rel).name
    return name == RULE_FILE or name.endswith(SIDECAR_SUFFIX)


def parse_sidecar(raw: bytes) -> FileMeta:
    """A sidecar's bytes -> `FileMeta`, or `FileRejected` naming what is malformed."""
    obj = _json_object(raw, "sidecar")
    unknown = sorted(set(obj) - {"acl", "title", "metadata"})
    if unknown:
        raise FileRejected(f"malformed sidecar: unknown key {unknown[0]!r}")
    title = obj.get("title")
    if title is not None and (not isinstance(title, str) or not title.strip()):
        raise FileRejected("malformed sidecar: 'title' must be a non-empty string")
    return FileMeta(
        acl=_acl(obj, "sidecar"),
        title=title.strip() if title else None,
        metadata=_metadata(obj, "sidecar"),
    )


@dataclass(frozen=True)
class _Rule:
    glob: str | None
    meta: FileMeta


def parse_rule_file(raw: bytes) -> list[_Rule]:
    """A folder rule file's bytes -> its rules (the folder-wide one first)."""
    obj = _json_object(raw, "rule file")
    unknown = sorted(set(obj) - {"acl", "metadata", "rules"})
    if unknown:
        raise FileRejected(f"malformed rule file: unknown key {unknown[0]!r}")
    rules = [_Rule(None, FileMeta(_acl(obj, "rule file"), None, _metadata(obj, "rule file")))]
    listed = obj.get("rules", [])
    if not isinstance(listed, list):
        raise FileRejected("malformed rule file: 'rules' must be a list")
    for i, rule in enumerate(listed):
        if not isinstance(rule, dict) or not isinstance(rule.get("glob"), str) or not rule["glob"]:
            raise FileRejected(f"malformed rule file: rule {i} needs a 'glob' string")
        if set(rule) - {"glob", "acl", "metadata"}:
            raise FileRejected(f"malformed rule file: rule {i} has an unknown key")
        where = f"rule file (rule {i})"
        rules.append(_Rule(rule["glob"], FileMeta(_acl(rule, where), None, _metadata(rule, where))))
    return rules


class MetaResolver:
    """Resolves each file's `FileMeta` from the rule files and sidecars of one listing.

    `rule_files` and `sidecars` map relative paths to their raw bytes."""

    def __init__(self, rule_files: dict[str, bytes], sidecars: dict[str, bytes]) -> None:
        self._rules: dict[str, list[_Rule]] = {}
        self._bad_rules: dict[str, str] = {}
        for rel, raw in rule_files.items():
            folder = _parent(rel)
            try:
                self._rules[folder] = parse_rule_file(raw)
            except FileRejected as bad:
                self._bad_rules[folder] = bad.reason
        self._sidecars = sidecars

    def resolve(self, rel: str) -> FileMeta:
        """The file's meta, or `FileRejected` (malformed sidecar or rule file above it)."""
        acl: tuple[str, ...] | None = None
        metadata: dict[str, Scalar] = {}
        for folder in _folders_above(rel):
            if folder in self._bad_rules:
                where = folder or "the corpus root"
                raise FileRejected(f"{self._bad_rules[folder]} (in {where})")
            inside = rel[len(folder) + 1 :] if folder else rel
            for rule in self._rules.get(folder, []):
                if rule.glob is None or fnmatch.fnmatchcase(inside, rule.glob):
                    acl = rule.meta.acl if rule.meta.acl is not None else acl
                    metadata.update(rule.meta.metadata)
        title = None
        raw = self._sidecars.get(rel + SIDECAR_SUFFIX)
        if raw is not None:
            side = parse_sidecar(raw)
            acl = side.acl if side.acl is not None else acl
            metadata.update(side.metadata)
            title = side.title
        return FileMeta(acl, title, metadata)


def _parent(rel: str) -> str:
    parent = PurePosixPath(rel).parent.as_posix()
    return "" if parent == "." else parent


def _folders_above(rel: str) -> list[str]:
    parts = PurePosixPath(rel).parts[:-1]
    return [""] + ["/".join(parts[: i + 1]) for i in range(len(parts))]


def _json_object(raw: bytes, what: str) -> dict[str, Any]:
    try:
        obj = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise FileRejected(f"malformed {what}: not valid UTF-8") from None
    except json.JSONDecodeError as exc:
        raise FileRejected(
            f"malformed {what}: invalid JSON ({exc.msg} at line {exc.lineno})"
        ) from None
    if not isinstance(obj, dict):
        raise FileRejected(f"malformed {what}: not a JSON object")
    return obj


def _acl(obj: dict[str, Any], what: str) -> tuple[str, ...] | None:
    if obj.get("acl") is None:
        return None
    acl = obj["acl"]
    if (
        not isinstance(acl, list)
        or not acl
        or not all(isinstance(g, str) and g.strip() for g in acl)
    ):
        raise FileRejected(f"malformed {what}: 'acl' must be a non-empty list of group names")
    return tuple(dict.fromkeys(g.strip() for g in acl))


def _metadata(obj: dict[str, Any], what: str) -> dict[str, Scalar]:
    metadata = obj.get("metadata")
    if metadata is None:
        return {}
    if not isinstance(metadata, dict):
        raise FileRejected(f"malformed {what}: 'metadata' must be an object")
    for key, value in metadata.items():
        if not isinstance(value, _SCALARS):
            raise FileRejected(f"malformed {what}: metadata key {key!r} must hold a scalar")
    return dict(metadata)
