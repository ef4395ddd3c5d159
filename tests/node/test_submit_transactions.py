"""``submitTransactions`` answers every transaction of a batch on its own.

A transaction that does not decode is "rejected" with code ``malformed`` in its place;
the others, in the same admission chunk or not, are admitted (or refused by the rules)
as if it were not there.
"""

from __future__ import annotations

from pathlib import Path

from node.node import Node
from tests.support.cluster import attest
from tests.support.rpc_node import call, run_nodes


def test_a_malformed_transaction_does_not_hold_up_the_others(tmp_path: Path) -> None:
    root = tmp_path / "net"
    junk = b"\x93not a transaction"

    def client(nodes: list[Node]) -> dict[str, object]:
        good = [attest(root, n, tag=b"batch test") for n in range(1, 5)]
        wrong_chain = attest(root, 9, chain_id="other-chain", tag=b"batch test")
        batch = [good[0], good[1], junk, good[2], wrong_chain, good[3]]
        params = {
            "txs": [t.hex() if isinstance(t, bytes) else t.encode().hex() for t in batch],
            "wait": True,
            "timeout_s": 30,
        }
        doc = call(nodes[0].rpc_ports["rpc"], "submitTransactions", params)
        return {"doc": doc, "good": [t.tx_id.hex() for t in good]}

    got = run_nodes(root, client)
    doc, good = got["doc"], got["good"]
    assert "error" not in doc, doc
    results = doc["result"]["results"]
    assert len(results) == 6, results
    assert [r["status"] for r in results] == [
        "committed",
        "committed",
        "rejected",
        "committed",
        "rejected",
        "committed",
    ], results
    assert [results[i]["tx_id"] for i in (0, 1, 3, 5)] == good
    bad = results[2]
    assert bad["code"] == "malformed" and bad["tx_id"] is None
    assert bad["message"].startswith("txs[2]: not a transaction"), bad
    assert results[4]["code"] == "wrong_chain", results[4]
    assert doc["result"]["accepted"] == 4
