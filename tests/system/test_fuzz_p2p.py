"""Malformed frames on every p2p protocol, from an authenticated member (issue 6, part 4b).

Four validators on 127.0.0.1; ``webank`` is ``tests/system/adversary_proc.py`` (a real node under
webank's keys, so it passes the Noise handshake and the allowlist) and, while taking part
in consensus, sends 300 malformed frames on each protocol to each honest node:
``/dvp/consensus/1``, ``/dvp/txs/1`` (gossip batches) and ``/dvp/sync/1`` (requests).
Junk kinds: random bytes, real messages with a flipped bit or cut short, msgpack the
canonical codec refuses (maps, floats, nil, negative ints), nesting 100,000 deep,
containers declaring 4 GiB, well-formed arrays of the wrong shape, junk transactions,
sync requests for absurd ranges. The honest nodes here have a penalty threshold high
enough never to ban, so every frame reaches the decoders. They must survive, keep
committing (same chain), answer every sync request (an error, or a valid answer), count
what they dropped, and keep their memory bounded.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from cli import devnet
from scripts.harness.realnet import (
    assert_same_chain,
    entries,
    heights,
    metrics,
    rss_bytes,
    status,
    wait_height,
)
from tests.system.adversary import Adversary, devnet_with_adversary

pytestmark = [pytest.mark.processes, pytest.mark.timeout(180)]

HONEST = ["cnix", "hkbank", "szcredit"]
FRAMES = 300
PLAN = {"fuzz": FRAMES, "seed": 7}


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Adversary]]:
    root = tmp_path_factory.mktemp("p2pfuzz")
    # Count every offence, ban nobody: all the junk reaches the decoders.
    with devnet_with_adversary(root, "webank", PLAN, {"penalty_strikes": "1000000"}) as adversary:
        yield root, adversary


def test_malformed_frames_on_every_protocol_are_dropped_and_counted(
    net: tuple[Path, Adversary],
) -> None:
    root, adversary = net
    es = entries(root)
    honest = [es[n] for n in HONEST]
    pids = [devnet.running_pid(root, e) for e in honest]
    assert None not in pids
    adversary.wait_phase("started", 60)
    rss_before = [rss_bytes(p) for p in pids]  # type: ignore[arg-type]
    base = min(h or 0 for h in heights(honest))

    fuzz = adversary.wait_phase("fuzz", 90)
    assert fuzz["peers"] == len(HONEST), fuzz  # every honest node was attacked
    assert fuzz["consensus"] == fuzz["txs"] == fuzz["sync"] == FRAMES, fuzz
    answers = fuzz["sync_answers"]
    # Every junk request was answered: an error frame, a refusal, or a (valid) answer.
    assert sum(answers.values()) == FRAMES
    assert not {"RequestTimeout", "PeerUnavailable"} & set(answers), answers
    assert answers.get("error", 0) > 0, answers

    # The nodes survived and commit on, on one chain, with the fuzzer still a peer.
    assert [devnet.running_pid(root, e) for e in honest] == pids
    wait_height(honest, max(base, fuzz["height"]) + 3, 30)
    assert_same_chain(honest)
    assert [(status(e) or {}).get("peers") for e in honest] == [3, 3, 3]

    mib = 1024 * 1024
    for e, pid, before in zip(honest, pids, rss_before, strict=True):
        m = metrics(e)
        dropped = {k: v for k, v in m.items() if k.startswith("dvp_dropped_messages_total")}
        for reason in ("malformed_consensus", "malformed_sync"):
            assert dropped.get(f'dvp_dropped_messages_total{{reason="{reason}"}}', 0) >= 1, (
                e.name,
                dropped,
            )
        assert (
            dropped.get('dvp_dropped_messages_total{reason="malformed_tx_batch"}', 0)
            + dropped.get('dvp_dropped_messages_total{reason="malformed_tx"}', 0)
            >= 1
        ), dropped
        offences = sum(
            v for k, v in m.items() if k.startswith('dvp_p2p_events_total{event="offences.')
        )
        assert offences >= 1 and m.get('dvp_p2p_events_total{event="bans"}', 0) == 0
        # Bounded memory: all the junk together is ~30 MB per node, parsed frame by frame.
        grown = rss_bytes(pid) - before  # type: ignore[arg-type]
        assert grown < 64 * mib, f"{e.name} grew {grown / mib:.0f} MiB"
