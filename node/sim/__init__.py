"""Whole-node deterministic simulation: the product's node cores over a seeded world.

``host`` builds a node's ``node.core.NodeCore`` over in-memory power-cut stores,
``cluster`` is the simulated network, clock and disks that execute the cores' effects,
``byzantine`` what a Byzantine node does, ``client`` the random client, ``checker`` the
outside checkers, ``schedules`` the seeded runs (replay one with ``DVP_SIM_SEED=<seed>``
or ``scripts/soak_node_sim.py``). docs/RELIABILITY.md, "Whole-node simulation".
``traffic`` meters the frames nodes send, ``scale`` runs many validators and observers
over a WAN-like link for docs/PERFORMANCE.md ("Sizing a consortium of 50 institutions").
``pbft`` is the replica-only simulator (the PBFT replicas with an in-memory app), kept
here rather than in ``consensus/`` so that package holds no clock and no randomness.
"""
