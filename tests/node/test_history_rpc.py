"""The history tree over RPC, checked as a client would from the answers alone:
header ``h``'s history root is the RFC 9162 root of blocks ``0 .. h-1`` (tree size =
height), ``getHistoryProof`` proves a block into the newest certified head, and
``getConsistencyProof`` (also from height 0, the empty tree) carries the two certified
headers it relates (docs/RPC.md).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from ledger import merkle
from ledger.types import BlockHeader, CommitCertificate
from node.node import Node
from tests.support.rpc_node import call, error_code, run_nodes

pytestmark = pytest.mark.timeout(120)


def test_history_and_consistency_proofs_check_from_the_answer_alone(tmp_path: Path) -> None:
    def client(nodes: list[Node]) -> None:
        node = nodes[0]
        port = node.rpc_ports["rpc"]
        vset = node.genesis.validators  # one validator, no set changes on this devnet
        deadline = time.monotonic() + 60
        while call(port, "status")["result"]["height"] < 5:  # empty heartbeat blocks
            assert time.monotonic() < deadline, "no 5 blocks within 60 s"
            time.sleep(0.05)

        def certified(doc: dict[str, str | None], height: int) -> BlockHeader:
            header = BlockHeader.decode(bytes.fromhex(doc["header"] or ""))
            assert header.height == height and header.chain_id == "dvp-demo"
            if height == 0:  # anchored by genesis: no certificate, the empty history
                assert doc["certificate"] is None and header.history_root == merkle.EMPTY_ROOT
            else:
                cert = CommitCertificate.decode(bytes.fromhex(doc["certificate"] or ""))
                cert.verify("dvp-demo", vset, header.block_id)
            return header

        cp = call(port, "getConsistencyProof", {"old_height": 0, "new_height": 5})["result"]
        old, new = certified(cp["old"], 0), certified(cp["new"], 5)
        assert cp["proof"] == []
        assert merkle.verify_consistency(0, 5, [], old.history_root, new.history_root)
        for a, b in ((1, 5), (2, 5), (3, 4), (4, 4), (0, 0)):
            cp = call(port, "getConsistencyProof", {"old_height": a, "new_height": b})["result"]
            old, new = certified(cp["old"], a), certified(cp["new"], b)
            proof = [bytes.fromhex(h) for h in cp["proof"]]
            # the tree sizes are the heights
            assert merkle.verify_consistency(a, b, proof, old.history_root, new.history_root)
            if 0 < a < b:  # and no other sizes
                assert not merkle.verify_consistency(
                    a + 1, b + 1, proof, old.history_root, new.history_root
                )

        for h in range(5):
            hp = call(port, "getHistoryProof", {"height": h})["result"]
            head = certified(hp["head"], hp["head_height"])
            proof = [bytes.fromhex(x) for x in hp["proof"]]
            block_id = bytes.fromhex(hp["block_id"])
            assert merkle.verify_inclusion(block_id, h, head.height, proof, head.history_root)
            got = call(port, "getHeader", {"height": h})["result"]
            assert got["block_id"] == hp["block_id"]

        head_height = call(port, "getHistoryProof", {"height": 0})["result"]["head_height"]
        bad = (
            {"old_height": 3, "new_height": 2},
            {"old_height": 0, "new_height": head_height + 1000},
            {"old_height": -1, "new_height": 2},
        )
        for params in bad:
            assert error_code(call(port, "getConsistencyProof", params)) == -32602, params
        assert error_code(call(port, "getHistoryProof", {"height": head_height + 1000})) == -32001

    run_nodes(tmp_path / "net", client)
