"""What an audit says: its checks, its failures and its report.

Part of ``ledger.audit`` (the public entry point, which re-exports this module's names;
the auditor's rules are in its docstring). This module owns ``CHECKS`` (the checks a
failure can name, in the order a block meets them), ``AuditFailure`` (the verdict
against a chain), ``SourceUnavailable``/``SourceRefused`` (no verdict: the source could
not be read), ``AuditProgress`` and ``AuditReport``, and ``rule_failure``: a refused
transaction as a failure, an ACCESS named by who used which grant (docs/CONSENT.md §7).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ledger.errors import RuleError
from ledger.transaction import Access, TxKind
from ledger.types import Block, CommitCertificate, Transaction

#: The checks a failure can name, in the order a block meets them.
CHECKS = (
    "store_integrity",  # the source's stored bytes are damaged (CRC seal, LevelDB
    # checksum) or disagree with what re-execution produced
    "decode",  # bytes that are not the canonical encoding of a block/certificate
    "genesis",  # block 0 is not the block the genesis file defines
    "chain_link",  # chain id, height or prev_block_id does not follow the parent
    "certificate",  # no quorum of valid signatures of the validator set in force
    "protocol_version",  # the header's version is not the one in force at its height,
    # or this auditor's build does not speak it (upgrade the auditor)
    "signature",  # a transaction signature does not verify
    "rules",  # a transaction or block breaks a rule of PROOFS.md §9
    "tx_root",  # header tx_count / tx_root differ from the transactions
    "state_root",  # header state_root differs from re-execution
    "validator_set",  # header (next_)validator_set_hash differ from re-execution
    "history_root",  # header history_root differs from the re-derived block ids
    "history_consistency",  # first and last headers' history roots are not consistent
    "state_tree",  # the source's stored state tree does not hash to its roots
)

# RuleError codes of ledger.chain / ledger.state that have a check of their own; every
# other code is a state rule ("rules"). Block-level chain id, height and parent are
# checked before Ledger.commit, so "wrong_chain" from there is a transaction's.
_RULE_CHECKS = {
    "bad_certificate": "certificate",
    "bad_signature": "signature",
    "bad_tx_count": "tx_root",
    "bad_tx_root": "tx_root",
    "bad_state_root": "state_root",
    "bad_validator_set_hash": "validator_set",
    "bad_next_validator_set_hash": "validator_set",
    "bad_history_root": "history_root",
    "bad_height": "chain_link",
    "bad_parent": "chain_link",
    "wrong_version": "protocol_version",
}

#: Codes by which the rule book refuses an ACCESS for its grant (docs/CONSENT.md §4):
#: the grant was not live, or does not cover this access.
_NOT_LIVE = frozenset({"grant_revoked", "grant_not_yet_valid", "grant_expired", "grant_used_up"})
_NOT_COVERED = frozenset({"no_grant", "wrong_grantee", "not_in_grant", "wrong_purpose"})


def rule_failure(
    height: int,
    err: RuleError,
    block: Block | None = None,
    key_index: Mapping[bytes, str] | None = None,
) -> AuditFailure:
    """The failure for a block that strict execution refused with ``err``. An ACCESS
    refused for its grant is named: who (the member whose key signed, from
    ``key_index``), which grant, and why it had no live grant at that block."""
    check = _RULE_CHECKS.get(err.code, "rules")
    message = f"{err.code}: {err.message}"
    tx = None
    if block is not None and err.tx_id:
        tx = next((t for t in block.txs if t.tx_id == err.tx_id), None)
    if tx is not None and isinstance(tx.payload, Access) and err.code in _NOT_LIVE | _NOT_COVERED:
        who = (key_index or {}).get(tx.sender) or f"key {tx.sender.hex()[:16]}"
        why = "without a live grant" if err.code in _NOT_LIVE else "outside its grant"
        message = (
            f"access by {who} under grant {tx.payload.grant_id.hex()[:16]} {why} "
            f"at block {height}: {message}"
        )
    return AuditFailure(height, check, message)


#: A source yields, in height order from 0: (height, block, certificate or None at 0).
SourceItem = tuple[int, Block, CommitCertificate | None]


class AuditFailure(Exception):
    """The first thing wrong with the chain: at ``height``, ``check`` (one of CHECKS)."""

    def __init__(self, height: int, check: str, message: str) -> None:
        assert check in CHECKS, check
        super().__init__(f"height {height}: {check}: {message}")
        self.height = height
        self.check = check
        self.message = message

    def to_json(self) -> dict[str, Any]:
        return {"height": self.height, "check": self.check, "message": self.message}


class SourceUnavailable(Exception):
    """The source cannot be read at all (not a finding about the chain)."""


class SourceRefused(SourceUnavailable):
    """The source answered but refused to serve us (e.g. no or insufficient credentials)."""


class SourcePruned(SourceUnavailable):
    """The source pruned block bodies the replay needs (a node with ``[ledger]
    retain_blocks``, RPC error -32006): replay against an archive node."""


_UNAUTHORISED = -32002  # JSON-RPC error code of a refused credential (docs/RPC.md)
_PRUNED = -32006  # JSON-RPC error code of a pruned block body (docs/RPC.md)


def _unavailable(what: str, exc: BaseException) -> SourceUnavailable:
    code = getattr(exc, "code", None)
    cls: type[SourceUnavailable] = SourceUnavailable
    if code == _UNAUTHORISED:
        cls = SourceRefused
    elif code == _PRUNED:
        cls = SourcePruned
    return cls(f"{what}: {exc}")


@dataclass(frozen=True)
class AuditProgress:
    """Where an audit is. ``phase`` "replay": ``done`` of ``total`` blocks replayed, up
    to ``height``, ``transactions`` so far. ``phase`` "state_tree": ``done`` of
    ``total`` state versions verified (``height`` the version being walked),
    ``transactions`` the entries of the newest version counted so far. ``phase``
    "headers" (a pruned store, ledger/audit_snapshot.py): ``done`` of ``total``
    certified headers verified up to the snapshot."""

    phase: str
    height: int
    done: int
    total: int
    transactions: int
    elapsed_s: float


ProgressFn = Callable[[AuditProgress], None]


@dataclass
class AuditReport:
    """What a replay verified, or the first failure (``failure``) and what came before it."""

    blocks: int = 0  # blocks verified, genesis included (heights 0..height)
    transactions: int = 0
    height: int = -1  # last verified height
    elapsed_s: float = 0.0
    head_block_id: bytes = b""
    state_root: bytes = b""
    state_entries: int | None = None  # entries of the source's verified state tree
    state_versions: int | None = None  # state versions whose roots were verified
    failure: AuditFailure | None = None
    notes: list[str] = field(default_factory=list)
    # Consent transactions in the verified blocks (docs/CONSENT.md §7): each re-executed
    # with the rule book, so each access was checked against a live grant.
    grants: int = 0
    grant_revocations: int = 0
    accesses: int = 0

    def count_consent(self, txs: Iterable[Transaction]) -> None:
        """Count the consent transactions of a verified block."""
        for tx in txs:
            kind = tx.kind
            if kind == TxKind.CONSENT_GRANT:
                self.grants += 1
            elif kind == TxKind.CONSENT_REVOKE:
                self.grant_revocations += 1
            elif kind == TxKind.ACCESS:
                self.accesses += 1

    @property
    def ok(self) -> bool:
        return self.failure is None

    @property
    def tx_per_s(self) -> float:
        return self.transactions / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "blocks": self.blocks,
            "transactions": self.transactions,
            "height": self.height,
            "seconds": round(self.elapsed_s, 3),
            "tx_per_s": round(self.tx_per_s, 1),
            "head_block_id": self.head_block_id.hex(),
            "state_root": self.state_root.hex(),
            "state_entries": self.state_entries,
            "state_versions": self.state_versions,
            "consent": {
                "grants": self.grants,
                "revocations": self.grant_revocations,
                "accesses": self.accesses,
            },
            "failure": None if self.failure is None else self.failure.to_json(),
            "notes": list(self.notes),
        }
