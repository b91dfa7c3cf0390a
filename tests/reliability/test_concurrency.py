"""Concurrency: 8 processes x 200 mixed commands on one state lose nothing.

Each worker (concurrency_worker.py, a real process running the CLI's `main()` per
command) mixes sysctl sets and gets, ifconfig txtls toggles, connect and tcpdrop
of its own connections, sends (--format json, --out FILE) on two shared
connections and its own, and switch_tls -i/-s. Afterwards:

- no command printed "database is locked", a busy state, an internal error or a
  traceback, and every exit status is what the command's own report says;
- every `sysctl kern.ipc.tls.max_reclaim=V` (a unique V each) reported an
  `old -> new` that links into one chain from the default to the final value:
  the sets were serialised, none lost or interleaved;
- the counters moved exactly as the commands' reports add up: enable_calls and
  offload_total by the connects, switch_failed by the failed switches, each
  ocf.*_encrypts and ocf.inplace/separate_output by the records of the software
  sends; each surviving session's records and bytes, and its connection's TCP
  bytes, are the sums of its sends' reports;
- every gauge equals what the tables hold (relyhelp.invariant_problems);
- on every connection the sends' [first_seq, next_seq) ranges are disjoint and
  tile 0..next_seq; every --out stream opens with tests/oracle.py at its first
  sequence number; no TLS 1.2 GCM explicit nonce appears twice.
"""

from __future__ import annotations

import collections
import itertools
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from oracle import decrypt_stream
from relyhelp import counters, invariant_problems, oracle_suite, session_info, split_records

WORKERS = 8
ROUNDS = 200
SEED = int(os.environ.get("KTLS_CONCURRENCY_SEED", "4242"))
WORKER = Path(__file__).resolve().parent / "concurrency_worker.py"
SHARED = {
    "192.0.2.10 443 198.51.100.7 7000": ["--tls-version", "1.2", "--cipher", "aes-gcm"],
    "203.0.113.10 443 203.0.113.7 7001": ["--tls-version", "1.3", "--cipher", "chacha20-poly1305"],
}
OCF = "kern.ipc.tls.stats.ocf."
LEAF = {("1.2", "AES-128-GCM"): "tls12_gcm_encrypts", ("1.3", "AES-128-GCM"): "tls13_gcm_encrypts",
        ("1.3", "CHACHA20-POLY1305"): "tls13_chacha20_encrypts"}  # fmt: skip
BAD_WORDS = ("locked", "busy", "internal error", "Traceback")


def _name(two_words: list[str]) -> str:
    (la, lp), (fa, fp) = (w.rsplit(":", 1) for w in two_words)
    return f"{la} {lp} {fa} {fp}"


