"""Prometheus metrics of one node (prometheus-client, on a registry of its own).

Besides the ``dvp_*`` series, the registry carries the standard ``process_*`` ones
(CPU seconds, resident memory, open file descriptors, start time) of this process.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector
from prometheus_client.core import CounterMetricFamily, Metric


class NodeMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        ProcessCollector(registry=r)
        self.height = Gauge("dvp_height", "Last committed height", registry=r)
        self.view = Gauge("dvp_view", "Current PBFT view", registry=r)
        self.view_changes = Counter("dvp_view_changes", "View changes entered", registry=r)
        self.committed_txs = Counter("dvp_committed_txs", "Transactions committed", registry=r)
        self.commit_latency = Histogram(
            "dvp_commit_latency_seconds",
            "Submit-to-commit latency of transactions submitted to this node's RPC",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10),
            registry=r,
        )
        self.block_interval = Histogram(
            "dvp_block_interval_seconds",
            "Time between commits",
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10),
            registry=r,
        )
        self.mempool = Gauge("dvp_mempool_txs", "Transactions in the mempool", registry=r)
        self.client_refused = Counter(
            "dvp_client_refused_txs",
            "Client transactions refused as busy (the node "
            "holds its client queue limit of pending transactions)",
            registry=r,
        )
        self.peers = Gauge("dvp_peers", "Connected peers", registry=r)
        self.dropped = Counter(
            "dvp_dropped_messages", "Inbound messages dropped", ["reason"], registry=r
        )
        self.evidence = Counter(
            "dvp_evidence",
            "Equivocation evidence recorded (two conflicting messages signed by one validator)",
            registry=r,
        )
        self.store_failures = Counter(
            "dvp_store_write_failures",
            "Disk writes that failed (the node stops committing until they succeed)",
            registry=r,
        )
        self.store_ok = Gauge(
            "dvp_store_ok",
            "1 while the node's databases accept writes, 0 while it waits for the disk",
            registry=r,
        )
        self.store_ok.set(1)

    def watch(
        self, name: str, documentation: str, source: Callable[[], Mapping[str, int] | None]
    ) -> None:
        """Export ``source()`` (a dict of counters) as ``<name>_total{event}``."""
        self.registry.register(StatsCollector(name, documentation, source))


class StatsCollector:
    """Exposes a dict of counters owned elsewhere (the replica's ``stats``, the p2p
    host's) as one labelled counter family, read at scrape time: the hot paths keep
    incrementing plain dicts and pay nothing for the metric."""

    def __init__(
        self, name: str, documentation: str, source: Callable[[], Mapping[str, int] | None]
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.source = source

    def describe(self) -> list[Metric]:
        return []  # nothing to check for clashes, and no collect() at registration

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(self.name, self.documentation, labels=["event"])
        for event, value in sorted((self.source() or {}).items()):
            family.add_metric([str(event)], float(value))
        yield family
