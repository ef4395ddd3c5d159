"""Who may connect: a valid libp2p key that is not allowlisted is refused both ways with
nothing reaching the app, and removing a peer from the allowlist at runtime drops it
(re-admitting it brings it back). Hosts in one trio run on 127.0.0.1."""

from __future__ import annotations

import multiaddr
import pytest

from p2p import CONSENSUS, P2PConfig, P2PHost, PeerUnavailable
from tests.support.p2p import (
    drain,
    free_port,
    key_of,
    mesh_configs,
    run_trio,
    running,
    seed_of,
    wait_until,
)


def test_host_not_in_allowlist_is_refused_both_ways() -> None:
    async def scenario() -> None:
        pa, pb, px = free_port(), free_port(), free_port()
        ka, kb, kx = key_of(0), key_of(1), key_of(66)
        absent = key_of(67)
        # A allows B and an absent validator whose configured address is really X's.
        a = P2PHost(
            P2PConfig(
                seed=seed_of(0),
                listen_port=pa,
                peers={kb: f"127.0.0.1:{pb}", absent: f"127.0.0.1:{px}"},
            )
        )
        b = P2PHost(P2PConfig(seed=seed_of(1), listen_port=pb, peers={ka: f"127.0.0.1:{pa}"}))
        # X is a well-formed libp2p node (valid key) that allows and dials A.
        x = P2PHost(P2PConfig(seed=seed_of(66), listen_port=px, peers={ka: f"127.0.0.1:{pa}"}))
        async with running(a, b, x):
            await wait_until(lambda: a.connected_peers() == {kb}, 10, "A-B connected")
            # Inbound: X's dials are refused after the Noise handshake.
            await wait_until(lambda: a.stats["refused_inbound"] >= 2, 10, "inbound refusals")
            # Outbound: A dialling X (as anything inside libp2p might) is refused too.
            lib = a.lib
            assert lib is not None
            lib.get_peerstore().add_addrs(
                x.peer_id, [multiaddr.Multiaddr(f"/ip4/127.0.0.1/tcp/{px}")], 0
            )
            with pytest.raises(Exception):  # noqa: B017 - SwarmException, wrapped
                await lib.get_network().dial_peer(x.peer_id)
            assert a.stats["refused_outbound"] == 1
            # Impersonation: dialling "absent" at X's address fails in Noise (X cannot
            # prove the absent key), over and over, without a connection.
            await wait_until(lambda: a.stats["dial_failures"] >= 2, 10, "impostor dials fail")
            assert lib.get_network().get_connections(x.peer_id) == []
            assert x.connected_peers() == set() and a.connected_peers() == {kb}
            # Nothing of X's reaches A's app.
            assert not x.send(ka, CONSENSUS, b"let me in")
            assert x.stats["dropped.not_connected.consensus"] == 1
            with pytest.raises(PeerUnavailable):
                await x.request(ka, b"hello", 1)
            # The only consensus frame A ever read is B's (counters, not a quiet spell).
            b.send(ka, CONSENSUS, b"from b")
            assert await drain(a, CONSENSUS, 1, 10) == [(kb, b"from b")]
            assert a.inbound(CONSENSUS).statistics().current_buffer_used == 0
            assert a.stats["frames_in.consensus"] == 1
            assert kx not in a.connected_peers()

    run_trio(scenario)


def test_removing_a_peer_from_the_allowlist_drops_it() -> None:
    async def scenario() -> None:
        a, b, c = (P2PHost(cfg) for cfg in mesh_configs(3))

        async def echo(peer: bytes, req: bytes) -> bytes:
            return req

        c.set_request_handler(echo)
        async with running(a, b, c):
            await wait_until(
                lambda: len(a.connected_peers()) == 2 and len(c.connected_peers()) == 2, 10, "mesh"
            )
            a.set_allowlist({b.public_key})
            await wait_until(
                lambda: (
                    a.connected_peers() == {b.public_key}
                    and a.public_key not in c.connected_peers()
                ),
                10,
                "C dropped",
            )
            refused = a.stats["refused_inbound"]
            await wait_until(lambda: a.stats["refused_inbound"] > refused, 10, "C's redial refused")
            assert not c.send(a.public_key, CONSENSUS, b"still there?")
            a.send(b.public_key, CONSENSUS, b"b is fine")
            assert await drain(b, CONSENSUS, 1, 10) == [(a.public_key, b"b is fine")]
            # Re-admitting C: A (which has C's address) dials it again.
            a.set_allowlist({b.public_key, c.public_key})
            await wait_until(lambda: len(a.connected_peers()) == 2, 15, "C re-admitted")
            assert await a.request(c.public_key, b"back", 10) == b"back"

    run_trio(scenario)


def test_a_peer_whose_key_rotated_is_dialled_under_its_new_key() -> None:
    """A node resolves its configured peers' keys from the chain; after a peer's node
    key rotates, ``set_peers`` and ``set_allowlist`` with the new key make it dial the
    same address under that key (the peer here never dials, so only A's dial connects)."""

    async def scenario() -> None:
        pa, pb = free_port(), free_port()
        old_b, new_b = key_of(1), key_of(5)
        a = P2PHost(P2PConfig(seed=seed_of(0), listen_port=pa, peers={old_b: f"127.0.0.1:{pb}"}))
        # B now runs under its new key, and dials nobody.
        b = P2PHost(P2PConfig(seed=seed_of(5), listen_port=pb, peers={}, allowlist={a.public_key}))
        async with running(a, b):
            await wait_until(lambda: a.stats["dial_failures"] >= 1, 10, "old key's dial fails")
            assert a.connected_peers() == set()
            a.set_peers({new_b: f"127.0.0.1:{pb}"})
            a.set_allowlist({new_b})
            await wait_until(lambda: a.connected_peers() == {new_b}, 10, "new key dialled")
            a.send(new_b, CONSENSUS, b"to the new key")
            assert await drain(b, CONSENSUS, 1, 10) == [(a.public_key, b"to the new key")]

    run_trio(scenario)
