"""Applies ``$DVP_BOUND`` (see dvp_bounds.py) in every Python process started with this
folder on PYTHONPATH. Only ``scripts/bench_node.py --bound`` puts it there."""

import os
import sys

if os.environ.get("DVP_BOUND"):
    # The checkout this folder belongs to: the nodes run from it, but it is not yet on
    # sys.path while site runs (python -m adds the working directory later).
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    import dvp_bounds

    dvp_bounds.apply()
