"""The p2p penalty in isolation: strikes, ban, refusal, re-admission (docs/p2p.md,
"Penalties"). Two ``P2PHost``s in one trio run on 127.0.0.1; the end-to-end case (three
honest node processes banning a flooding validator) is tests/system/test_byzantine_peer.py.
"""

from __future__ import annotations

from p2p import CONSENSUS, P2PHost
from tests.support.p2p import drain, mesh_configs, run_trio, running, wait_until


def test_strikes_ban_a_peer_for_ban_s_then_it_is_readmitted() -> None:
    async def scenario() -> None:
        a_cfg, b_cfg = mesh_configs(2, penalty_strikes=3, penalty_window_s=5.0, ban_s=1.5)
        a, b = P2PHost(a_cfg), P2PHost(b_cfg)
        async with running(a, b):
            await wait_until(lambda: a.connected_peers() == {b.public_key}, 5, "connected")
            # Below the threshold nothing happens; the third strike bans.
            assert not a.penalize(b.public_key, "malformed_consensus")
            assert not a.penalize(b.public_key, "bad_signature")
            assert a.connected_peers() == {b.public_key}
            assert a.penalize(b.public_key, "bad_signature")
            assert a.banned() == {b.public_key} and a.stats["bans"] == 1
            assert a.stats["offences.bad_signature"] == 2
            await wait_until(
                lambda: not a.connected_peers() and not b.connected_peers(),
                3,
                "the banned peer disconnected on both sides",
            )
            refused = a.stats["refused_inbound"] + a.stats["refused_outbound"]
            await wait_until(
                lambda: a.stats["refused_inbound"] + a.stats["refused_outbound"] > refused,
                3,
                "its redial refused while banned",
            )
            assert not b.send(a.public_key, CONSENSUS, b"let me in")
            # A periodic set_allowlist from the app does not lift the ban early.
            a.set_allowlist({b.public_key})
            assert a.banned() == {b.public_key}
            # After ban_s it is re-admitted (and redialled) and traffic flows again.
            await wait_until(lambda: a.connected_peers() == {b.public_key}, 8, "re-admitted")
            assert not a.banned()
            b.send(a.public_key, CONSENSUS, b"behaving now")
            assert await drain(a, CONSENSUS, 1, 3) == [(b.public_key, b"behaving now")]

    run_trio(scenario)
