"""A second, independent proof-bundle checker, written from the documents alone.

Sources: docs/PROOFS.md (§1–§6, §11), docs/CONSENT.md §5, docs/proofs-merkle.md (§1–§3) and
docs/proofs-smt.md (§1, §2, §5, §6). Nothing here is imported from ``ledger/``,
``node/`` or ``cli/``: only ``msgpack`` (decoding), PyNaCl (Ed25519) and ``hashlib``,
as a bank's developer would use in another language. Where the documents were not
enough to write this, they were fixed rather than this file reading the code
(tests/ledger/test_proofs_doc_independent.py runs it against the reference library).

Entry points: ``anchor_from_genesis_json`` (and ``genesis_from_json``), ``check_bundle``
(returns the verdict as a dict or raises ``CheckError``) and the primitives the test
vectors exercise (``decode_canonical``, ``verify_inclusion``, ``verify_state_proof``, ...).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any

import msgpack
import nacl.exceptions
import nacl.signing


class CheckError(Exception):
    """The bundle does not verify; ``what`` says which check failed."""

    def __init__(self, what: str) -> None:
        super().__init__(what)
        self.what = what


def H(data: bytes) -> bytes:  # noqa: N802 -- the documents' name for SHA-256
    return hashlib.sha256(data).digest()


def tagged(tag: str, body: bytes) -> bytes:
    """PROOFS.md §2: ``tag ‖ 0x00 ‖ body``."""
    return tag.encode("ascii") + b"\x00" + body


# ----------------------------------------------------------------------------- §2 encoding

MAX_TX, MAX_HEADER, MAX_OBJECT = 4 * 1024, 4 * 1024, 64 * 1024  # PROOFS.md §2 limits
MAX_VALIDATORS = 256
_IDENT = re.compile(r"[a-z0-9\-_.]{1,64}")
U64 = 1 << 64


def enc(obj: Any) -> bytes:
    """Canonical msgpack: arrays, shortest ints, ``bin`` for bytes, ``str`` for text."""
    return msgpack.packb(obj, use_bin_type=True)


def _only_allowed(obj: Any) -> None:
    if isinstance(obj, list):
        for x in obj:
            _only_allowed(x)
    elif isinstance(obj, bool | int | bytes | str):
        if isinstance(obj, int) and not isinstance(obj, bool) and not 0 <= obj < U64:
            raise CheckError("malformed: integer out of range")
    else:  # maps, floats, nil, extension types
        raise CheckError(f"malformed: {type(obj).__name__} is not used by the encoding")


def decode_canonical(data: bytes, limit: int = MAX_OBJECT) -> Any:
    """Strict decode: no trailing bytes, size limit, only arrays/uint/bool/bin/str, and
    the bytes must be the canonical re-encoding of the value."""
    if len(data) > limit:
        raise CheckError("malformed: over the size limit")
    try:
        obj = msgpack.unpackb(data, raw=False, use_list=True, strict_map_key=True, ext_hook=_no_ext)
    except CheckError:
        raise
    except Exception as exc:  # msgpack's errors: trailing data, truncation, bad UTF-8
        raise CheckError(f"malformed: {type(exc).__name__}") from None
    _only_allowed(obj)
    if enc(obj) != data:
        raise CheckError("malformed: not the canonical encoding")
    return obj


def _no_ext(code: int, data: bytes) -> Any:
    raise CheckError("malformed: extension type")


def _arr(x: Any, n: int | None, what: str) -> list[Any]:
    if not isinstance(x, list) or (n is not None and len(x) != n):
        raise CheckError(f"malformed: {what} must be an array" + (f" of {n}" if n else ""))
    return x


def _uint(x: Any, what: str) -> int:
    if type(x) is not int:  # a boolean is not an integer
        raise CheckError(f"malformed: {what} must be an unsigned integer")
    return x


def _bin(x: Any, what: str, *sizes: int) -> bytes:
    if not isinstance(x, bytes) or (sizes and len(x) not in sizes):
        raise CheckError(f"malformed: {what} must be bin" + (f" of {sizes}" if sizes else ""))
    return x


def _ident(x: Any, what: str) -> str:
    if not isinstance(x, str) or not _IDENT.fullmatch(x):
        raise CheckError(f"malformed: {what} must be an identifier")
    return x


def _increasing(xs: list[Any], what: str) -> None:
    if any(a >= b for a, b in zip(xs, xs[1:], strict=False)):
        raise CheckError(f"malformed: {what} must strictly increase")


# ----------------------------------------------------------------------------- §3–§6 objects


@dataclass(frozen=True)
class Header:
    raw: bytes
    version: int
    chain_id: str
    height: int
    time_ms: int
    tx_count: int
    tx_root: bytes
    state_root: bytes
    validator_set_hash: bytes
    next_validator_set_hash: bytes
    history_root: bytes

    @property
    def block_id(self) -> bytes:
        return H(tagged("dvp/block/v1", self.raw))


def decode_header(raw: bytes) -> Header:
    f = _arr(decode_canonical(raw, MAX_HEADER), 12, "header")
    version = _uint(f[0], "version")
    if not 1 <= version <= 0xFFFF:
        raise CheckError(f"header version {version} is outside 1..65535")
    chain_id, height = _ident(f[1], "chain_id"), _uint(f[2], "height")
    _bin(f[3], "prev_block_id", 32)
    _bin(f[5], "proposer", *((0, 32) if height == 0 else (32,)))
    return Header(
        raw,
        version,
        chain_id,
        height,
        _uint(f[4], "time_ms"),
        _uint(f[6], "tx_count"),
        *(_bin(f[i], "header hash", 32) for i in range(7, 12)),
    )


@dataclass(frozen=True)
class Certificate:
    height: int
    view: int
    block_id: bytes
    signatures: list[tuple[int, bytes]]


def decode_certificate(raw: bytes) -> Certificate:
    f = _arr(decode_canonical(raw), 4, "certificate")
    sigs = []
    if len(_arr(f[3], None, "signatures")) > MAX_VALIDATORS:
        raise CheckError("malformed: too many signatures")
    for item in f[3]:
        pair = _arr(item, 2, "signature entry")
        sigs.append((_uint(pair[0], "validator index"), _bin(pair[1], "signature", 64)))
    _increasing([i for i, _ in sigs], "certificate indexes")
    return Certificate(_uint(f[0], "height"), _uint(f[1], "view"), _bin(f[2], "block_id", 32), sigs)


@dataclass(frozen=True)
class ValidatorSet:
    raw: bytes
    keys: list[bytes]
    member_ids: list[str]

    @property
    def hash(self) -> bytes:
        return H(tagged("dvp/valset/v1", self.raw))

    @property
    def quorum(self) -> int:
        return 2 * len(self.keys) // 3 + 1


def decode_validator_set(raw: bytes) -> ValidatorSet:
    entries = [_arr(v, 2, "validator") for v in _arr(decode_canonical(raw), None, "set")]
    if len(entries) > MAX_VALIDATORS:
        raise CheckError("malformed: too many validators")
    ids = [_ident(v[0], "member_id") for v in entries]
    _increasing(ids, "validator ids")
    return ValidatorSet(raw, [_bin(v[1], "node_key", 32) for v in entries], ids)


def ed25519_ok(key: bytes, message: bytes, signature: bytes) -> bool:
    try:
        nacl.signing.VerifyKey(key).verify(message, signature)
        return True
    except (nacl.exceptions.BadSignatureError, ValueError, TypeError):
        return False


def check_certificate(header: Header, raw_cert: bytes, vs: ValidatorSet, chain_id: str) -> None:
    """PROOFS.md §4: names the block's id and height; >= quorum(n) distinct validators of
    the set in force signed; every listed signature verifies."""
    cert = decode_certificate(raw_cert)
    if cert.height != header.height or cert.block_id != header.block_id:
        raise CheckError("certificate: not for this block")
    body = enc([chain_id, cert.height, cert.view, cert.block_id])
    message = tagged("dvp/commit/v1", body)
    for index, sig in cert.signatures:
        if index >= len(vs.keys):
            raise CheckError("certificate: index outside the validator set")
        if not ed25519_ok(vs.keys[index], message, sig):
            raise CheckError("certificate: bad signature")
    if len(cert.signatures) < vs.quorum:
        raise CheckError("certificate: insufficient quorum")


@dataclass(frozen=True)
class Tx:
    raw: bytes
    chain_id: str
    sender: bytes
    kind: int
    payload: list[Any]
    signature: bytes

    @property
    def tx_id(self) -> bytes:
        return H(tagged("dvp/txid/v1", self.raw))

    def signature_ok(self) -> bool:
        # PROOFS.md §3: enc(Transaction) = 0x97 ‖ enc(body)[1:] ‖ 0xc4 0x40 ‖ signature
        body = b"\x96" + self.raw[1:-66]
        return ed25519_ok(self.sender, tagged("dvp/tx/v1", body), self.signature)


ATTEST, REVOKE, GOV_PROPOSE, GOV_VOTE = 1, 2, 3, 4
CONSENT_GRANT, CONSENT_REVOKE, ACCESS = 5, 6, 7
REVOKE_ATTESTATION = 11


def decode_tx(raw: bytes) -> Tx:
    f = _arr(decode_canonical(raw, MAX_TX), 7, "transaction")
    _uint(f[2], "nonce")
    _uint(f[3], "expiry_height")
    kind = _uint(f[4], "kind")
    payload = _arr(f[5], None, "payload")
    if kind == ATTEST:
        p = _arr(payload, 6, "ATTEST payload")
        _ident(p[0], "doc_type")
        _bin(p[1], "commitment", 32)
        issued, until = _uint(p[2], "issued_at_ms"), _uint(p[3], "valid_until_ms")
        if until and until <= issued:
            raise CheckError("malformed: valid_until_ms must be 0 or after issued_at_ms")
        _bin(p[4], "metadata_digest", 0, 32)
        _bin(p[5], "subject", 0, 32)
    elif kind == CONSENT_GRANT:
        _grant_fields(_arr(payload, 6, "CONSENT_GRANT payload"))
    elif kind == CONSENT_REVOKE:
        _bin(_arr(payload, 1, "CONSENT_REVOKE payload")[0], "grant_id", 32)
    elif kind == ACCESS:
        p = _arr(payload, 3, "ACCESS payload")
        _bin(p[0], "grant_id", 32)
        _bin(p[1], "commitment", 32)
        _ident(p[2], "purpose")
    elif kind == REVOKE:
        p = _arr(payload, 2, "REVOKE payload")
        _bin(p[0], "commitment", 32)
        _uint(p[1], "reason")
    elif kind == GOV_PROPOSE:
        p = _arr(payload, 3, "GOV_PROPOSE payload")
        _uint(p[0], "action")
        _arr(p[1], None, "args")
        _uint(p[2], "deadline_height")
    elif kind == GOV_VOTE:
        p = _arr(payload, 2, "GOV_VOTE payload")
        _bin(p[0], "proposal_id", 32)
        if not isinstance(p[1], bool):
            raise CheckError("malformed: approve must be a boolean")
    return Tx(
        raw,
        _ident(f[0], "chain_id"),
        _bin(f[1], "sender", 32),
        kind,
        payload,
        _bin(f[6], "signature", 64),
    )


def _grant_fields(p: list[Any]) -> None:
    """PROOFS.md §3: [grantee, commitments (1-16, increasing), purpose, not_before_ms,
    not_after_ms (> not_before_ms), max_uses (1-100)]."""
    _ident(p[0], "grantee")
    docs = _arr(p[1], None, "commitments")
    if not 1 <= len(docs) <= 16:
        raise CheckError("malformed: a grant names 1-16 documents")
    for c in docs:
        _bin(c, "commitment", 32)
    _increasing(docs, "grant commitments")
    _ident(p[2], "purpose")
    if _uint(p[4], "not_after_ms") <= _uint(p[3], "not_before_ms"):
        raise CheckError("malformed: not_after_ms must be after not_before_ms")
    if not 1 <= _uint(p[5], "max_uses") <= 100:
        raise CheckError("malformed: max_uses must be 1-100")


@dataclass(frozen=True)
class Record:
    issuer: str
    issuer_key: bytes
    doc_type: str
    valid_until_ms: int
    height: int
    position: int
    revoked_height: int
    revoke_reason: int
    revoke_position: int
    revoker: str
    revoker_key: bytes
    subject: bytes


def decode_record(raw: bytes) -> Record:
    """PROOFS.md §6, "The attestation record"."""
    f = _arr(decode_canonical(raw), 12, "attestation record")
    rec = Record(
        _ident(f[0], "issuer"),
        _bin(f[1], "issuer_key", 32),
        _ident(f[2], "doc_type"),
        *(_uint(f[i], "record field") for i in range(3, 9)),
        f[9],
        f[10],
        _bin(f[11], "subject", 0, 32),
    )
    if rec.revoked_height:
        _ident(rec.revoker, "revoker")
        _bin(rec.revoker_key, "revoker_key", 32)
    elif (rec.revoke_reason, rec.revoke_position, rec.revoker, rec.revoker_key) != (0, 0, "", b""):
        raise CheckError("malformed: revocation fields on a record that is not revoked")
    return rec


@dataclass(frozen=True)
class Grant:
    subject: bytes
    payload: list[Any]  # [grantee, commitments, purpose, not_before_ms, not_after_ms, max_uses]
    height: int
    position: int
    revoked_height: int
    revoke_position: int
    accesses: list[tuple[int, int, bytes]]


def decode_grant(raw: bytes) -> Grant:
    """PROOFS.md §6 "The grant record" (CONSENT.md §2.3)."""
    f = _arr(decode_canonical(raw), 12, "grant record")
    _grant_fields(f[1:7])
    accesses = []
    for item in _arr(f[11], None, "accesses"):
        a = _arr(item, 3, "access entry")
        accesses.append(
            (_uint(a[0], "height"), _uint(a[1], "position"), _bin(a[2], "member_key", 32))
        )
    if len(accesses) > f[6]:
        raise CheckError("malformed: more accesses than max_uses")
    return Grant(
        _bin(f[0], "subject", 32),
        f[1:7],
        _uint(f[7], "height"),
        _uint(f[8], "position"),
        _uint(f[9], "revoked_height"),
        _uint(f[10], "revoke_position"),
        accesses,
    )


@dataclass(frozen=True)
class Proposal:
    action: int
    args: list[Any]
    yes: list[str]
    status: int
    decided_height: int


def decode_proposal(raw: bytes) -> Proposal:
    """PROOFS.md §6: [action, args, proposer, deadline_height, [yes], [no], status,
    decided_height]."""
    f = _arr(decode_canonical(raw), 8, "proposal record")
    yes = _arr(f[4], None, "yes")
    for ids in (yes, _arr(f[5], None, "no")):
        for x in ids:
            _ident(x, "voter")
        _increasing(ids, "votes")
    _ident(f[2], "proposer")
    _uint(f[3], "deadline_height")
    return Proposal(
        _uint(f[0], "action"),
        _arr(f[1], None, "args"),
        yes,
        _uint(f[6], "status"),
        _uint(f[7], "decided_height"),
    )


def state_key(namespace: str, ident: bytes | str) -> bytes:
    """PROOFS.md §6."""
    return H(tagged("dvp/statekey/v1", enc([namespace, ident])))


def commitment(salt: bytes, file_bytes: bytes) -> bytes:
    """PROOFS.md §1 (the tag has no terminator here)."""
    return H(b"dvp/doc/v1" + salt + H(file_bytes))


_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def verification_code(salt: bytes) -> str:
    """PROOFS.md §1: salt ‖ checksum in Crockford base32, groups of four with '-'."""
    data = salt + H(b"dvp/code/v1" + salt)[:3]
    n = int.from_bytes(data, "big")
    chars = "".join(_CROCKFORD[(n >> (5 * i)) & 31] for i in reversed(range(56)))
    return "-".join(chars[i : i + 4] for i in range(0, 56, 4))


# ----------------------------------------------------------------------------- RFC 6962


def _inclusion_length(index: int, size: int) -> int:
    inner = (index ^ (size - 1)).bit_length()
    return inner + bin(index >> inner).count("1")


def verify_inclusion(
    leaf_data: bytes, index: int, size: int, path: list[bytes], root: bytes
) -> bool:
    """proofs-merkle.md §3, step by step."""
    if not (0 <= index < size < U64) or len(root) != 32 or any(len(p) != 32 for p in path):
        return False
    if len(path) != _inclusion_length(index, size):
        return False
    fn, sn = index, size - 1
    r = H(b"\x00" + leaf_data)
    for p in path:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = H(b"\x01" + p + r)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = H(b"\x01" + r + p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root


# ----------------------------------------------------------------------------- state tree

_LEAF_TAG, _NODE_TAG = b"dvp/smt/leaf/v1\x00", b"dvp/smt/node/v1\x00"
_HEX64 = re.compile(r"[0-9a-f]{64}")


def _nibble(key: bytes, i: int) -> int:
    return key[i // 2] >> 4 if i % 2 == 0 else key[i // 2] & 0x0F


def _hex32(x: Any, what: str) -> bytes:
    if not isinstance(x, str) or not _HEX64.fullmatch(x):
        raise CheckError(f"malformed: {what} must be 64 lowercase hex digits")
    return bytes.fromhex(x)


def parse_state_proof(
    doc: Any,
) -> tuple[str, list[tuple[int, list[bytes]]], bytes | None, bytes | None]:
    """proofs-smt.md §5.2 (JSON form) with the §5 structural rules."""
    if not isinstance(doc, dict) or set(doc) != {
        "terminal",
        "levels",
        "leaf_key",
        "leaf_value_hash",
    }:
        raise CheckError("malformed: state proof fields")
    terminal = doc["terminal"]
    if terminal not in ("leaf", "empty", "other_leaf"):
        raise CheckError("malformed: state proof terminal")
    if not isinstance(doc["levels"], list) or len(doc["levels"]) > 64:
        raise CheckError("malformed: state proof levels")
    levels = []
    for j, lv in enumerate(doc["levels"]):
        if not isinstance(lv, dict) or set(lv) != {"bitmap", "siblings"}:
            raise CheckError("malformed: state proof level fields")
        bitmap = lv["bitmap"]
        if type(bitmap) is not int or not 1 <= bitmap <= 0xFFFF:
            raise CheckError("malformed: bitmap")
        if not isinstance(lv["siblings"], list):
            raise CheckError("malformed: siblings")
        siblings = [_hex32(s, "sibling") for s in lv["siblings"]]
        last_empty = terminal == "empty" and j == len(doc["levels"]) - 1
        want = bin(bitmap).count("1") - (0 if last_empty else 1)
        if len(siblings) != want:
            raise CheckError("malformed: sibling count")
        levels.append((bitmap, siblings))
    if terminal == "empty":
        if doc["leaf_key"] is not None or doc["leaf_value_hash"] is not None:
            raise CheckError("malformed: an empty terminal has no leaf")
        return terminal, levels, None, None
    key, vh = _hex32(doc["leaf_key"], "leaf_key"), _hex32(doc["leaf_value_hash"], "value hash")
    if levels and bin(levels[-1][0]).count("1") < 2:
        raise CheckError("malformed: a lone leaf under a node")
    return terminal, levels, key, vh


def verify_state_proof(root: bytes, key: bytes, value: bytes | None, doc: Any) -> bool:
    """proofs-smt.md §6: does the proof show ``key`` -> ``value`` (None: absent)?"""
    try:
        terminal, levels, leaf_key, value_hash = parse_state_proof(doc)
    except CheckError:
        return False
    d = len(levels)
    cur: bytes | None
    if terminal == "leaf":
        if value is None or leaf_key != key or value_hash != H(value):
            return False
        cur = H(_LEAF_TAG + key + value_hash)
    elif terminal == "other_leaf":
        assert leaf_key is not None and value_hash is not None
        if (
            value is not None
            or leaf_key == key
            or any(_nibble(leaf_key, i) != _nibble(key, i) for i in range(d))
        ):
            return False
        cur = H(_LEAF_TAG + leaf_key + value_hash)
    else:
        if value is not None:
            return False
        if d == 0:
            return root == bytes(32)
        cur = None
    for j in range(d - 1, -1, -1):
        bitmap, siblings = levels[j]
        bit = 1 << _nibble(key, j)
        if cur is None:
            if bitmap & bit:
                return False
            children = siblings
        else:
            if not bitmap & bit:
                return False
            r = bin(bitmap & (bit - 1)).count("1")
            children = [*siblings[:r], cur, *siblings[r:]]
        cur = H(_NODE_TAG + bitmap.to_bytes(2, "big") + b"".join(children))
    return cur == root


# ----------------------------------------------------------------------------- §11 bundle


@dataclass(frozen=True)
class Anchor:
    chain_id: str
    validators: ValidatorSet


ROLES = {"validator": 1, "issuer": 2, "verifier": 3, "auditor": 4}
PARAM_DEFAULTS = {  # PROOFS.md §5: Params in order, with the defaults of a name left out
    "max_block_txs": 2000,
    "max_block_bytes": 2097152,
    "heartbeat_ms": 5000,
    "view_timeout_ms": 2000,
    "checkpoint_interval": 16,
    "pipeline_window": 4,
    "tx_ttl_heights": 1000,
    "validator_change_delay": 2,
    "max_clock_drift_ms": 10000,
    "subject_tx_limit": 20,
    "subject_window_ms": 3600000,
}
DEFAULT_PURPOSES = ["account-opening", "loan-application"]  # PROOFS.md §5


def genesis_from_json(doc: dict[str, Any]) -> list[Any]:
    """PROOFS.md §5 "From the file to Genesis": the ``Genesis`` array."""
    vs_wire = sorted([v["member_id"], bytes.fromhex(v["node_key"])] for v in doc["validators"])
    members = sorted(
        [
            m["id"],
            m["name"],
            bytes.fromhex(m["key"]),
            sorted({ROLES[r] for r in m.get("roles", [])}),
            sorted(set(m.get("doc_types", []))),
        ]
        for m in doc["members"]
    )
    params = [doc.get("params", {}).get(n, default) for n, default in PARAM_DEFAULTS.items()]
    return [
        doc["chain_id"],
        doc["genesis_time_ms"],
        members,
        vs_wire,
        sorted(set(doc["doc_types"])),
        params,
        sorted(set(doc.get("purposes", DEFAULT_PURPOSES))),
    ]


def anchor_from_genesis_json(doc: dict[str, Any]) -> tuple[Anchor, bytes]:
    """PROOFS.md §5 "The genesis file": the trust anchor and the genesis hash recomputed
    from the JSON (checked against ``genesis_hash`` when the file gives one)."""
    genesis = genesis_from_json(doc)
    genesis_hash = H(tagged("dvp/genesis/v1", enc(genesis)))
    if doc.get("genesis_hash") not in (None, genesis_hash.hex()):
        raise CheckError("genesis file: genesis_hash does not match its contents")
    return Anchor(doc["chain_id"], decode_validator_set(enc(genesis[3]))), genesis_hash


_HEX = re.compile(r"(?:[0-9a-f]{2})*")


def _hexb(x: Any, what: str) -> bytes:
    if not isinstance(x, str) or not _HEX.fullmatch(x):
        raise CheckError(f"malformed: {what} must be lowercase hex")
    return bytes.fromhex(x)


def _fields(x: Any, keys: set[str], what: str) -> dict[str, Any]:
    if not isinstance(x, dict) or set(x) != keys:
        raise CheckError(f"malformed: {what} fields")
    return x


def _header_of(raw: bytes, chain_id: str, what: str) -> Header:
    h = decode_header(raw)
    if h.chain_id != chain_id:
        raise CheckError(f"wrong chain: {what}")
    return h


def _check_included(
    inc: Any, head: Header, height: int, position: int, chain_id: str, what: str
) -> Tx:
    """PROOFS.md §11 step 4 (and 5): the transaction, its block, both proofs."""
    d = _fields(inc, {"tx", "header", "index", "tx_proof", "history_proof"}, what)
    if type(d["index"]) is not int:
        raise CheckError(f"malformed: {what}.index")
    for name in ("tx_proof", "history_proof"):
        if not isinstance(d[name], list):
            raise CheckError(f"malformed: {what}.{name}")
    tx_proof = [_hexb(h, "proof hash") for h in d["tx_proof"]]
    history_proof = [_hexb(h, "proof hash") for h in d["history_proof"]]
    tx = decode_tx(_hexb(d["tx"], f"{what}.tx"))
    if tx.chain_id != chain_id:
        raise CheckError(f"wrong chain: {what} transaction")
    if not tx.signature_ok():
        raise CheckError(f"bad signature: {what} transaction")
    block = _header_of(_hexb(d["header"], f"{what}.header"), chain_id, f"{what} header")
    if block.height != height or d["index"] != position:
        raise CheckError(f"record mismatch: {what} is not at the record's height/position")
    if not verify_inclusion(tx.tx_id, position, block.tx_count, tx_proof, block.tx_root):
        raise CheckError(f"tx root mismatch: {what}")
    if block.height == head.height:
        if block.block_id != head.block_id or history_proof:
            raise CheckError(f"history mismatch: {what} block is not the head")
    elif block.height > head.height or not verify_inclusion(
        block.block_id, block.height, head.height, history_proof, head.history_root
    ):
        raise CheckError(f"history mismatch: {what} block")
    return tx


def check_bundle(
    doc: Any, anchor: Anchor, *, now_ms: int, max_age_ms: int | None = 30_000
) -> dict[str, Any]:
    """PROOFS.md §11: the verdict for the bundle's commitment as of the verifier's clock
    ``now_ms``, or ``CheckError`` (``max_age_ms``: §11's default; None turns it off)."""
    keys = {
        "version",
        "chain_id",
        "commitment",
        "head",
        "valset_changes",
        "record",
        "state_proof",
        "attest",
        "revoke",
        "proposal",
        "consent",
    }
    d = _fields(doc, keys, "bundle")
    if type(d["version"]) is not int or d["version"] != 3:
        raise CheckError("malformed: version")
    if d["chain_id"] != anchor.chain_id:
        raise CheckError("wrong chain: bundle")
    c = _hexb(d["commitment"], "commitment")
    if len(c) != 32:
        raise CheckError("malformed: commitment")
    chain = anchor.chain_id
    head_doc = _fields(d["head"], {"header", "certificate"}, "head")
    head = _header_of(_hexb(head_doc["header"], "head.header"), chain, "head")
    # 1. validator sets from the anchor to H
    current, last = anchor.validators, -1
    sets = [(0, anchor.validators)]  # (first height it certifies, set): §11 step 1
    if not isinstance(d["valset_changes"], list):
        raise CheckError("malformed: valset_changes")
    for i, ch in enumerate(d["valset_changes"]):
        ch = _fields(ch, {"header", "certificate", "next_validators"}, "valset change")
        h = _header_of(_hexb(ch["header"], "change header"), chain, f"change {i}")
        if not last < h.height < head.height:
            raise CheckError("validator chain: changes out of order")
        if h.validator_set_hash != current.hash:
            raise CheckError("validator chain: a change is missing")
        check_certificate(h, _hexb(ch["certificate"], "change certificate"), current, chain)
        nxt = decode_validator_set(_hexb(ch["next_validators"], "next_validators"))
        if nxt.hash != h.next_validator_set_hash:
            raise CheckError("validator chain: next set does not match its header")
        current, last = nxt, h.height
        sets.append((h.height + 1, nxt))
    if head.validator_set_hash != current.hash:
        raise CheckError("validator chain: the head's set")
    check_certificate(head, _hexb(head_doc["certificate"], "head.certificate"), current, chain)
    # 2. freshness
    if max_age_ms is not None and now_ms - head.time_ms > max_age_ms:
        raise CheckError("state too old")
    # 3. state
    record_raw = None if d["record"] is None else _hexb(d["record"], "record")
    if not verify_state_proof(
        head.state_root, state_key("attestation", c), record_raw, d["state_proof"]
    ):
        raise CheckError("state root mismatch")
    verdict: dict[str, Any] = {
        "commitment": c,
        "height": head.height,
        "block_time_ms": head.time_ms,
        "head_age_ms": now_ms - head.time_ms,
        "checked_at_ms": now_ms,
        "max_age_ms": max_age_ms,
    }
    if record_raw is None:
        if any(d[k] is not None for k in ("attest", "revoke", "proposal", "consent")):
            raise CheckError("malformed: transactions in a bundle without a record")
        return {**verdict, "status": "NOT_FOUND"}
    rec = decode_record(record_raw)
    # 4. attestation
    if d["attest"] is None:
        raise CheckError("malformed: a record without its ATTEST")
    tx = _check_included(d["attest"], head, rec.height, rec.position, chain, "attest")
    if tx.kind != ATTEST or tx.payload[1] != c:
        raise CheckError("wrong commitment: ATTEST")
    if tx.sender != rec.issuer_key:
        raise CheckError("signer mismatch: ATTEST")
    if (tx.payload[0], tx.payload[3], tx.payload[5]) != (
        rec.doc_type,
        rec.valid_until_ms,
        rec.subject,
    ):
        raise CheckError("record mismatch: ATTEST")
    # 5. revocation
    if rec.revoked_height:
        _check_revocation(d, head, rec, c, chain, sets)
    elif d["revoke"] is not None or d["proposal"] is not None:
        raise CheckError("malformed: revocation parts for a record that is not revoked")
    # 6. consent (CONSENT.md §5)
    access = _check_consent(d, head, rec, c, chain)
    # 7. verdict (§6)
    if rec.revoked_height:
        status = "REVOKED"
    elif rec.valid_until_ms and now_ms >= rec.valid_until_ms:
        status = "EXPIRED"
    else:
        status = "VALID"
    return {
        **verdict,
        "status": status,
        "issuer": rec.issuer,
        "doc_type": rec.doc_type,
        "issued_at_ms": tx.payload[2],
        "valid_until_ms": rec.valid_until_ms or None,
        "attested_height": rec.height,
        "attest_tx_id": tx.tx_id,
        "revoked_height": rec.revoked_height or None,
        "revoke_reason": rec.revoke_reason if rec.revoked_height else None,
        "revoked_by": rec.revoker or None,
        "revoke_proposal": None if d["proposal"] is None else _hexb(d["proposal"]["id"], "id"),
        "access": access,
    }


def _check_consent(
    d: dict[str, Any], head: Header, rec: Record, c: bytes, chain: str
) -> dict[str, Any] | None:
    """CONSENT.md §5 steps 1-5 (PROOFS.md §11 step 6); the verdict's ``access``."""
    if not rec.subject:
        if d["consent"] is not None:
            raise CheckError("malformed: consent for a document bound to no subject")
        return None
    if d["consent"] is None:
        raise CheckError("consent missing")
    cd = _fields(
        d["consent"], {"grant_id", "record", "state_proof", "grant_tx", "access"}, "consent"
    )
    for part in ("grant_tx", "access"):  # the JSON shape (§10): malformed, not a mismatch
        x = _fields(cd[part], {"tx", "header", "index", "tx_proof", "history_proof"}, part)
        if type(x["index"]) is not int or not isinstance(x["tx_proof"], list):
            raise CheckError(f"malformed: consent.{part}")
        if not isinstance(x["history_proof"], list):
            raise CheckError(f"malformed: consent.{part}")
        for h in [x["tx"], x["header"], *x["tx_proof"], *x["history_proof"]]:
            _hexb(h, f"consent.{part}")
    if not isinstance(cd["state_proof"], dict):
        raise CheckError("malformed: consent.state_proof")
    grant_id, raw = _hexb(cd["grant_id"], "grant_id"), _hexb(cd["record"], "grant record")
    if len(grant_id) != 32:
        raise CheckError("malformed: grant_id")
    try:
        return _consent_steps(cd, head, rec, c, chain, grant_id, raw)
    except CheckError as exc:
        raise CheckError(f"consent mismatch: {exc}") from None


def _consent_steps(
    cd: dict[str, Any],
    head: Header,
    rec: Record,
    c: bytes,
    chain: str,
    grant_id: bytes,
    raw: bytes,
) -> dict[str, Any]:
    # 2. the grant record at the head's state root
    grant = decode_grant(raw)
    if not verify_state_proof(
        head.state_root, state_key("grant", grant_id), raw, cd["state_proof"]
    ):
        raise CheckError("the grant record's proof")
    # 3. the subject's own signed grant, where the record says
    gtx = _check_included(cd["grant_tx"], head, grant.height, grant.position, chain, "grant")
    if gtx.tx_id != grant_id or gtx.kind != CONSENT_GRANT:
        raise CheckError("not this grant's CONSENT_GRANT")
    if gtx.sender != grant.subject or gtx.sender != rec.subject:
        raise CheckError("the grant is not signed by the document's subject key")
    if gtx.payload != grant.payload:
        raise CheckError("the grant record is not its CONSENT_GRANT")
    # 4. the access, listed in the grant
    acc = cd["access"]
    block = decode_header(_hexb(acc["header"], "access header"))
    places = [(h, p) for h, p, _ in grant.accesses]
    if (block.height, acc["index"]) not in places:
        raise CheckError("the ACCESS is not listed in the grant")
    i = places.index((block.height, acc["index"]))
    atx = _check_included(acc, head, block.height, acc["index"], chain, "access")
    if atx.kind != ACCESS or atx.sender != grant.accesses[i][2] or i >= grant.payload[5]:
        raise CheckError("not the listed ACCESS")
    if atx.payload != [grant_id, c, grant.payload[2]] or c not in grant.payload[1]:
        raise CheckError("the ACCESS is not to this document under this grant and purpose")
    # 5. live at the access: in the window by its block's time, not revoked before it
    if not grant.payload[3] <= block.time_ms <= grant.payload[4]:
        raise CheckError("the access is outside the grant's window")
    if grant.revoked_height and (block.height, acc["index"]) > (
        grant.revoked_height,
        grant.revoke_position,
    ):
        raise CheckError("the access is after the grant's revocation")
    return {
        "grant_id": grant_id.hex(),
        "purpose": grant.payload[2],
        "grantee": grant.payload[0],
        "height": block.height,
        "time_ms": block.time_ms,
        "member_key": atx.sender.hex(),
    }


def _check_revocation(
    d: dict[str, Any],
    head: Header,
    rec: Record,
    c: bytes,
    chain: str,
    sets: list[tuple[int, ValidatorSet]],
) -> None:
    """PROOFS.md §11 step 5."""
    if d["revoke"] is None:
        raise CheckError("malformed: a revoked record without its revoking transaction")
    rtx = _check_included(d["revoke"], head, rec.revoked_height, rec.revoke_position, chain, "rv")
    if rtx.sender != rec.revoker_key:
        raise CheckError("signer mismatch: the revoking transaction")
    if rtx.kind == REVOKE:
        if rtx.payload[0] != c:
            raise CheckError("wrong commitment: REVOKE")
        if rtx.payload[1] != rec.revoke_reason:
            raise CheckError("record mismatch: REVOKE reason")
        if rec.revoker != rec.issuer:
            raise CheckError("signer mismatch: REVOKE by another member")
        if d["proposal"] is not None:
            raise CheckError("malformed: a proposal with an issuer's REVOKE")
        return
    if rtx.kind not in (GOV_VOTE, GOV_PROPOSE):
        raise CheckError("record mismatch: not a revoking transaction")
    if d["proposal"] is None:
        raise CheckError("malformed: a governance revocation without its proposal")
    pd = _fields(d["proposal"], {"id", "record", "state_proof"}, "proposal")
    pid = _hexb(pd["id"], "proposal.id")
    raw = _hexb(pd["record"], "proposal.record")
    if len(pid) != 32:
        raise CheckError("malformed: proposal.id")
    prop = decode_proposal(raw)
    if not verify_state_proof(head.state_root, state_key("proposal", pid), raw, pd["state_proof"]):
        raise CheckError("state root mismatch: proposal")
    if rtx.kind == GOV_VOTE:
        decides = rtx.payload[0] == pid and rtx.payload[1] is True
    else:
        decides = rtx.tx_id == pid
    if not decides:
        raise CheckError("governance mismatch: not a yes vote on the proposal")
    if (
        prop.action != REVOKE_ATTESTATION
        or prop.args != [c, rec.revoke_reason]
        or prop.status != 1
        or prop.decided_height != rec.revoked_height
    ):
        raise CheckError("governance mismatch: not this approved revocation")
    in_force = [vs for start, vs in sets if start <= rec.revoked_height]
    if not in_force:
        raise CheckError("governance mismatch: no known validator set at the decision")
    members = set(in_force[-1].member_ids)
    yes = members.intersection(prop.yes)
    if len(yes) < in_force[-1].quorum:
        raise CheckError("governance mismatch: too few yes votes")
    if rec.revoker not in yes:
        raise CheckError("signer mismatch: the revoker is not a counted yes voter")
