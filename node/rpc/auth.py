"""API credentials of member organisations: parse config, authenticate bearer keys.

Owns ``CredentialStore`` (who may call what), ``Principal`` (an authenticated caller)
and ``generate_api_key`` (the helper operators use to mint a key for the config).

The node's config holds, per member organisation::

    {"webank": {"roles": ["verifier", "member"], "key_sha256": "<64 lowercase hex>"}}

Rules:
- Only SHA-256 of an API key is ever stored or configured; the key itself is shown
  once, when generated. SHA-256 (not a slow KDF) is right here because keys are 256
  random bits, not passwords: nothing to brute-force.
- Keys are compared in constant time: the presented key is hashed and compared with
  ``hmac.compare_digest`` against every configured hash, without an early exit, so
  timing reveals neither a prefix nor which member matched.
- A presented but unknown key is always refused, even for public methods and even in
  open mode: a misconfigured client should find out at once, not when it first calls
  a protected method.
- Open mode (devnets only) lets anyone call anything; ``serve`` logs a loud warning.
- Pure: no I/O, no clock.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from node.rpc.errors import Unauthorised

__all__ = [
    "KNOWN_ROLES",
    "OPEN_PRINCIPAL",
    "ApiKey",
    "CredentialStore",
    "Principal",
    "generate_api_key",
    "hash_api_key",
]

# Roles the node's methods are expected to use. Config may name others (a later
# release may add methods for them); these are documented, not enforced.
KNOWN_ROLES: Final = frozenset({"member", "verifier", "auditor", "issuer", "operator"})

_KEY_PREFIX: Final = "dvp_"
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
_ROLE = re.compile(r"[a-z][a-z0-9_-]{0,31}")
_MEMBER_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}")
# A bearer token longer than this is not one of ours; refuse before hashing it.
_MAX_KEY_CHARS: Final = 256


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller. ``open_mode`` callers pass every role check."""

    member_id: str
    roles: frozenset[str]
    open_mode: bool = False

    def has_any_role(self, required: frozenset[str]) -> bool:
        """True if this caller may call a method requiring any of ``required``.

        An empty ``required`` means "any authenticated member".
        """
        return self.open_mode or not required or not self.roles.isdisjoint(required)


# The caller in open mode when no (or no valid) key is presented.
OPEN_PRINCIPAL: Final = Principal(member_id="<open>", roles=frozenset(), open_mode=True)


@dataclass(frozen=True, slots=True)
class ApiKey:
    """A freshly generated key: give ``key`` to the member, put ``key_sha256`` in config."""

    key: str
    key_sha256: str


def hash_api_key(key: str) -> str:
    """SHA-256 of the key's UTF-8 bytes, lowercase hex: the form stored in config."""
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def generate_api_key() -> ApiKey:
    """A new random API key (256 bits, URL-safe) and its config hash."""
    key = _KEY_PREFIX + secrets.token_urlsafe(32)
    return ApiKey(key=key, key_sha256=hash_api_key(key))


@dataclass(frozen=True, slots=True)
class _Entry:
    digest: bytes
    principal: Principal


@dataclass(frozen=True)
class CredentialStore:
    """The configured API keys, by hash. Build with ``from_config`` or ``open_mode``."""

    entries: tuple[_Entry, ...] = ()
    open: bool = False
    _by_member: Mapping[str, Principal] = field(default_factory=dict, repr=False)

    @classmethod
    def from_config(cls, config: Mapping[str, Any], *, open_mode: bool = False) -> CredentialStore:
        """Parse ``{member_id: {"roles": [...], "key_sha256": hex}}``; ValueError if malformed.

        Two members with the same key hash are refused: the key would not identify
        its holder.
        """
        if not isinstance(config, Mapping):
            raise ValueError("api credentials must be a mapping of member id to entry")
        entries: list[_Entry] = []
        seen: dict[bytes, str] = {}
        for member_id, entry in config.items():
            if not isinstance(member_id, str) or not _MEMBER_ID.fullmatch(member_id):
                raise ValueError(f"api credentials: bad member id {member_id!r}")
            if not isinstance(entry, Mapping) or set(entry) != {"roles", "key_sha256"}:
                raise ValueError(
                    f"api credentials[{member_id}]: expected exactly keys roles, key_sha256"
                )
            key_hash = entry["key_sha256"]
            if not isinstance(key_hash, str) or not _SHA256_HEX.fullmatch(key_hash):
                raise ValueError(
                    f"api credentials[{member_id}].key_sha256: expected 64 lowercase hex"
                )
            roles = entry["roles"]
            if (
                not isinstance(roles, list | tuple)
                or not roles
                or not all(isinstance(r, str) and _ROLE.fullmatch(r) for r in roles)
            ):
                raise ValueError(
                    f"api credentials[{member_id}].roles: expected a non-empty list of "
                    "lowercase role names"
                )
            digest = bytes.fromhex(key_hash)
            if digest in seen:
                raise ValueError(
                    f"api credentials: {member_id} and {seen[digest]} share one key hash"
                )
            seen[digest] = member_id
            entries.append(_Entry(digest, Principal(member_id, frozenset(roles))))
        by_member = {e.principal.member_id: e.principal for e in entries}
        return cls(entries=tuple(entries), open=open_mode, _by_member=by_member)

    @classmethod
    def open_mode(cls) -> CredentialStore:
        """Devnet: every caller may call every method. Never for a real consortium."""
        return cls(open=True)

    def principal(self, member_id: str) -> Principal | None:
        """The configured principal of a member (for tests and admin tooling)."""
        return self._by_member.get(member_id)

    def authenticate(self, authorization: str | None) -> Principal | None:
        """The caller behind an ``Authorization`` header value.

        Returns None for no header (anonymous; ``OPEN_PRINCIPAL`` in open mode).
        Raises ``Unauthorised`` for a header that is not ``Bearer <key>`` or whose key
        is not configured.
        """
        if authorization is None:
            return OPEN_PRINCIPAL if self.open else None
        scheme, _, key = authorization.strip().partition(" ")
        key = key.strip()
        if scheme.lower() != "bearer" or not key:
            raise Unauthorised("Authorization header must be 'Bearer <api key>'")
        if len(key) > _MAX_KEY_CHARS:
            raise Unauthorised("unknown API key")
        digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()
        found: Principal | None = None
        # No early exit: the time taken depends only on how many members are configured.
        for entry in self.entries:
            if hmac.compare_digest(entry.digest, digest):
                found = entry.principal
        if found is None:
            raise Unauthorised("unknown API key")
        if self.open:
            return Principal(found.member_id, found.roles, open_mode=True)
        return found
