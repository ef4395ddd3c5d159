"""Deterministic simulation of PBFT replicas (TigerBeetle VOPR style).

Everything nondeterministic is stubbed: the clock (an integer of simulated ms), the
network (``network.SimNetwork``: delays, reordering, duplication, loss, partitions),
the disk (``cluster.Node``: the committed chain and the signing record survive a
crash, everything else is lost) and signatures (``crypto.FakeCrypto``, a keyed-hash
test double). One seed replays a run exactly.

- ``app.MemApp``: the in-memory ledger the replicas are driven with.
- ``cluster.Cluster``: n nodes, each a ``consensus.Replica`` plus its caller loop.
- ``byzantine``: faulty behaviours that rewrite a node's output.
- ``checker.Checker``: the external safety/liveness checker (never inside a replica).
- ``schedules``: randomized schedules used by the tests and scripts/soak_consensus.py.
"""
