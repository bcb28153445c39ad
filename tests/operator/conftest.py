"""Fixtures for operator tests: the API emulator over HTTP and the real `fleetserve operator` process."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))  # helper modules beside the tests (importlib mode adds none)
from operator_harness import cluster, operator  # noqa: E402,F401  (fixtures)
