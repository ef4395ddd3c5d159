"""The hello that opens every stream: the protocol versions its opener speaks. A peer
whose range misses the version the app runs is refused, with one log line saying why;
a peer whose range covers it gets through. Hosts in one trio run on 127.0.0.1."""

from __future__ import annotations

import logging
from dataclasses import replace

import pytest

from ledger.protocol import peer_refusal
from p2p import CONSENSUS, P2PHost
from p2p.framing import decode_hello, encode_hello
from tests.support.p2p import drain, key_of, mesh_configs, run_trio, running, wait_until


def test_hello_round_trip_and_garbage() -> None:
    assert decode_hello(encode_hello((1, 2))) == (1, 2)
    assert decode_hello(b"dvp/hello\x00\x02\x00\x01") is None  # lowest above highest
    assert decode_hello(b"dvp/hello\x00\x00\x00\x01") is None  # version 0
    assert decode_hello(b"not a hello at all") is None
    assert peer_refusal(1, 2, 2) is None
    assert "speaks protocol versions 1-1, but the consortium runs version 2" in str(
        peer_refusal(1, 1, 2)
    )


def test_a_peer_that_cannot_speak_the_active_version_is_refused(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def scenario() -> None:
        ca, cb, cc = mesh_configs(3)
        # A runs version 2; B speaks 1-2 (the new build), C only 1 (the old build).
        a = P2PHost(replace(ca, versions=(1, 2)))
        b = P2PHost(replace(cb, versions=(1, 2)))
        c = P2PHost(cc)
        a.set_version_check(lambda low, high: peer_refusal(low, high, 2))
        ka, kb, kc = key_of(0), key_of(1), key_of(2)
        async with running(a, b, c):
            await wait_until(lambda: a.stats["refused_version"] >= 1, 20, "C refused by A")
            b.send(ka, CONSENSUS, b"from b")
            c.send(ka, CONSENSUS, b"from c")
            b.send(kc, CONSENSUS, b"b to c")  # C applies no check: B gets through
            assert await drain(a, CONSENSUS, 1, 20) == [(kb, b"from b")]
            assert await drain(c, CONSENSUS, 1, 20) == [(kb, b"b to c")]
            assert a.stats["frames_in.consensus"] == 1  # nothing of C's reached the app
            assert b.stats["refused_version"] == 0

    with caplog.at_level(logging.WARNING, logger="dvp.p2p"):
        run_trio(scenario)
    refusals = [r.getMessage() for r in caplog.records if "refused a peer" in r.getMessage()]
    assert refusals and "versions 1-1, but the consortium runs version 2" in refusals[0]
    assert len(refusals) <= 3  # once per peer and reason, not once per stream attempt
