"""The TLS case helpers importable in any import mode (tests/ is on pytest's
pythonpath), and the kernel most transmit-path tests start from."""

import sys
from pathlib import Path

import pytest

_HERE = Path(__file__).resolve().parent
if str(_HERE) not in sys.path:
    sys.path.insert(0, str(_HERE))


@pytest.fixture
def seed(tmp_path: Path):  # type: ignore[no-untyped-def]
    """The seed kernel with software KTLS ready and one connection (ktls_sw.CONN)."""
    from ktls_sw import boot, connect, sw_ready

    kernel = boot(tmp_path, "seed")
    sw_ready(kernel)
    connect(kernel)
    return kernel
