"""Golden transcripts of the FreeBSD tools issue 5 mirrors: tcpdrop(8), kldload(8),
kldunload(8), kldstat(8), netstat -an, dmesg(8); and their JSON documents."""

from __future__ import annotations

import json
import re
from typing import Any

CONN = ["192.0.2.10:443", "198.51.100.7:51514"]


def transcript(ktls: Any, commands: list[list[str]]) -> str:
    """Each command, its stdout, its stderr (prefixed) and its exit status."""
    out = []
    for argv in commands:
        r = ktls(*argv)
        out.append("$ ktls " + " ".join(argv))
        out += r.stdout.splitlines()
        out += ["stderr: " + line for line in r.stderr.splitlines()]
        out.append(f"[exit {r.exit}]")
    # ktls_init() starts one thread per CPU: the count is the machine's, not the golden's.
    return re.sub(r"Initialized \d+ threads", "Initialized N threads", "\n".join(out) + "\n")


def test_tcpdrop_golden(ktls: Any, state: str, init_state: Any, check_golden: Any) -> None:
    init_state(state, "seed", "--seed", "1")
    for a, b in (CONN, ["192.0.2.10:443", "198.51.100.7:51515"],
                 ["2001:db8:1::10.443", "2001:db8:1::77.50122"]):  # fmt: skip
        assert ktls("connect", a, b).exit == 0
    text = transcript(ktls, [
        ["tcpdrop", "192.0.2.10", "443", "198.51.100.7", "51514"],
        ["tcpdrop", "192.0.2.10", "443", "198.51.100.7", "51514"],
        ["tcpdrop", "-l", "-a"],
        ["tcpdrop", "-l", "-s", "ESTABLISHED"],
        ["tcpdrop", "-l", "-S", "rack"],
        ["tcpdrop", "2001:db8:1::10.443", "2001:db8:1::77:50122"],
        ["tcpdrop", "foo.443", "198.51.100.7.1"],
        ["tcpdrop", "192.0.2.10.443", "::1.1"],
        ["tcpdrop", "-x"],
        ["tcpdrop", "-l", "192.0.2.10:443", "198.51.100.7:1"],
        ["tcpdrop", "-s", "LISTEN"],
        ["tcpdrop", "192.0.2.10:", "198.51.100.7:1"],
        ["tcpdrop", "-a"],
        ["tcpdrop", "-a"],
    ])  # fmt: skip
    check_golden("tcpdrop/transcript.txt", text)


def test_tcpdrop_json_and_sessions_freed(ktls: Any) -> None:
    assert ktls("sysctl", "kern.ipc.tls.enable=1", "kern.ipc.mb_use_ext_pgs=1").exit == 0
    assert ktls("kldload", "ktls_ocf").exit == 0
    assert ktls("connect", "192.0.2.10:443", "198.51.100.7:1", "--count", "5",
                "--random-keys").exit == 0  # fmt: skip
    r = ktls("--format", "json", "tcpdrop", "192.0.2.10:443", "198.51.100.7:3")
    assert json.loads(r.stdout) == {"tcpdrop": {"connections": [
        {"local_address": "192.0.2.10", "local_port": 443, "foreign_address": "198.51.100.7",
         "foreign_port": 3, "result": "dropped"}]}}  # fmt: skip
    assert ktls("sysctl", "-n", "kern.ipc.tls.stats.active").stdout == "4\n"
    assert ktls("tcpdrop", "-a").stdout.count(": dropped") == 4
    r = ktls("sysctl", "-n", "kern.ipc.tls.stats.active", "kern.ipc.tls.sw.gcm")
    assert r.stdout == "0\n0\n"


def test_kld_golden_seed(ktls: Any, state: str, init_state: Any, check_golden: Any) -> None:
    init_state(state, "seed", "--seed", "1")
    text = transcript(ktls, [
        ["kldstat"],
        ["kldunload", "ktls_ocf"],
        ["kldload", "-v", "ktls_ocf"],
        ["kldload", "ktls_ocf.ko"],
        ["kldload", "-n", "-v", "ktls_ocf"],
        ["kldload", "if_bogus"],
        ["kldload", "-q", "if_bogus"],
        ["kldstat"],
        ["kldstat", "-h"],
        ["kldstat", "-v"],
        ["kldstat", "-m", "ktls_ocf"],
        ["kldstat", "-n", "ktls_ocf"],
        ["kldstat", "-n", "nothere"],
        ["kldstat", "-i", "7"],
        ["kldstat", "-x"],
        ["kldunload", "-v", "ktls_ocf"],
        ["kldunload", "-i", "1"],
        ["kldunload", "nothere"],
        ["kldunload"],
        ["kldload"],
        ["dmesg"],
    ])  # fmt: skip
    check_golden("kld/seed.txt", text)


