"""API keys: `Authorization: Bearer <key>` -> the principal, groups, team and role it stands for.

The ingress of the Serve graph (the README's Serving section) authenticates every request here. Keys
are stored hashed only (sha256; a key is 32 random bytes, so a plain hash is enough: there is
nothing to brute-force, which is why GitHub and Stripe-style token stores do the same), and
a presented key is compared against *every* stored hash with `hmac.compare_digest`, with no
early exit, so response time reveals neither a matching prefix nor which entry matched.

Two sources, merged:

* a YAML file (`serve.keys_file`): a list of entries
  ``{sha256: <hex of sha256(key)>, principal: NAME, groups: [g, ...], team: T, role: user|admin}``
  (see rayrag/configs/access/api_keys.example.yaml; `key_entry` writes one);
* an environment variable (`serve.keys_env`, default RAYRAG_API_KEYS) with plaintext entries
  ``KEY=principal:group1|group2:team:role``, comma separated, hashed at load and dropped.

Errors never carry a key: a bad entry is named by its source and index only.

    >>> key = generate_key()
    >>> store = KeyStore.from_config(
    ...     ServeConfig(), environ={"RAYRAG_API_KEYS": f"{key}=ana:public|hr:people:user"}
    ... )
    >>> who = store.authenticate(f"Bearer {key}")
    >>> who.principal.name, sorted(who.principal.groups), who.team, who.role
    ('ana', ['hr', 'public'], 'people', 'user')
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

import yaml

from rayrag.config import ServeConfig
from rayrag.errors import ConfigError, RayRagError
from rayrag.types import Principal

Role = Literal["user", "admin"]
ROLES: tuple[str, ...] = get_args(Role)
KEY_PREFIX = "rr-"  # recognisable in a leaked-secret scan, like GitHub's "ghp_"
KEY_ID_CHARS = 8
_HEX64 = re.compile(r"[0-9a-f]{64}")
_ENTRY_FIELDS = frozenset({"sha256", "principal", "groups", "team", "role"})


class AuthError(RayRagError):
    """The request carries no usable API key (HTTP 401). The message never holds the key."""

    status = 401


@dataclass(frozen=True)
class ApiPrincipal:
    """Who a key belongs to. `key_id` (8 hex chars of the key's sha256) is safe to log."""

    principal: Principal
    team: str
    role: Role
    key_id: str

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


def hash_key(key: str) -> str:
    """The stored form of a key: hex sha256 of its UTF-8 bytes."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def generate_key() -> str:
    """A new random API key: ``rr-`` + 32 bytes of URL-safe base64 (256 bits)."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def key_entry(
    key: str, principal: str, groups: list[str] | tuple[str, ...], team: str, role: Role = "user"
) -> dict[str, Any]:
    """The keys-file entry for `key` (hash only), for `rayrag serve keygen`."""
    entry = {
        "sha256": hash_key(key),
        "principal": principal,
        "groups": list(groups),
        "team": team,
        "role": role,
    }
    _parse_entry(entry, "key_entry", 0)  # the same checks a loaded file gets
    return entry