def test_eight_processes_lose_nothing(
    ktls: Any, init_state: Any, state: str, tmp_path: Path
) -> None:
    init_state(state, "current")
    assert ktls("sysctl", "kern.ipc.tls.enable=1", "kern.ipc.tls.ifnet.permitted=1").exit == 0
    assert ktls("ifconfig", "mce0", "txtls").exit == 0
    for conn, opts in SHARED.items():
        la, lp, fa, fp = conn.split()
        assert ktls("connect", f"{la}:{lp}", f"{fa}:{fp}", "--random-keys", *opts).exit == 0
    base = counters(state)

    procs = [
        subprocess.Popen(
            [sys.executable, str(WORKER), state, str(w), str(SEED), str(tmp_path), str(ROUNDS)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for w in range(WORKERS)
    ]
    results: list[dict[str, Any]] = []
    for p in procs:
        out, err = p.communicate(timeout=170)
        assert (p.returncode, err) == (0, ""), err
        results += json.loads(out)
    assert len(results) == WORKERS * ROUNDS

    # -- nothing reached the user that should not have --------------------------------
    problems = [r for r in results if any(w in r["stderr"] for w in BAD_WORDS)]
    assert problems == []
    by_cmd: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)
    for r in results:
        argv = r["argv"]
        cmd = argv[2] if argv[0] == "--format" else argv[0]
        by_cmd[cmd].append(r)
        if cmd == "switch_tls":
            doc = json.loads(r["stdout"])["switch_tls"]["connections"][0]
            failed = doc["result"] != "switched"
            assert r["exit"] == (1 if failed else 0), r
            if failed:
                assert r["stderr"].count("\n") == 1, r
            r["doc"] = doc
        else:
            assert (r["exit"], r["stderr"]) == (0, ""), r
            if argv[0] == "--format":
                r["doc"] = json.loads(r["stdout"])[cmd]
    assert set(by_cmd) == {"sysctl", "ifconfig", "connect", "tcpdrop", "send", "switch_tls"}

    # -- sysctl sets: one chain of old -> new ------------------------------------------
    changes = {}
    for r in by_cmd["sysctl"]:
        if "doc" in r:
            (entry,) = r["doc"]
            assert entry["old"] not in changes, f"two sets saw {entry['old']} as the old value"
            changes[entry["old"]] = entry["new"]
    value, chain = 1024, 0
    while value in changes:
        value, chain = changes[value], chain + 1
    assert chain == len(changes) > 0
    assert ktls("sysctl", "-n", "kern.ipc.tls.max_reclaim").stdout == f"{value}\n"

    # -- counters are the sum of the reports -------------------------------------------
    now = counters(state)
    delta = {k: now[k] - base.get(k, 0) for k in now}
    connects = [r["doc"]["connections"][0] for r in by_cmd["connect"]]
    assert delta["kern.ipc.tls.stats.enable_calls"] == len(connects)
    assert delta["kern.ipc.tls.stats.offload_total"] == sum(c["tls"] is not None for c in connects)
    switches = [r["doc"] for r in by_cmd["switch_tls"]]
    failed = [s for s in switches if s["result"] != "switched"]
    # EOPNOTSUPP: the port's txtls is off; EPROTONOSUPPORT: its NIC lacks the suite;
    # EALREADY: ifnet already (checked before the clone, so not a failed switch).
    assert {s["errno"] for s in failed} <= {45, 43, 37}
    assert delta["kern.ipc.tls.stats.switch_failed"] == sum(s["errno"] != 37 for s in failed)
    sends = [r["doc"] for r in by_cmd["send"]]
    sw = [s for s in sends if s["mode"] == "sw"]
    expect = collections.Counter()
    for s in sw:
        expect[OCF + LEAF[(s["version"], s["suite"].split(" ", 1)[1])]] += s["records_sent"]
        where = "separate_output" if s["syscall"] == "sendfile" else "inplace"
        expect[OCF + where] += s["records_sent"]
    assert {k: delta[k] for k in delta if k.startswith(OCF) and delta[k]} == dict(expect)
    assert invariant_problems(state) == []

    # -- every surviving connection: records, bytes, sequence numbers --------------------
    info = session_info(state)
    per_conn: dict[str, list[tuple[dict[str, Any], str]]] = collections.defaultdict(list)
    for r in by_cmd["send"]:
        per_conn[r["doc"]["connection"]].append((r["doc"], r["argv"][-1]))
    dropped = {_name(r["argv"][3:]) for r in by_cmd["tcpdrop"]}
    assert set(SHARED) <= set(info)
    checked = 0
    for conn, docs in per_conn.items():
        if conn in dropped:
            continue
        s = info[conn]
        assert s.records == sum(d["records_sent"] for d, _ in docs), conn
        assert s.bytes == sum(d["bytes"] for d, _ in docs), conn
        assert s.tx_bytes == sum(d["wire_bytes"] for d, _ in docs), conn
        ranges = sorted((d["first_seq"], d["next_seq"]) for d, _ in docs)
        assert ranges[0][0] == 0 and ranges[-1][1] == s.next_seq, conn
        for (_a, end), (start, _b) in itertools.pairwise(ranges):
            assert end == start, f"{conn}: sequence ranges overlap or leave a gap"
        nonces: set[bytes] = set()
        for d, out in docs:
            stream = Path(out).read_bytes()
            opened = decrypt_stream(stream, oracle_suite(s), first_seq=d["first_seq"])
            assert len(opened) == d["records_sent"]
            if s.cipher == 25 and s.vminor == 3:
                for _off, rec in split_records(stream)[0]:
                    assert rec[5:13] not in nonces
                    nonces.add(rec[5:13])
        checked += 1
    assert checked >= 2 + WORKERS  # the shared connections and some of each worker's
