"""Ledger data types: transactions, blocks, certificates, validator sets, genesis.

Each type is a frozen dataclass with ``to_wire()`` (a plain value tree), ``encode()``
(canonical bytes, see ``ledger.codec``) and ``decode(bytes)`` / ``from_wire(obj)``
that raise only ``DecodeError``. ``validate_basic()`` performs the stateless checks
(signatures, ranges); checks that need chain state live in ``ledger.state``.
Field order in ``to_wire`` *is* the wire format documented in docs/PROOFS.md.

This module is the public entry point of the ledger types and re-exports what its parts
own: ledger/types_base.py (limits, ``tx_id_of``, identifiers, ``Role``),
ledger/transaction.py (``Transaction`` and its payloads), ledger/consortium.py
(validators, members, chain parameters, genesis) and ledger/block.py (block headers,
blocks, commit certificates). Import from here.
"""

from __future__ import annotations

from ledger.block import (
    Block,
    BlockHeader,
    CertificateSignatureError,
    CertifiedBlock,
    CommitCertificate,
    QuorumError,
    commit_vote_body,
    split_block,
)
from ledger.consortium import (
    ChainParams,
    Genesis,
    Member,
    Validator,
    ValidatorSet,
    max_faulty,
    quorum_size,
)
from ledger.transaction import (
    GOV_ARGS,
    Attest,
    GovAction,
    GovPropose,
    GovVote,
    Payload,
    Revoke,
    RevokeReason,
    Transaction,
    TxKind,
)
from ledger.types_base import (
    MAX_BLOCK_BYTES,
    MAX_BLOCK_TXS,
    MAX_MEMBERS,
    MAX_NAME,
    MAX_TX_BYTES,
    MAX_VALIDATORS,
    ZERO_HASH,
    Role,
    cached_property,
    check_identifier,
    tx_id_of,
)

__all__ = [
    "Attest",
    "Block",
    "BlockHeader",
    "CertificateSignatureError",
    "CertifiedBlock",
    "ChainParams",
    "CommitCertificate",
    "GOV_ARGS",
    "Genesis",
    "GovAction",
    "GovPropose",
    "GovVote",
    "MAX_BLOCK_BYTES",
    "MAX_BLOCK_TXS",
    "MAX_MEMBERS",
    "MAX_NAME",
    "MAX_TX_BYTES",
    "MAX_VALIDATORS",
    "Member",
    "Payload",
    "QuorumError",
    "Revoke",
    "RevokeReason",
    "Role",
    "Transaction",
    "TxKind",
    "Validator",
    "ValidatorSet",
    "ZERO_HASH",
    "cached_property",
    "check_identifier",
    "commit_vote_body",
    "max_faulty",
    "quorum_size",
    "split_block",
    "tx_id_of",
]
