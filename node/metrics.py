"""Prometheus metrics of one node (prometheus-client, on a registry of its own)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class NodeMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.height = Gauge("dvp_height", "Last committed height", registry=r)
        self.view = Gauge("dvp_view", "Current PBFT view", registry=r)
        self.view_changes = Counter("dvp_view_changes", "View changes entered", registry=r)
        self.committed_txs = Counter("dvp_committed_txs", "Transactions committed", registry=r)
        self.commit_latency = Histogram(
            "dvp_commit_latency_seconds", "Submit-to-commit latency of transactions",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10),
            registry=r)
        self.block_interval = Histogram(
            "dvp_block_interval_seconds", "Time between commits",
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10), registry=r)
        self.mempool = Gauge("dvp_mempool_txs", "Transactions in the mempool", registry=r)
        self.peers = Gauge("dvp_peers", "Connected peers", registry=r)
        self.dropped = Counter("dvp_dropped_messages", "Inbound messages dropped",
                               ["reason"], registry=r)
