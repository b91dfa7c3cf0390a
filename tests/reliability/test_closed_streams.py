"""Bad input from the shell: closed standard streams (`>&-`, `2>&-`, `<&-`).

A closed descriptor 0, 1 or 2 is the lowest free one, so the next file ktls opened
took it: `send --pcap P --out -` with stdout closed wrote the TLS stream into the
capture, and any write to sys.stdout (None then) was an internal error. ktls now
puts /dev/null there first: output to a closed stream goes nowhere, as a C tool's
failed printf does, and every file gets only its own bytes.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

CONN = ["192.0.2.10:443", "198.51.100.7:51514"]
KEY = ["--key", "00" * 16, "--iv", "a0a1a2a3"]


def _sh(state: str, command: str) -> subprocess.CompletedProcess[str]:
    ktls = f"{sys.executable} -m ktls_cli.main --state {state}"
    return subprocess.run(["sh", "-c", command.replace("KTLS", ktls)], capture_output=True,
                          text=True, timeout=60)  # fmt: skip


def test_closed_standard_streams(ktls: Any, init_state: Any, state: str, tmp_path: Path) -> None:
    init_state(state)
    assert ktls("sysctl", "kern.ipc.tls.enable=1", "kern.ipc.mb_use_ext_pgs=1").exit == 0
    assert ktls("kldload", "ktls_ocf").exit == 0
    assert ktls("connect", *CONN, *KEY).exit == 0

    r = _sh(state, "KTLS sysctl kern.ipc.tls.enable >&-")
    assert (r.returncode, r.stderr) == (0, "")
    pcap = tmp_path / "p.pcap"
    r = _sh(state, f"KTLS send {' '.join(CONN)} --data hello --pcap {pcap} --out - >&-")
    assert r.returncode == 0 and r.stderr.endswith("seq 0 to 0, next seq 1\n"), r  # --out -
    d = ktls("decode", "--pcap", pcap, *CONN)
    assert d.exit == 0 and d.stdout.endswith("1 record, 5 bytes, all authentic\n"), d
    r = _sh(state, "KTLS sysctl kern.ipc.tls.nope 2>&-")
    assert (r.returncode, r.stdout) == (1, "")
    r = _sh(state, f"KTLS send {' '.join(CONN)} --stdin <&-")
    assert (r.returncode, r.stderr) == (1, "write: Invalid argument\n")  # an empty send
    assert ktls("netstat").exit == 0
