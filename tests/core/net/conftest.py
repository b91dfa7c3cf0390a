from __future__ import annotations

import pytest

from ktls_core.net.ifnet import Network
from ktls_core.net.topology import network_from_default


@pytest.fixture(params=["seed", "current"])
def era(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def net() -> Network:
    """The default host, seed era."""
    return network_from_default("seed")


@pytest.fixture
def cur() -> Network:
    """The default host, current era."""
    return network_from_default("current")
