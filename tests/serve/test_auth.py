"""rayrag.serve.auth: hashed API keys, Bearer parsing, file and environment sources."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from rayrag.config import ServeConfig
from rayrag.errors import ConfigError
from rayrag.serve.auth import (
    KEY_PREFIX,
    AuthError,
    KeyStore,
    generate_key,
    hash_key,
    key_entry,
)
from rayrag.types import Principal

EXAMPLE = (
    Path(__file__).resolve().parents[2] / "rayrag" / "configs" / "access" / "api_keys.example.yaml"
)
ANA_KEY = "rr-test-ana-key-0001"
BOB_KEY = "rr-test-bob-key-0002"


def write_keys(tmp_path: Path, entries: list) -> Path:
    path = tmp_path / "keys.yaml"
    path.write_text(yaml.safe_dump(entries), encoding="utf-8")
    return path


@pytest.fixture()
def store(tmp_path) -> KeyStore:
    path = write_keys(tmp_path, [key_entry(ANA_KEY, "ana", ["public", "hr"], "people", "admin")])
    config = ServeConfig(keys_file=str(path))
    return KeyStore.from_config(
        config, environ={"RAYRAG_API_KEYS": f"{BOB_KEY}=bob:public:sales:user"}
    )


def test_file_and_env_keys_authenticate(store):
    ana = store.authenticate(f"Bearer {ANA_KEY}")
    assert ana.principal == Principal("ana", frozenset({"public", "hr"}))
    assert (ana.team, ana.role, ana.is_admin) == ("people", "admin", True)
    assert ana.key_id == hash_key(ANA_KEY)[:8]
    bob = store.authenticate(f"bearer   {BOB_KEY} ")
    assert (bob.principal.name, bob.principal.groups, bob.team, bob.role) == (
        "bob",
        frozenset({"public"}),
        "sales",
        "user",
    )
    assert len(store) == 2


@pytest.mark.parametrize(
    "header, message",
    [
        (None, "missing Authorization"),
        ("", "missing Authorization"),
        (f"Basic {ANA_KEY}", "scheme"),
        ("Bearer ", "empty bearer"),
        ("Bearer rr-not-a-key", "invalid API key"),
        (f"Bearer {ANA_KEY}x", "invalid API key"),
    ],
)
def test_bad_headers_raise_auth_error_without_the_key(store, header, message):
    with pytest.raises(AuthError, match=message) as info:
        store.authenticate(header)
    assert ANA_KEY not in str(info.value) and "\n" not in str(info.value)
    assert info.value.status == 401


def test_keys_are_stored_hashed_only(store):
    state = repr(vars(store))
    assert ANA_KEY not in state and BOB_KEY not in state


def test_empty_store_says_how_to_add_a_key():
    store = KeyStore.from_config(ServeConfig(), environ={})
    assert len(store) == 0
    with pytest.raises(AuthError, match="no API keys are configured.*RAYRAG_API_KEYS"):
        store.authenticate(f"Bearer {ANA_KEY}")


def test_duplicate_hash_across_sources_is_a_config_error(tmp_path):
    path = write_keys(tmp_path, [key_entry(ANA_KEY, "ana", ["public"], "people")])
    with pytest.raises(ConfigError, match="repeats the key") as info:
        KeyStore.from_config(
            ServeConfig(keys_file=str(path)),
            environ={"RAYRAG_API_KEYS": f"{ANA_KEY}=eve:public:x:user"},
        )
    assert ANA_KEY not in str(info.value) and hash_key(ANA_KEY) not in str(info.value)


@pytest.mark.parametrize(
    "patch, message",
    [
        ({"sha256": "not-hex"}, "sha256 must be 64 hex"),
        ({"role": "root"}, "role must be one of user, admin"),
        ({"principal": ""}, "principal must be"),
        ({"groups": []}, "groups must be"),
        ({"sha265": "typo"}, "unknown field"),
    ],
)
def test_malformed_file_entry_names_file_and_index_not_the_key(tmp_path, patch, message):
    good = key_entry(BOB_KEY, "bob", ["public"], "sales")
    bad = {**key_entry(ANA_KEY, "ana", ["public"], "people"), **patch}
    path = write_keys(tmp_path, [good, bad])
    with pytest.raises(ConfigError, match=message) as info:
        KeyStore.from_file(path)
    text = str(info.value)
    assert str(path) in text and "entry 1" in text
    assert ANA_KEY not in text and hash_key(ANA_KEY) not in text


def test_malformed_env_entry_never_echoes_the_key():
    with pytest.raises(ConfigError, match="RAYRAG_API_KEYS entry 1") as info:
        KeyStore.from_env(f"{ANA_KEY}=ana:public:people:user, {BOB_KEY}=bob:public")
    assert BOB_KEY not in str(info.value)
    with pytest.raises(ConfigError, match="role"):
        KeyStore.from_env(f"{BOB_KEY}=bob:public:sales:superuser")


def test_missing_or_invalid_yaml_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        KeyStore.from_file(tmp_path / "absent.yaml")
    path = tmp_path / "keys.yaml"
    path.write_text("sha256: [unclosed", encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid YAML"):
        KeyStore.from_file(path)


def test_generate_key_and_entry_round_trip(tmp_path):
    key = generate_key()
    assert key.startswith(KEY_PREFIX) and len(key) > 40 and generate_key() != key
    entry = key_entry(key, "cy", ["public", "legal"], "legal", "user")
    assert key not in repr(entry) and entry["sha256"] == hash_key(key)
    store = KeyStore.from_file(write_keys(tmp_path, [entry]))
    assert store.authenticate(f"Bearer {key}").principal.groups == frozenset({"public", "legal"})


def test_every_stored_hash_is_compared(store, monkeypatch):
    # Constant time across entries: a match on the first entry still compares the rest.
    import rayrag.serve.auth as auth

    calls = []
    real = auth.hmac.compare_digest
    monkeypatch.setattr(auth.hmac, "compare_digest", lambda a, b: calls.append(1) or real(a, b))
    store.authenticate(f"Bearer {ANA_KEY}")
    assert len(calls) == len(store)


def test_shipped_example_file_loads_and_its_demo_keys_work():
    store = KeyStore.from_file(EXAMPLE)
    assert store.authenticate("Bearer rr-demo-admin-not-secret").role == "admin"
    assert store.authenticate("Bearer rr-demo-hr-not-secret").principal.groups == frozenset(
        {"public", "hr"}
    )