class KeyStore:
    """Hashed API keys -> `ApiPrincipal`; `authenticate` checks a request's header.

    The constructor takes already-validated (hex sha256, ApiPrincipal) pairs; build one
    with `from_config` (file + environment), `from_file` or `from_env`.
    """

    def __init__(
        self,
        entries: list[tuple[str, ApiPrincipal]] | None = None,
        *,
        sources: list[str] | None = None,
    ) -> None:
        entries = entries or []
        sources = sources or [f"API key entry {i}" for i in range(len(entries))]
        self._digests: list[bytes] = []
        self._principals: list[ApiPrincipal] = []
        seen: dict[str, str] = {}
        for where, (hex_digest, who) in zip(sources, entries, strict=True):
            if hex_digest in seen:
                raise ConfigError(
                    f"{where} repeats the key of {seen[hex_digest]} "
                    f"(key_id {who.key_id}); each key must be unique"
                )
            seen[hex_digest] = where
            self._digests.append(bytes.fromhex(hex_digest))
            self._principals.append(who)

    def __len__(self) -> int:
        return len(self._digests)

    @classmethod
    def from_config(cls, config: ServeConfig, environ: Mapping[str, str] = os.environ) -> KeyStore:
        """Keys from `config.keys_file` (when set) and the `config.keys_env` variable."""
        located = cls._file_entries(Path(config.keys_file)) if config.keys_file else []
        located += cls._env_entries(environ.get(config.keys_env, ""), config.keys_env)
        return cls._located(located)

    @classmethod
    def from_file(cls, path: str | Path) -> KeyStore:
        return cls._located(cls._file_entries(Path(path)))

    @classmethod
    def from_env(cls, value: str, env_name: str = "RAYRAG_API_KEYS") -> KeyStore:
        return cls._located(cls._env_entries(value, env_name))

    @classmethod
    def _located(cls, located: list[tuple[str, ApiPrincipal, str]]) -> KeyStore:
        return cls(
            [(digest, who) for digest, who, _ in located], sources=[w for _, _, w in located]
        )

    @staticmethod
    def _file_entries(path: Path) -> list[tuple[str, ApiPrincipal, str]]:
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except OSError:
            raise ConfigError(
                f"API keys file not found or unreadable: {path} (serve.keys_file)"
            ) from None
        except yaml.YAMLError:
            raise ConfigError(f"API keys file {path} is not valid YAML (serve.keys_file)") from None
        if data is None:
            return []
        if not isinstance(data, list):
            raise ConfigError(
                f"API keys file {path} must hold a list of entries, got {type(data).__name__}"
            )
        return [_parse_entry(entry, f"API keys file {path}", i) for i, entry in enumerate(data)]

    @staticmethod
    def _env_entries(value: str, env_name: str) -> list[tuple[str, ApiPrincipal, str]]:
        entries = []
        for index, item in enumerate(part.strip() for part in value.split(",")):
            if not item:
                continue
            key, sep, spec = item.partition("=")
            fields = spec.split(":")
            if not sep or not key.strip() or len(fields) != 4:
                raise ConfigError(
                    f"environment variable {env_name} entry {index} must be "
                    "'KEY=principal:group1|group2:team:role'"
                )
            principal, groups, team, role = (f.strip() for f in fields)
            entry = {
                "sha256": hash_key(key.strip()),
                "principal": principal,
                "groups": [g.strip() for g in groups.split("|") if g.strip()],
                "team": team,
                "role": role,
            }
            entries.append(_parse_entry(entry, f"environment variable {env_name}", index))
        return entries

    def authenticate(self, authorization: str | None) -> ApiPrincipal:
        """The principal of a ``Bearer <key>`` header; `AuthError` for anything else."""
        if not self._digests:
            raise AuthError(
                "no API keys are configured: add one to serve.keys_file or the "
                "RAYRAG_API_KEYS variable (see rayrag/configs/access/api_keys.example.yaml)"
            )
        if not authorization or not authorization.strip():
            raise AuthError("missing Authorization header: send 'Authorization: Bearer <key>'")
        scheme, _, key = authorization.strip().partition(" ")
        if scheme.casefold() != "bearer":
            raise AuthError("unsupported authorization scheme: send 'Authorization: Bearer <key>'")
        key = key.strip()
        if not key:
            raise AuthError("empty bearer token: send 'Authorization: Bearer <key>'")
        presented = hashlib.sha256(key.encode("utf-8")).digest()
        match = -1
        for index, stored in enumerate(self._digests):  # every entry, no early exit
            if hmac.compare_digest(presented, stored):
                match = index
        if match < 0:
            raise AuthError("invalid API key")
        return self._principals[match]


def _parse_entry(entry: Any, source: str, index: int) -> tuple[str, ApiPrincipal, str]:
    """Validate one entry; messages name the source and index, never the key or its hash."""
    where = f"{source} entry {index}"
    if not isinstance(entry, dict):
        raise ConfigError(f"{where} must be a mapping with keys {', '.join(sorted(_ENTRY_FIELDS))}")
    unknown = sorted(str(k) for k in set(entry) - _ENTRY_FIELDS)
    if unknown:
        raise ConfigError(
            f"{where} has unknown field(s) {', '.join(unknown)}; "
            f"allowed: {', '.join(sorted(_ENTRY_FIELDS))}"
        )
    digest = entry.get("sha256")
    if not isinstance(digest, str) or not _HEX64.fullmatch(digest.strip().lower()):
        raise ConfigError(
            f"{where}: sha256 must be 64 hex characters (the hash of the key, never the key itself)"
        )
    digest = digest.strip().lower()
    principal = entry.get("principal")
    if not isinstance(principal, str) or not principal.strip():
        raise ConfigError(f"{where}: principal must be a non-empty name")
    groups = entry.get("groups", ["public"])
    if (
        not isinstance(groups, list)
        or not groups
        or not all(isinstance(g, str) and g.strip() for g in groups)
    ):
        raise ConfigError(f"{where}: groups must be a non-empty list of group names")
    team = entry.get("team", "default")
    if not isinstance(team, str) or not team.strip():
        raise ConfigError(f"{where}: team must be a non-empty name")
    role = entry.get("role", "user")
    if role not in ROLES:
        raise ConfigError(f"{where}: role must be one of {', '.join(ROLES)}, got {role!r}")
    who = ApiPrincipal(
        principal=Principal(principal.strip(), frozenset(g.strip() for g in groups)),
        team=team.strip(),
        role=role,
        key_id=digest[:KEY_ID_CHARS],
    )
    return digest, who, where
