"""The emulated cluster and the real operator, from the operator tests' harness."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[2] / "tests" / "operator"))
from operator_harness import cluster, operator  # noqa: E402,F401  (fixtures)
