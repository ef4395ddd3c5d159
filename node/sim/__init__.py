"""Whole-node deterministic simulation: real node cores over a seeded network and clock.

``host`` is the sans-IO node core the simulator drives (a stand-in for node/core.py),
``cluster`` the simulated network, clock, power-cut stores and Byzantine primary,
``client`` the random client, ``checker`` the outside checkers, ``schedules`` the
seeded runs (replay one with ``DVP_SIM_SEED=<seed>`` or ``scripts/soak_node_sim.py``).
"""
