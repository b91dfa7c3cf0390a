"""Replacing the state (`state init --force`, `state import`) while other processes use it.

Three writer processes run `connect` (each on its own ports) and `sysctl` sets in a
loop, each command through the CLI's `main()`; a fourth runs every command as a new
`python -m ktls_cli.main` process; a fifth holds one kernel open across many
transactions (as `send` and `serve` do). Meanwhile a swapper process alternates
`state init --force --seed G` and `state import FILE`. Inside each replacing
transaction, under the state's write lock, the swapper records what the old state
held: its seed (the marker of the swap that installed it), its connections and its
integrity_check. Afterwards:

- every swap succeeded, in place; the state each one replaced is the one the
  previous swap installed (same seed) and is whole: no old WAL was replayed into a
  new state, no swap was undone;
- every `connect` that exited 0 is in exactly one state: the final one, or the one
  a swap replaced (so it committed before that swap took the lock): none went
  into a file nobody reads;
- every command that failed exited 1 with the one-line "state was replaced"
  error, and its connection is nowhere; nothing printed a traceback, "locked" or
  "busy"; every connection any state holds was made by a writer that succeeded
  (or came from the import file);
- the long-lived kernel never saw two generations: after a swap its next
  transaction fails with that error instead of mixing the old kernel's reads with
  the new kernel's writes;
- the final state passes integrity_check and every gauge check, and once every
  process is done no -wal, -shm or temporary file is left beside it.

The module is also the worker: `python test_state_swap.py MODE ...`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve()
SWAPS = 24
WRITERS = 3  # in-process writers; one more runs a process per command
IMPORT_SEED = 777777
IMPORT_PORTS = {5001, 5002, 5003}
FIRST_SEED = 1


def _marker(k: int) -> int:
    """The seed the state has after swap k (-1: the state the test made)."""
    if k < 0:
        return FIRST_SEED
    return IMPORT_SEED if k % 2 else 1000 + k


# -- workers (separate processes) ---------------------------------------------------------


def _run(state: str, argv: list[str]) -> dict[str, Any]:
    """One command in this process (concurrency_worker's runner, beside this file)."""
    sys.path.insert(0, str(HERE.parent))
    from concurrency_worker import run

    return dict(run(state, argv))


def _run_process(state: str, argv: list[str]) -> dict[str, Any]:
    p = subprocess.run(
        [sys.executable, "-m", "ktls_cli.main", "--state", state, *argv],
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    return {"argv": argv, "exit": p.returncode, "stdout": p.stdout, "stderr": p.stderr}


def _writer(state: str, w: int, out: str, stop: str, processes: bool) -> None:
    run = _run_process if processes else _run
    results = []
    i = 0
    while not os.path.exists(stop) and i < 2900:
        if i % 3 == 2:
            argv = ["--format", "json", "sysctl", f"kern.ipc.tls.enable={i % 2}"]
        else:
            argv = ["--format", "json", "connect", "192.0.2.10:443",
                    f"198.51.100.7:{10000 + w * 3000 + i}"]  # fmt: skip
        results.append(run(state, argv))
        if i == 1:
            Path(f"{out}.ready").touch()
        i += 1
    Path(out).write_text(json.dumps(results))


def _holder(state: str, out: str, stop: str) -> None:
    """One kernel for many transactions; a new one after each 'replaced' error."""
    from ktls_core.errors import StateError
    from ktls_core.kernel import Kernel

    runs: list[list[Any]] = []  # per kernel: the seed each transaction saw, or the error
    kernel = Kernel.open(state)
    seen: list[Any] = []
    i = 0
    while not os.path.exists(stop):
        i += 1
        try:
            with kernel.transaction() as tx:
                seen.append(tx.meta("seed"))
                tx.set_meta("holder", str(i))
        except StateError as exc:
            seen.append(f"error: {exc}")
            kernel.store.close()
            runs.append(seen)
            kernel, seen = Kernel.open(state), []
        time.sleep(0.002)
    kernel.store.close()
    runs.append(seen)
    Path(out).write_text(json.dumps(runs))


def _swapper(state: str, export: str, out: str, *ready: str) -> None:
    """SWAPS replacements, once every writer runs; the old state is recorded inside each
    replacing transaction."""
    import sqlite3

    from ktls_core import store

    real = store._copy_attached
    log: list[dict[str, Any]] = []

    def recording(conn: sqlite3.Connection) -> None:
        seed = conn.execute("SELECT value FROM main.meta WHERE key = 'seed'").fetchone()
        log.append({
            "seed": None if seed is None else int(seed[0]),
            "ports": [r[0] for r in conn.execute("SELECT fport FROM main.conns")],
            "check": conn.execute("PRAGMA main.integrity_check").fetchall(),
        })  # fmt: skip
        real(conn)

    store._copy_attached = recording  # type: ignore[assignment]
    results = []
    deadline = time.monotonic() + 60
    while not all(os.path.exists(r) for r in ready) and time.monotonic() < deadline:
        time.sleep(0.01)
    for k in range(SWAPS):
        if k % 2:
            argv = ["state", "import", export]
        else:
            profile = "current" if k % 4 else "seed"
            argv = ["state", "init", "--force", "--profile", profile, "--seed", str(_marker(k))]
        results.append(_run(state, argv))
        time.sleep(0.03)
    Path(out).write_text(json.dumps({"results": results, "log": log}))


# -- the test ---------------------------------------------------------------------------


def test_swaps_under_load_lose_nothing(
    state: str, init_state: Any, ktls: Any, run_ktls: Any, tmp_path: Path
) -> None:
    from ktls_core.store import REPLACED, RERUN_HINT

    sys.path.insert(0, str(HERE.parent))
    from relyhelp import invariant_problems

    # The import file: its own seed and three connections of its own.
    other = str(tmp_path / "other" / "kernel.db")
    init_state(other, "current", "--seed", str(IMPORT_SEED))
    for port in sorted(IMPORT_PORTS):
        assert run_ktls("connect", "192.0.2.10:443", f"198.51.100.7:{port}", state=other).exit == 0
    export = tmp_path / "import.yaml"
    export.write_text(run_ktls("state", "export", state=other).stdout)

    init_state(state, "current", "--seed", str(FIRST_SEED))
    stop = str(tmp_path / "stop")
    env = dict(os.environ, PYTHONPATH=str(HERE.parents[2]))

    def spawn(*args: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen([sys.executable, str(HERE), *args], env=env)

    out = {f"w{w}": str(tmp_path / f"w{w}.json") for w in range(WRITERS + 1)}
    procs = [spawn("write", state, str(w), out[f"w{w}"], stop, str(w == WRITERS))
             for w in range(WRITERS + 1)]  # fmt: skip
    procs.append(spawn("hold", state, str(tmp_path / "hold.json"), stop))
    ready = [f"{o}.ready" for o in out.values()]
    swapper = spawn("swap", state, str(export), str(tmp_path / "swap.json"), *ready)
    try:
        assert swapper.wait(timeout=120) == 0
    finally:
        Path(stop).touch()
        for p in procs:
            p.wait(timeout=120)
    assert [p.returncode for p in procs] == [0] * len(procs)

    swap = json.loads((tmp_path / "swap.json").read_text())
    for r in swap["results"]:
        assert (r["exit"], r["stderr"]) == (0, ""), r

    # -- each swap replaced, in place, the whole state the previous one installed -----
    log = swap["log"]
    assert len(log) == SWAPS
    for k, old in enumerate(log):
        assert old["check"] == [["ok"]], (k, old["check"])
        assert old["seed"] == _marker(k - 1), f"swap {k} replaced a state it should not see"

    # -- every write is in exactly one state; none went into a dead file ----------------
    # Every process is done: the last one checkpointed and removed the -wal and -shm.
    assert sorted(os.listdir(os.path.dirname(state))) == ["kernel.db"]
    final_ports = [r[0] for r in _query(state, "SELECT fport FROM conns")]
    holders = [old["ports"] for old in log] + [final_ports]
    where: dict[int, int] = {}
    for ports in holders:
        for port in ports:
            if port not in IMPORT_PORTS:
                where[port] = where.get(port, 0) + 1
    replaced = f"ktls: {state}: {REPLACED}; {RERUN_HINT}\n"
    made: set[int] = set()
    failed: set[int] = set()
    counts = {"ok": 0, "failed": 0}
    for w in range(WRITERS + 1):
        results = json.loads(Path(out[f"w{w}"]).read_text())
        assert len(results) >= 3, f"writer {w} hardly ran"
        for r in results:
            if r["exit"] != 0:
                assert (r["exit"], r["stdout"], r["stderr"]) == (1, "", replaced), r
                counts["failed"] += 1
            else:
                assert r["stderr"] == "", r
                counts["ok"] += 1
            if "connect" not in r["argv"]:
                continue
            port = int(r["argv"][-1].rsplit(":", 1)[1])
            (made if r["exit"] == 0 else failed).add(port)
    lost = sorted(p for p in made if where.get(p, 0) != 1)
    assert lost == [], f"connects that exited 0 but are in {[where.get(p) for p in lost]} states"
    assert sorted(failed & set(where)) == [], "a failed connect left its connection"
    assert set(where) <= made, "a connection nobody made"
    assert counts["ok"] > 100, counts

    # -- the long-lived kernel saw one generation per open --------------------------------
    runs = json.loads((tmp_path / "hold.json").read_text())
    errors = 0
    for seen in runs:
        seeds = [s for s in seen if not (isinstance(s, str) and s.startswith("error: "))]
        assert len(set(seeds)) <= 1, f"one kernel saw the seeds {sorted(set(seeds))}"
        tail = [s for s in seen if isinstance(s, str) and s.startswith("error: ")]
        assert tail in ([], seen[-1:]), seen  # an error ends that kernel's run
        errors += len(tail)
        if tail:
            assert tail[0] == f"error: {replaced.removeprefix('ktls: ').rstrip()}"
    assert errors >= 3, f"the holder noticed {errors} of {SWAPS} swaps"

    # -- the final state is whole --------------------------------------------------------
    assert invariant_problems(state) == []
    assert _query(state, "SELECT value FROM meta WHERE key = 'seed'") == [
        (str(_marker(SWAPS - 1)),)
    ]
    assert ktls("sysctl", "kern.ipc.tls.enable=1").exit == 0


def _query(state: str, sql: str) -> list[tuple[Any, ...]]:
    import sqlite3

    db = sqlite3.connect(f"file:{state}?mode=ro", uri=True)
    try:
        return db.execute(sql).fetchall()
    finally:
        db.close()


if __name__ == "__main__":
    mode, *args = sys.argv[1:]
    if mode == "write":
        _writer(args[0], int(args[1]), args[2], args[3], args[4] == "True")
    elif mode == "hold":
        _holder(*args)
    else:
        _swapper(*args)
