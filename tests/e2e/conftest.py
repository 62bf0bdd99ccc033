"""Fixtures the end-to-end modules share (test_recovery overrides `stubs` for its own mesh)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from infra.local.processes import MeshProcesses
from tests.e2e.flows import Stubs


@pytest.fixture(scope="module")
async def stubs(mesh: MeshProcesses) -> AsyncIterator[Stubs]:
    connected = Stubs.connect(mesh)
    yield connected
    await connected.close()
