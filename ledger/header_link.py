"""One certified header's link to the header before it: the checks made by whoever
trusts a chain of headers from genesis without re-executing its blocks — the state-sync
importer (``ledger.state_snapshot``) and the auditor of a pruned store
(``ledger.audit_snapshot``). Each turns a ``LinkFailure`` into its own error.
"""

from __future__ import annotations

from ledger.errors import DecodeError, ValidationError
from ledger.state import AppMeta
from ledger.types import BlockHeader, CommitCertificate


class LinkFailure(Exception):
    """``kind`` (an audit check name: chain_link, validator_set, store_integrity,
    certificate, history_consistency) failed at ``height``, for the reason given."""

    def __init__(self, kind: str, height: int, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.height = height
        self.message = message


def check_link(
    chain_id: str,
    prev: BlockHeader,
    prev_meta: AppMeta,
    header: BlockHeader,
    cert: CommitCertificate,
    history_root: bytes,
) -> None:
    """``header`` follows ``prev`` on chain ``chain_id``: height, parent id, the validator
    set ``prev`` named — which ``prev_meta``'s chain record must hold — certifies it with
    ``cert``, and its history root is ``history_root`` (that of blocks 0..prev)."""
    h = prev.height + 1
    if header.chain_id != chain_id or header.height != h:
        raise LinkFailure("chain_link", h, f"header {h} names another chain or height")
    if header.prev_block_id != prev.block_id:
        raise LinkFailure("chain_link", h, f"header {h} does not link to block {h - 1}'s id")
    if header.validator_set_hash != prev.next_validator_set_hash:
        raise LinkFailure(
            "validator_set", h, f"header {h}'s validator set is not the one {h - 1} named"
        )
    validators = prev_meta.chain.validators_at(h)
    if validators.hash != header.validator_set_hash:
        raise LinkFailure(
            "store_integrity",
            h - 1,
            f"the chain record of height {h - 1} does not hold the set header {h} names",
        )
    try:
        if cert.height != h:
            raise ValidationError("the certificate names another height")
        cert.verify(chain_id, validators, header.block_id)
    except (ValidationError, DecodeError) as exc:
        raise LinkFailure("certificate", h, f"the certificate does not verify: {exc}") from None
    if header.history_root != history_root:
        raise LinkFailure(
            "history_consistency", h, f"header {h}'s history root is not that of the block ids"
        )
