"""Conformance vectors only a dishonest quorum could serve (docs/CONFORMANCE.md, "Forged
heads"): bundles whose head is re-certified by the validator set in force, over a state
tree that holds records the rules would never have written -- an ATTEST attributed to a
key that did not sign it, a REVOKE by a member other than the issuer, a governance
revocation with too few yes votes. Every proof in them verifies; what a verifier must
catch is that the certified records and the signed transactions disagree.

A forged head keeps the honest head's height, time and history root (so every
inclusion proof still holds) and gets a state root of a fresh tree holding just the
bundle's records, re-proven. Used by tests/support/conformance.py.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import replace
from types import SimpleNamespace
from typing import Any, cast

from ledger import merkle
from ledger.block import Block, BlockHeader
from ledger.consent_records import AccessEntry, GrantRecord, grant_key
from ledger.records import AttestationRecord, ProposalRecord, attestation_key, proposal_key
from ledger.smt import SparseMerkleTree
from ledger.smt_storage import MemoryNodeStore
from ledger.testchain import Consortium
from ledger.transaction import Transaction
from ledger.types import ValidatorSet

Records = tuple[AttestationRecord, ProposalRecord | None]
# (name, base bundle, what is forged, change to the records or the bundle, expected reason)
Forgery = tuple[str, str, str, Callable[[Records, dict[str, Any]], Records], str]


def _records(doc: dict[str, Any]) -> Records:
    rec = AttestationRecord.decode(bytes.fromhex(doc["record"]))
    prop = doc["proposal"]
    return rec, None if prop is None else ProposalRecord.decode(bytes.fromhex(prop["record"]))


def forge(
    cons: Consortium, doc: dict[str, Any], change: Callable[[Records, dict[str, Any]], Records]
) -> dict[str, Any]:
    """``doc`` with its records replaced by ``change``'s and its head re-certified over
    a tree of just those records. ``change`` may also edit the copy it is given."""
    d = copy.deepcopy(doc)
    rec, prop = change(_records(doc), d)
    commitment = bytes.fromhex(d["commitment"])
    entries = {attestation_key(commitment): rec.encode()}
    if prop is not None:
        entries[proposal_key(bytes.fromhex(d["proposal"]["id"]))] = prop.encode()
    consent = d.get("consent")
    if consent is not None:  # the grant record as ``change`` left it in the copy
        entries[grant_key(bytes.fromhex(consent["grant_id"]))] = bytes.fromhex(consent["record"])
    store = MemoryNodeStore()
    tree = SparseMerkleTree(store)
    result = tree.update(None, 1, entries)
    store.apply(result)
    d["record"] = rec.encode().hex()
    d["state_proof"] = tree.get_with_proof(attestation_key(commitment), 1)[1].to_json()
    if prop is not None:
        key = proposal_key(bytes.fromhex(d["proposal"]["id"]))
        d["proposal"]["record"] = prop.encode().hex()
        d["proposal"]["state_proof"] = tree.get_with_proof(key, 1)[1].to_json()
    if consent is not None:
        key = grant_key(bytes.fromhex(consent["grant_id"]))
        consent["state_proof"] = tree.get_with_proof(key, 1)[1].to_json()
    head = replace(BlockHeader.decode(bytes.fromhex(d["head"]["header"])), state_root=result.root)
    changes = d["valset_changes"]
    validators = (
        ValidatorSet.decode(bytes.fromhex(changes[-1]["next_validators"]))
        if changes
        else cons.genesis.validators
    )
    block = cast(Block, SimpleNamespace(height=head.height, block_id=head.block_id))
    cert = cons.certify(block, validators=validators)
    d["head"] = {"header": head.encode().hex(), "certificate": cert.encode().hex()}
    return d


def forgeries(cons: Consortium, bundles: dict[str, Any]) -> list[Forgery]:
    other_key = cons.member_keys["cnix"].public_key

    def attest_elsewhere(r: Records, d: dict[str, Any]) -> Records:
        # The ATTEST of another commitment of the same block, at the position the record
        # now names: it is in the chain, signed, at the right place -- for the wrong file.
        d["attest"] = copy.deepcopy(bundles["revoked_by_issuer"]["attest"])
        return r[0]._replace(position=d["attest"]["index"]), r[1]

    def yes_only_revoker(r: Records, d: dict[str, Any]) -> Records:
        assert r[1] is not None
        return r[0], replace(r[1], yes=(r[0].revoker,))

    def other_reason(r: Records, d: dict[str, Any]) -> Records:
        assert r[1] is not None
        commitment, reason = r[1].args
        return r[0], replace(r[1], args=(commitment, reason + 1))

    def rejected(r: Records, d: dict[str, Any]) -> Records:
        assert r[1] is not None
        return r[0], replace(r[1], status=2)  # decided at the same height, but rejected

    def under_another_id(r: Records, d: dict[str, Any]) -> Records:
        # The very record, at another proposal's key: the vote carried decides another.
        d["proposal"]["id"] = "ab" * 32
        return r

    return [
        *consent_forgeries(cons, bundles),
        (
            "attest-signer",
            "valid",
            "the record's issuer key (another member's)",
            lambda r, d: (r[0]._replace(issuer_key=other_key), r[1]),
            "signer_mismatch",
        ),
        (
            "attest-commitment",
            "valid",
            "the record's position (pointing at the ATTEST of another commitment)",
            attest_elsewhere,
            "wrong_commitment",
        ),
        (
            "revoke-by-other-member",
            "revoked_by_issuer",
            "the record's revoker (a member that is not the issuer)",
            lambda r, d: (r[0]._replace(revoker="cnix"), r[1]),
            "signer_mismatch",
        ),
        (
            "revoke-signer",
            "revoked_by_issuer",
            "the record's revoker key (not the REVOKE's signer)",
            lambda r, d: (r[0]._replace(revoker_key=other_key), r[1]),
            "signer_mismatch",
        ),
        (
            "revoke-reason",
            "revoked_by_issuer",
            "the record's revocation reason (not the REVOKE's)",
            lambda r, d: (r[0]._replace(revoke_reason=r[0].revoke_reason + 1), r[1]),
            "record_mismatch",
        ),
        (
            "governance-too-few-votes",
            "revoked_by_governance",
            "the proposal's yes votes (only the deciding voter's)",
            yes_only_revoker,
            "governance_mismatch",
        ),
        (
            "governance-reason",
            "revoked_by_governance",
            "the proposal's reason (not the record's)",
            other_reason,
            "governance_mismatch",
        ),
        (
            "governance-rejected",
            "revoked_by_governance",
            "the proposal's status (rejected)",
            rejected,
            "governance_mismatch",
        ),
        (
            "governance-vote-on-another-proposal",
            "revoked_by_governance",
            "the proposal's id (the vote carried is on another proposal)",
            under_another_id,
            "governance_mismatch",
        ),
        (
            "governance-revoker-not-voter",
            "revoked_by_governance",
            "the record's revoker (a member outside the validator set at the decision)",
            lambda r, d: (r[0]._replace(revoker="webank"), r[1]),
            "signer_mismatch",
        ),
    ]


def _grant(
    change: Callable[[GrantRecord], GrantRecord],
) -> Callable[[Records, dict[str, Any]], Records]:
    """A forgery of the consent part's grant record (the attestation's records kept)."""

    def apply(r: Records, d: dict[str, Any]) -> Records:
        rec = GrantRecord.decode(bytes.fromhex(d["consent"]["record"]))
        d["consent"]["record"] = change(rec).encode().hex()
        return r

    return apply


def _too_many(g: GrantRecord) -> GrantRecord:
    """The access listed after ``max_uses`` others: a record no decoder accepts."""
    filler = AccessEntry(1, 0, g.accesses[0].member_key)
    return g._replace(accesses=(filler,) * g.max_uses + g.accesses)


def consent_forgeries(cons: Consortium, bundles: dict[str, Any]) -> list[Forgery]:
    other_key = cons.member_keys["cnix"].public_key
    bound = "bound_with_access"
    access_height = (
        GrantRecord.decode(bytes.fromhex(bundles[bound]["consent"]["record"])).accesses[0].height
    )
    return [
        (
            "attest-subject",
            bound,
            "the attestation record's subject key (not the one the ATTEST binds)",
            lambda r, d: (r[0]._replace(subject=other_key), r[1]),
            "record_mismatch",
        ),
        (
            "attest-unbound",
            bound,
            "the attestation record's subject (removed: the ATTEST binds one)",
            lambda r, d: (r[0]._replace(subject=b""), r[1]),
            "record_mismatch",
        ),
        (
            "consent-grant-subject",
            bound,
            "the grant record's subject (another key than the CONSENT_GRANT's signer)",
            _grant(lambda g: g._replace(subject=other_key)),
            "consent_mismatch",
        ),
        (
            "consent-grant-fields",
            bound,
            "the grant record's purpose (not the signed CONSENT_GRANT's)",
            _grant(lambda g: g._replace(purpose="account-opening")),
            "consent_mismatch",
        ),
        (
            "consent-access-not-listed",
            bound,
            "the grant record's accesses (none: the ACCESS is not among them)",
            _grant(lambda g: g._replace(accesses=())),
            "consent_mismatch",
        ),
        (
            "consent-access-other-member-key",
            bound,
            "the member key the grant record lists for the access (not the ACCESS's signer)",
            _grant(lambda g: g._replace(accesses=(g.accesses[0]._replace(member_key=other_key),))),
            "consent_mismatch",
        ),
        (
            "consent-access-past-max-uses",
            bound,
            "the grant record's accesses (the access listed after max_uses others)",
            _grant(_too_many),
            "consent_mismatch",
        ),
        (
            "consent-access-after-revocation",
            bound,
            "the grant record's revocation (a block before the access)",
            _grant(lambda g: g._replace(revoked_height=access_height - 1, revoke_position=0)),
            "consent_mismatch",
        ),
    ]


def forge_access_block(
    cons: Consortium, block_ids: list[bytes], doc: dict[str, Any], access: Transaction, time_ms: int
) -> dict[str, Any]:
    """``doc`` (a bound bundle) re-served by a dishonest quorum that certified a block the
    rules would refuse: after the honest head, a block of time ``time_ms`` holding just
    ``access`` (an ACCESS by hkbank, validly signed), then a head over a state whose grant
    record lists it. Every proof and signature holds; only the consent rules (the grant's
    window, its purpose) can catch it. ``block_ids``: the honest chain's, 0..head."""
    d = copy.deepcopy(doc)
    honest = BlockHeader.decode(bytes.fromhex(d["head"]["header"]))
    assert len(block_ids) == honest.height + 1
    validators = (
        ValidatorSet.decode(bytes.fromhex(d["valset_changes"][-1]["next_validators"]))
        if d["valset_changes"]
        else cons.genesis.validators
    )
    history = merkle.MerkleTree(merkle.leaf_hash(b) for b in block_ids)
    block = replace(
        honest,
        height=honest.height + 1,
        prev_block_id=block_ids[-1],
        time_ms=time_ms,
        tx_count=1,
        tx_root=merkle.leaf_hash(access.tx_id),
        history_root=history.root(),
    )
    history.append(merkle.leaf_hash(block.block_id))
    grant = GrantRecord.decode(bytes.fromhex(d["consent"]["record"]))
    entry = AccessEntry(block.height, 0, access.sender)
    grant = grant._replace(accesses=(entry,))
    commitment = bytes.fromhex(d["commitment"])
    gkey = grant_key(bytes.fromhex(d["consent"]["grant_id"]))
    store = MemoryNodeStore()
    tree = SparseMerkleTree(store)
    result = tree.update(
        None,
        1,
        {attestation_key(commitment): bytes.fromhex(d["record"]), gkey: grant.encode()},
    )
    store.apply(result)
    head = replace(
        block,
        height=block.height + 1,
        prev_block_id=block.block_id,
        time_ms=honest.time_ms,
        tx_count=0,
        tx_root=merkle.EMPTY_ROOT,
        state_root=result.root,
        history_root=history.root(),
    )
    size = head.height

    def reprove(part: dict[str, Any]) -> None:
        height = BlockHeader.decode(bytes.fromhex(part["header"])).height
        part["history_proof"] = [h.hex() for h in history.inclusion_proof(height, size)]

    reprove(d["attest"])
    reprove(d["consent"]["grant_tx"])
    d["consent"]["access"] = {
        "tx": access.encode().hex(),
        "header": block.encode().hex(),
        "index": 0,
        "tx_proof": [],
        "history_proof": [h.hex() for h in history.inclusion_proof(block.height, size)],
    }
    d["consent"]["record"] = grant.encode().hex()
    d["consent"]["state_proof"] = tree.get_with_proof(gkey, 1)[1].to_json()
    d["state_proof"] = tree.get_with_proof(attestation_key(commitment), 1)[1].to_json()
    cert = cons.certify(cast(Block, head), validators=validators)
    d["head"] = {"header": head.encode().hex(), "certificate": cert.encode().hex()}
    return d
