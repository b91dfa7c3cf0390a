"""Make tests/oracle.py and the TLS case helpers importable in any import mode."""

import sys
from pathlib import Path

_HERE = Path(__file__).resolve().parent
for _path in (_HERE.parents[1], _HERE.parent / "tls"):  # tests/, tests/core/tls/
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))
