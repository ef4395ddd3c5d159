"""A small consortium (genesis, keys, helpers to sign and certify) for ledger tests."""

from __future__ import annotations

from dataclasses import dataclass, field

from ledger.chain import Ledger
from ledger.codec import Domain
from ledger.crypto import KeyPair
from ledger.transaction import Access, ConsentGrant, ConsentRevoke
from ledger.types import (
    Attest,
    Block,
    ChainParams,
    CommitCertificate,
    Genesis,
    Member,
    Payload,
    Role,
    Transaction,
    Validator,
    ValidatorSet,
    commit_vote_body,
)

CHAIN_ID = "dvp-test"
GENESIS_TIME_MS = 1_760_000_000_000
DOC_TYPES = ("bank-statement", "credit-report")


def _key(tag: str) -> KeyPair:
    import hashlib

    return KeyPair.from_seed(hashlib.sha256(tag.encode()).digest())


@dataclass
class Consortium:
    """The demo consortium: four validator members, one of them an issuer."""

    member_keys: dict[str, KeyPair] = field(default_factory=dict)
    node_keys: dict[str, KeyPair] = field(default_factory=dict)
    genesis: Genesis = None  # type: ignore[assignment]
    nonce: int = 0

    @classmethod
    def make(
        cls, params: ChainParams | None = None, n_validators: int = 4, n_members: int = 0
    ) -> Consortium:
        """``n_validators`` of the members run validators; past the seven named members
        the rest are ``inst008``, ``inst009``, ... (``n_members``: at least that many
        members, the ones past the validators running none)."""
        c = cls()
        names = ["cnix", "hkbank", "szcredit", "webank", "bochk", "icbc", "citic"]
        count = max(4, n_validators, n_members)
        names = (names + [f"inst{i:03d}" for i in range(len(names) + 1, count + 1)])[:count]
        members = []
        validators = []
        for name in sorted(names):
            c.member_keys[name] = _key("member/" + name)
            c.node_keys[name] = _key("node/" + name)
            roles = [int(Role.VALIDATOR)] if name in names[:n_validators] else []
            docs: tuple[str, ...] = ()
            if name == "szcredit":
                roles.append(int(Role.ISSUER))
                docs = DOC_TYPES
            if name == "hkbank":
                roles.append(int(Role.VERIFIER))
            members.append(
                Member(
                    name, name.upper(), c.member_keys[name].public_key, tuple(sorted(roles)), docs
                )
            )
            if name in names[:n_validators]:
                validators.append(Validator(name, c.node_keys[name].public_key))
        c.genesis = Genesis(
            CHAIN_ID,
            GENESIS_TIME_MS,
            tuple(members),
            ValidatorSet.of(validators),
            DOC_TYPES,
            params or ChainParams(),
        )
        return c

    def tx(
        self, member: str, payload: Payload, expiry_height: int = 500, key: KeyPair | None = None
    ) -> Transaction:
        self.nonce += 1
        k = key or self.member_keys[member]
        return Transaction(CHAIN_ID, k.public_key, self.nonce, expiry_height, payload).signed(k)

    def attest(
        self,
        commitment: bytes,
        doc_type: str = "credit-report",
        member: str = "szcredit",
        valid_until_ms: int = 0,
    ) -> Transaction:
        return self.tx(member, Attest(doc_type, commitment, GENESIS_TIME_MS, valid_until_ms))

    # -- consent (docs/CONSENT.md) ---------------------------------------------
    @staticmethod
    def subject(tag: str) -> KeyPair:
        """A data subject's key for one document (deterministic per ``tag``)."""
        return _key("subject/" + tag)

    def bound_attest(
        self, commitment: bytes, subject: KeyPair, doc_type: str = "credit-report"
    ) -> Transaction:
        """An ATTEST by szcredit binding ``commitment`` to ``subject``'s key."""
        payload = Attest(doc_type, commitment, GENESIS_TIME_MS, 0, b"", subject.public_key)
        return self.tx("szcredit", payload)

    def grant(
        self,
        subject: KeyPair,
        commitments: tuple[bytes, ...],
        *,
        grantee: str = "hkbank",
        purpose: str = "loan-application",
        not_before_ms: int = GENESIS_TIME_MS,
        not_after_ms: int = GENESIS_TIME_MS + 86_400_000,
        max_uses: int = 3,
        expiry_height: int = 500,
    ) -> Transaction:
        """A CONSENT_GRANT signed by ``subject``; its id is the grant id."""
        payload = ConsentGrant(
            grantee, tuple(sorted(commitments)), purpose, not_before_ms, not_after_ms, max_uses
        )
        return self.tx("", payload, expiry_height, key=subject)

    def revoke_grant(self, subject: KeyPair, grant_id: bytes) -> Transaction:
        return self.tx("", ConsentRevoke(grant_id), key=subject)

    def access(
        self,
        grant_id: bytes,
        commitment: bytes,
        member: str = "hkbank",
        purpose: str = "loan-application",
    ) -> Transaction:
        """An ACCESS signed by ``member``'s key."""
        return self.tx(member, Access(grant_id, commitment, purpose))

    def certify(
        self,
        block: Block,
        view: int = 0,
        signers: list[str] | None = None,
        validators: ValidatorSet | None = None,
    ) -> CommitCertificate:
        vs = validators or self.genesis.validators
        body = commit_vote_body(CHAIN_ID, block.height, view, block.block_id)
        keys = {k.public_key: k for k in self.node_keys.values()}
        sigs = []
        for i, v in enumerate(vs.validators):
            if signers is not None and v.member_id not in signers:
                continue
            sigs.append((i, keys[v.node_key].sign(Domain.COMMIT, body)))
            if signers is None and len(sigs) == vs.quorum:
                break
        return CommitCertificate(block.height, view, block.block_id, tuple(sigs))

    @property
    def proposer(self) -> bytes:
        return self.node_keys["cnix"].public_key

    def commit(self, lg: Ledger, txs: list[Transaction]) -> int:
        """Build a block of ``txs`` on ``lg`` (all must be valid), certify it by the
        validator set in force and commit it; returns its height."""
        ex = lg.build(txs, time_ms=lg.tip.time_ms + 1000, proposer=self.proposer)
        assert not ex.rejected, ex.rejected
        lg.commit(ex.block, self.certify(ex.block, validators=lg.validators_at(ex.height)))
        return ex.height
