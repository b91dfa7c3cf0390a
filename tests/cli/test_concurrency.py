"""Four processes set and read sysctls 100 times each, at once, on one state.

Each worker owns one oid and checks every `name: old -> new` it gets: the old value
must be the one it wrote last (no lost or interleaved update), and no error may reach
its stderr. Every worker also lists the whole node, reading while others write.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from typing import Any

ROUNDS = 100

WORKER = r"""
import contextlib, io, json, sys
from ktls_cli.main import main

state, name, kind = sys.argv[1:4]
last, problems = None, []
for i in range(1, ROUNDS + 1):
    value = i % 2 if kind == "bool" else 1000 + i
    for args in (["sysctl", f"{name}={value}"], ["sysctl", "kern.ipc.tls"]):
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(["--state", state, *args])
        if code != 0 or err.getvalue():
            problems.append([args, code, err.getvalue()])
        elif args[1] != "kern.ipc.tls":
            line = out.getvalue()
            old, new = line.split(": ", 1)[1].strip().split(" -> ")
            if last is not None and int(old) != last or int(new) != value:
                problems.append(["lost update", line, last])
            last = value
        elif out.getvalue().count("\n") < 20:
            problems.append(["short listing", out.getvalue()])
print(json.dumps(problems))
""".replace("ROUNDS", str(ROUNDS))

OWNERS = {
    "kern.ipc.tls.maxlen": "int",
    "kern.ipc.tls.ifnet.permitted": "int",
    "kern.ipc.mb_use_ext_pgs": "int",
    "kern.ipc.tls.enable": "bool",
}


def test_four_writers_lose_nothing(state: str, init_state: Any, run_ktls: Any) -> None:
    init_state(state)
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, state, name, kind],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, kind in OWNERS.items()
    ]
    reports = [w.communicate(timeout=120) for w in workers]
    for (stdout, stderr), worker in zip(reports, workers, strict=True):
        assert (worker.returncode, stderr) == (0, "")
        assert json.loads(stdout) == []
    final = run_ktls("sysctl", "-n", *OWNERS, state=state).stdout.split()
    assert final == [str(1000 + ROUNDS)] * 3 + [str(ROUNDS % 2)]
    conn = sqlite3.connect(state)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        conn.close()
