"""Hypothesis strategies for ledger types (shared by the ledger test modules)."""

from __future__ import annotations

from hypothesis import strategies as st

from ledger.crypto import KeyPair
from ledger.types import (
    Attest,
    BlockHeader,
    ChainParams,
    CommitCertificate,
    GovAction,
    GovPropose,
    GovVote,
    Member,
    Revoke,
    RevokeReason,
    Role,
    Transaction,
    Validator,
    ValidatorSet,
)

KEYS = [KeyPair.from_seed(bytes([i]) * 32) for i in range(1, 8)]

idents = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_.", min_size=1, max_size=20)
hashes = st.binary(min_size=32, max_size=32)
u64 = st.integers(min_value=0, max_value=2**64 - 1)
small = st.integers(min_value=0, max_value=10**13)


@st.composite
def attests(draw: st.DrawFn) -> Attest:
    issued = draw(small)
    until = draw(st.one_of(st.just(0), st.integers(issued + 1, issued + 10**12)))
    return Attest(draw(idents), draw(hashes), issued, until, draw(st.one_of(st.just(b""), hashes)))


revokes = st.builds(Revoke, hashes, st.sampled_from(list(RevokeReason)))
votes = st.builds(GovVote, hashes, st.booleans())


@st.composite
def proposals(draw: st.DrawFn) -> GovPropose:
    action = draw(st.sampled_from(list(GovAction)))
    from ledger.types import GOV_ARGS

    args = []
    for kind in GOV_ARGS[action]:
        if kind == "id":
            args.append(draw(idents))
        elif kind == "name":
            args.append(draw(st.text(min_size=1, max_size=30)))
        elif kind in ("key", "hash"):
            args.append(draw(hashes))
        elif kind == "int":
            args.append(draw(u64))
        elif kind == "role":
            args.append(int(draw(st.sampled_from(list(Role)))))
        elif kind == "reason":
            args.append(int(draw(st.sampled_from(list(RevokeReason)))))
    return GovPropose(action, tuple(args), draw(u64))


payloads = st.one_of(attests(), revokes, votes, proposals())


@st.composite
def transactions(draw: st.DrawFn) -> Transaction:
    key = draw(st.sampled_from(KEYS))
    tx = Transaction(draw(idents), key.public_key, draw(u64), draw(u64), draw(payloads))
    return tx.signed(key)


headers = st.builds(
    BlockHeader,
    st.integers(1, 0xFFFF),
    idents,
    u64,
    hashes,
    u64,
    st.one_of(st.just(b""), hashes),
    st.integers(0, 20_000),
    hashes,
    hashes,
    hashes,
    hashes,
    hashes,
)

validator_sets = st.lists(
    st.builds(Validator, idents, hashes),
    min_size=1,
    max_size=7,
    unique_by=(lambda v: v.member_id, lambda v: v.node_key),
).map(ValidatorSet.of)

certificates = st.builds(
    CommitCertificate,
    u64,
    u64,
    hashes,
    st.lists(
        st.tuples(st.integers(0, 255), st.binary(min_size=64, max_size=64)),
        max_size=7,
        unique_by=lambda p: p[0],
    ).map(lambda s: tuple(sorted(s))),
)


@st.composite
def members(draw: st.DrawFn) -> Member:
    roles = sorted(set(draw(st.lists(st.sampled_from([int(r) for r in Role])))))
    docs = sorted(set(draw(st.lists(idents, max_size=4))))
    return Member(
        draw(idents),
        draw(st.text(min_size=1, max_size=30)),
        draw(hashes),
        tuple(roles),
        tuple(docs),
    )


params = st.builds(ChainParams, *[st.integers(1, 10**6) for _ in ChainParams.NAMES])


def sample_tx(i: int = 0, chain_id: str = "dvp-test") -> Transaction:
    """A concrete signed ATTEST transaction (deterministic), for example-based tests."""
    key = KEYS[i % len(KEYS)]
    payload = Attest(
        "credit-report", bytes([i % 256]) * 32, 1_700_000_000_000 + i, 1_800_000_000_000, b""
    )
    return Transaction(chain_id, key.public_key, i, 1000, payload).signed(key)


def sample_header(tx_count: int = 0) -> BlockHeader:
    return BlockHeader(
        1,
        "dvp-test",
        7,
        b"\x01" * 32,
        1_700_000_000_000,
        KEYS[0].public_key,
        tx_count,
        b"\x02" * 32,
        b"\x03" * 32,
        b"\x04" * 32,
        b"\x05" * 32,
        b"\x06" * 32,
    )