def test_kld_unload_with_allow_unload(ktls: Any, state: str, init_state: Any) -> None:
    init_state(state, "seed", "--tunable", "kern.ipc.tls.allow_unload=1")
    assert ktls("sysctl", "kern.ipc.tls.enable=1", "kern.ipc.mb_use_ext_pgs=1").exit == 0
    assert ktls("kldload", "ktls_ocf").exit == 0
    assert ktls("connect", *CONN, "--random-keys").exit == 0
    assert ktls("send", *CONN, "--data", "x").exit == 0
    assert ktls("sysctl", "-n", "kern.ipc.tls.stats.ocf.tls12_gcm_crypts").stdout == "1\n"
    # A session uses OCF: EBUSY, and this time the handler says nothing.
    r = ktls("kldunload", "ktls_ocf")
    assert (r.exit, r.stderr) == (1, "kldunload: can't unload file: Device busy\n")
    assert "Deregistering" not in ktls("dmesg").stdout
    assert ktls("tcpdrop", *CONN).exit == 0
    r = ktls("kldunload", "-v", "ktls_ocf")
    assert (r.exit, r.stdout) == (0, "Unloading ktls_ocf.ko, id=2\n")
    # The module's oids are gone, and a reload starts them from zero.
    assert ktls("sysctl", "kern.ipc.tls.stats.ocf").exit == 1
    assert ktls("kldload", "-v", "ktls_ocf").stdout == "Loaded ktls_ocf, id=3\n"
    assert ktls("sysctl", "-n", "kern.ipc.tls.stats.ocf.tls12_gcm_crypts").stdout == "0\n"


def test_kld_golden_current(ktls: Any, state: str, init_state: Any, check_golden: Any) -> None:
    init_state(state, "current", "--seed", "1")
    text = transcript(ktls, [
        ["kldstat", "-v"],
        ["kldload", "ktls_ocf"],
        ["kldload", "-n", "-v", "ktls_ocf"],
        ["kldunload", "ktls_ocf"],
        ["--format", "json", "kldstat"],
    ])  # fmt: skip
    check_golden("kld/current.txt", text)


def test_netstat_golden(ktls: Any, state: str, init_state: Any, check_golden: Any) -> None:
    init_state(state, "current", "--seed", "1")
    assert ktls("sysctl", "kern.ipc.tls.enable=1").exit == 0
    assert ktls("connect", *CONN, "--random-keys").exit == 0
    assert ktls("connect", "192.0.2.10:443", "198.51.100.7:51515", "--random-keys",
                "--tls-version", "1.3", "--cipher", "chacha20-poly1305", "--rec-seq",
                "4294967296").exit == 0  # fmt: skip
    assert ktls("connect", "192.0.2.10:0", "203.0.113.80:80").exit == 0
    assert ktls("connect", "2001:db8:1::10.443", "2001:db8:1::77:50122", "--random-keys",
                "--cipher", "aes-cbc", "--auth", "hmac-sha384").exit == 0  # fmt: skip
    assert ktls("send", *CONN, "--data", "y" * 40000).exit == 0
    text = transcript(ktls, [
        ["netstat"],
        ["netstat", "-an", "-f", "inet6"],
        ["netstat", "-W"],
        ["netstat", "-W", "-p", "udp"],
        ["netstat", "-f", "atalk"],
        ["netstat", "-z"],
        ["--format", "json", "netstat", "-4"],
    ])  # fmt: skip
    check_golden("netstat/connections.txt", text)


def test_netstat_r_is_the_routing_table(ktls: Any) -> None:
    r = ktls("netstat", "-rn")
    assert r.stdout == ktls("route", "-n", "show").stdout
    assert r.stdout.startswith("Routing tables\n\nInternet:\n")


def test_dmesg_ring_and_clear(ktls: Any, state: str, init_state: Any, check_golden: Any) -> None:
    init_state(state, "seed", "--seed", "1")
    assert ktls("kldload", "ktls_ocf").exit == 0
    assert ktls("kldunload", "ktls_ocf").exit == 1
    text = transcript(ktls, [["dmesg"], ["dmesg", "-c"], ["dmesg"], ["dmesg", "-M", "core"],
                             ["dmesg", "extra"]])  # fmt: skip
    check_golden("dmesg/transcript.txt", text)
    # The ring keeps the newest lines only.
    from ktls_core.kernel import DMESG_LINES, Kernel

    kernel = Kernel.open(state)
    with kernel.transaction() as tx:
        for i in range(DMESG_LINES + 100):
            tx.log(f"line {i}")
    lines = ktls("dmesg").stdout.splitlines()
    assert len(lines) == DMESG_LINES
    assert lines[-1] == f"line {DMESG_LINES + 99}"
