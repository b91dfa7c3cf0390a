"""`connect --count N` with TLS options enables in one batch (session.enable_many): the
state it leaves is the state N single `connect`s leave, failures part-way included."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

LOCAL = "203.0.113.10:443"
GCM = ["--random-keys", "--tls-version", "1.2", "--cipher", "aes-gcm"]
CBC10 = ["--random-keys", "--tls-version", "1.0", "--cipher", "aes-cbc", "--auth", "hmac-sha1"]
SW_READY = [["sysctl", "kern.ipc.tls.enable=1", "kern.ipc.mb_use_ext_pgs=1"],
            ["kldload", "ktls_ocf"]]  # fmt: skip
IFNET = [["sysctl", "kern.ipc.tls.enable=1", "kern.ipc.tls.ifnet.permitted=1"],
         ["ifconfig", "mce0", "txtls"]]  # fmt: skip
# Columns drawn at random: a batch draws its TCP sequence numbers differently (tcp.connect_many).
RANDOM_COLUMNS = {"conns": {"iss", "snd_nxt", "irs"}, "sessions": {"nonce_ctr"}}

SCENARIOS = {
    "sw": ("seed", SW_READY, GCM),
    "ktls_disabled": ("seed", [], GCM),  # step 1: not counted
    "no_ext_pgs": ("seed", [["sysctl", "kern.ipc.tls.enable=1"]], GCM),  # step 7: counted
    "no_backend": ("seed", SW_READY[:1], GCM),  # active up and down again
    "seed_rec_seq": ("seed", SW_READY, [*GCM, "--rec-seq", "5"]),
    "seed_cbc": ("seed", SW_READY, CBC10),
    "ifnet": ("current", IFNET, GCM),  # and the lazy thread pool's dmesg line
    "ifnet_refuses_cbc": ("current", IFNET, CBC10),
    "chacha_rec_seq": ("current", SW_READY[:1], ["--random-keys", "--cipher",
                                                 "chacha20-poly1305", "--rec-seq", "9"]),
}  # fmt: skip


def _state(run_ktls: Any, state: str) -> dict[str, Any]:
    """The export without keys, less what is random."""
    r = run_ktls("state", "export", state=state)
    assert r.exit == 0, r
    tables = yaml.safe_load(r.stdout)["ktls_state"]["tables"]
    out: dict[str, Any] = {}
    for name, table in tables.items():
        drop = RANDOM_COLUMNS.get(name, set())
        keep = [i for i, c in enumerate(table["columns"]) if c not in drop]
        rows = [[row[i] for i in keep] for row in table["rows"]]
        if name == "meta":
            rows = [row for row in rows if row[0] != "rng_counter"]
        out[name] = rows
    return out


def _setup(
    run_ktls: Any, init_state: Any, state: str, profile: str, steps: list[list[str]]
) -> None:
    init_state(state, profile, "--seed", "5")
    for step in steps:
        assert run_ktls(*step, state=state).exit == 0


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_count_leaves_what_single_connects_leave(
    run_ktls: Any, init_state: Any, tmp_path: Any, scenario: str
) -> None:
    profile, steps, tls = SCENARIOS[scenario]
    bulk, single = str(tmp_path / "bulk.db"), str(tmp_path / "single.db")
    for state in (bulk, single):
        _setup(run_ktls, init_state, state, profile, steps)
    r = run_ktls("connect", LOCAL, "203.0.113.7:65534", "--count", "5", *tls, state=bulk)
    singles = [
        run_ktls("connect", LOCAL, f"203.0.113.{addr}:{port}", *tls, state=single)
        for addr, port in ((7, 65534), (7, 65535), (8, 1024), (8, 1025), (8, 1026))
    ]
    assert r.stdout == "203.0.113.10 443 203.0.113.7 65534 .. 203.0.113.10 443 203.0.113.8 1026" \
                       " (5 connections)\n"  # fmt: skip
    # One message for the batch: the first failure, as the first single connect says it.
    assert (r.exit, r.stderr) == (singles[0].exit, singles[0].stderr)
    assert {s.exit for s in singles} == {r.exit}
    assert _state(run_ktls, bulk) == _state(run_ktls, single)


STATS = ["kern.ipc.tls.stats.enable_calls", "kern.ipc.tls.stats.active",
         "kern.ipc.tls.stats.offload_total", "kern.ipc.tls.sw.gcm", "kern.ipc.tls.sw.cbc",
         "kern.ipc.tls.ifnet.gcm"]  # fmt: skip


def _stats(ktls: Any) -> list[int]:
    return [int(v) for v in ktls("sysctl", "-n", *STATS).stdout.split()]


def test_count_1000_counters_and_rows(ktls: Any, state: str, init_state: Any) -> None:
    init_state(state, "seed", "--seed", "5")
    assert ktls("sysctl", "kern.ipc.tls.enable=1", "kern.ipc.mb_use_ext_pgs=1").exit == 0
    assert ktls("kldload", "ktls_ocf").exit == 0
    assert ktls("connect", LOCAL, "203.0.113.7:1000").exit == 0
    r = ktls("--format", "json", "connect", LOCAL, "203.0.113.7:2000", "--count", "1000", *GCM)
    assert r.exit == 0, r
    assert _stats(ktls) == [1000, 1000, 1000, 1000, 0, 0]
    netstat = ktls("netstat").stdout
    assert netstat.count("ESTABLISHED") == 1001
    assert netstat.count(" sw ") == 1000
    # A port collision refuses the whole range before any enable: nothing moves.
    r = ktls("connect", LOCAL, "203.0.113.7:999", "--count", "1000", *GCM)
    assert (r.exit, r.stderr) == (1, "connect: Address already in use\n")
    assert _stats(ktls) == [1000, 1000, 1000, 1000, 0, 0]
    assert ktls("netstat").stdout.count("ESTABLISHED") == 1001
    # Another 1000 with the gate closed: connections without TLS, counted as step 7 counts.
    assert ktls("sysctl", "kern.ipc.mb_use_ext_pgs=0").exit == 0
    r = ktls("connect", LOCAL, "203.0.113.8:2000", "--count", "1000", *GCM)
    assert (r.exit, r.stderr) == (1, "setsockopt: TCP_TXTLS_ENABLE: Device not configured\n")
    assert _stats(ktls) == [2000, 1000, 1000, 1000, 0, 0]
    assert ktls("netstat").stdout.count("ESTABLISHED") == 2001


def test_count_on_a_lacp_lagg_tags_each_flow_as_single_connects_do(
    run_ktls: Any, init_state: Any, tmp_path: Any
) -> None:
    """lacp picks a port by the flow's hash: the batch looks each route up once per
    foreign address and hash class, and every session still gets the port its own
    connect would (the send tag's port is in the sessions table)."""
    steps = [*IFNET[:1], ["ifconfig", "lagg0", "laggproto", "lacp"], ["ifconfig", "lagg0", "txtls"]]
    bulk, single = str(tmp_path / "bulk.db"), str(tmp_path / "single.db")
    for state in (bulk, single):
        _setup(run_ktls, init_state, state, "current", steps)
    lagg = "198.51.100.10:443"
    r = run_ktls("connect", lagg, "198.51.100.7:40000", "--count", "24", *GCM, state=bulk)
    assert r.exit == 0, r
    for port in range(40000, 40024):
        assert run_ktls("connect", lagg, f"198.51.100.7:{port}", *GCM, state=single).exit == 0
    assert _state(run_ktls, bulk) == _state(run_ktls, single)
    ports = {row[-1] for row in _state(run_ktls, bulk)["sessions"]}
    netstat = run_ktls("netstat", state=bulk).stdout
    assert "cc0" in netstat and "cc1" in netstat, (ports, netstat)
