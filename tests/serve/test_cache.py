"""The answer cache's keys and eviction, and the stages' bundle watch (no Ray needed)."""

from __future__ import annotations

import json
import os
import time

from rayrag.serve.cache import AnswerCache, acl_fingerprint, answer_key
from rayrag.serve.deployments import BundleWatch
from rayrag.types import Principal

ARGS = ("bundle-1", "m@1", "cfg", "rayrag-reader/1", "Who founded Helix?", "hybrid", 5, None)


def test_principals_share_an_answer_only_when_they_may_read_the_same_documents():
    ana = Principal("ana", frozenset({"public", "hr"}))
    bob = Principal("bob", frozenset({"hr", "public"}))  # same groups, another name
    eve = Principal("eve", frozenset({"public"}))
    assert answer_key(ana, *ARGS) == answer_key(bob, *ARGS)
    assert answer_key(ana, *ARGS) != answer_key(eve, *ARGS)
    assert acl_fingerprint(["hr", "public", "hr"]) == acl_fingerprint(["public", "hr"])


def test_every_input_of_an_answer_is_in_its_key():
    who = Principal("ana", frozenset({"public"}))
    base = answer_key(who, *ARGS)
    for i, changed in enumerate(
        ["bundle-2", "m@2", "cfg2", "rayrag-reader/2", "Who founded Helix", "dense", 4, 16]
    ):
        args = list(ARGS)
        args[i] = changed
        assert answer_key(who, *args) != base, f"argument {i} is not part of the key"


def test_the_key_holds_no_question_text():
    key = answer_key(Principal("ana", frozenset({"public"})), *ARGS)
    assert "Helix" not in key and len(key) == 64


def test_lru_eviction_ttl_and_off():
    cache = AnswerCache(max_entries=2, ttl_s=60)
    cache.put("a", {"n": 1})
    cache.put("b", {"n": 2})
    assert cache.get("a") == {"n": 1}  # a is now the most recent
    cache.put("c", {"n": 3})
    assert cache.get("b") is None and cache.get("a") == {"n": 1} and len(cache) == 2
    short = AnswerCache(max_entries=4, ttl_s=0.05)
    short.put("a", {"n": 1})
    time.sleep(0.1)
    assert short.get("a") is None and len(short) == 0
    off = AnswerCache(max_entries=0, ttl_s=60)
    off.put("a", {"n": 1})
    assert off.get("a") is None and len(off) == 0
    assert cache.clear() == 2 and len(cache) == 0


def test_a_stage_reloads_when_its_bundle_is_replaced(tmp_path):
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "manifest.json").write_text(json.dumps({"bundle_id": "one"}))
    loads = []

    def load() -> str:
        loads.append(1)
        return json.loads((bundle / "manifest.json").read_text())["bundle_id"]

    watch = BundleWatch(bundle, load, check_s=0)
    assert watch.current() == "one" and len(loads) == 1
    assert watch.current() == "one" and len(loads) == 1  # unchanged: no reload
    new = tmp_path / "new"
    new.mkdir()
    (new / "manifest.json").write_text(json.dumps({"bundle_id": "two"}))
    os.rename(bundle, tmp_path / "old")  # the swap's first rename: the manifest is missing
    assert watch.current() == "one"
    os.rename(new, bundle)
    assert watch.current() == "two" and watch.reloads == 1
