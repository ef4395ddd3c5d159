"""A host that cannot listen fails at start (libp2p only logs a failed bind and went on,
so a node with a taken p2p port used to run deaf)."""

from __future__ import annotations

import socket

import pytest
import trio

from p2p import P2PConfig, P2PHost
from p2p.config import P2PError
from tests.support.p2p import seed_of


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]


def test_a_taken_listen_port_fails_the_host_before_it_reports_started() -> None:
    started = False

    async def main(port: int) -> None:
        nonlocal started
        host = P2PHost(P2PConfig(seed=seed_of(0), listen_port=port))
        async with trio.open_nursery() as nursery:
            await nursery.start(host.run)
            started = True
            nursery.cancel_scope.cancel()

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(BaseException) as info:
            trio.run(main, taken.getsockname()[1])
    errors = [e for e in _leaves(info.value) if isinstance(e, P2PError)]
    assert errors and "cannot listen on 127.0.0.1:" in str(errors[0]) and not started
