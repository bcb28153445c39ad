"""Fixtures for operator tests: the API emulator over HTTP and the real `fleetserve operator` process."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # helper modules beside the tests (importlib mode adds none)
from operator_harness import running_cluster, running_operator  # noqa: E402


@pytest.fixture
async def cluster(tmp_path: Path):
    async with running_cluster(tmp_path) as emulated:
        yield emulated


@pytest.fixture
async def operator(cluster, tmp_path: Path):
    async with running_operator(cluster, tmp_path / "operator.log") as process:
        yield process
