"""examples/software-tls.sh, run as a user would run it, tells the seed's story."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_software_tls_example(tmp_path: Path) -> None:
    env = dict(os.environ, KTLS=f"{sys.executable} -m ktls_cli.main", TMPDIR=str(tmp_path))
    env["KTLS_STATE"] = str(tmp_path / "state" / "kernel.db")
    result = subprocess.run(
        ["sh", str(REPO / "examples" / "software-tls.sh")],
        capture_output=True, text=True, env=env, cwd=REPO, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    out = result.stdout
    errors = [line for line in out.splitlines() if line.startswith("setsockopt:")]
    assert errors == [
        "setsockopt: TCP_TXTLS_ENABLE: Operation not supported",
        "setsockopt: TCP_TXTLS_ENABLE: Device not configured",
        "setsockopt: TCP_TXTLS_ENABLE: Operation not supported",
    ]
    assert "KTLS: Registering crypto method OCF with prio 5" in out
    assert "TCP_TXTLS_MODE: 1 (sw)" in out
    assert "51514: 7 records, 102400 bytes" in out
    assert "record 0: seq 7, type 21 (alert), length 2, wire 31" in out
    assert "received exactly the 102400 bytes sent" in out
    for line in ("kern.ipc.tls.stats.enable_calls: 3", "kern.ipc.tls.stats.active: 1",
                 "kern.ipc.tls.stats.offload_total: 1", "kern.ipc.tls.sw.gcm: 1"):  # fmt: skip
        assert line in out
    assert "kldunload: can't unload file: Device busy" in out
    assert out.rstrip().endswith("kern.ipc.tls.stats.active: 0\nkern.ipc.tls.sw.gcm: 0")
    assert not list(tmp_path.glob("ktls-example.*"))  # it cleans up after itself
