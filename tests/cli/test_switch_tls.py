"""`ktls switch_tls` on a state: every form and error, counters, -a/-l/-S, JSON, goldens.

Connections and sessions are made through the core (tcp.connect, session.enable_tx)
so that these tests need nothing but the state; the interface commands are the CLI's.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from ktls_core.kernel import Kernel
from ktls_core.net import tcp
from ktls_core.tls import session as sessions
from ktls_core.tls.enable import TlsEnable
from ktls_core.tls.suites import TLS_MINOR_VER_THREE, TLS_MINOR_VER_TWO, CryptoAlg

V4 = ("198.51.100.10", "443", "198.51.100.7", "51514")
V4_NAME = " ".join(V4)
PLAIN = ("198.51.100.10", "443", "198.51.100.8", "40000")  # a connection without KTLS
V6 = ("2001:db8:1::10", "443", "2001:db8:1::77", "50122")
V6_NAME = " ".join(V6)

COUNTERS = (
    "kern.ipc.tls.stats.active",
    "kern.ipc.tls.stats.switch_to_ifnet",
    "kern.ipc.tls.stats.switch_to_sw",
    "kern.ipc.tls.stats.switch_failed",
    "kern.ipc.tls.sw.gcm",
    "kern.ipc.tls.ifnet.gcm",
)


def gcm(vminor: int = TLS_MINOR_VER_TWO) -> TlsEnable:
    iv = bytes(4) if vminor == TLS_MINOR_VER_TWO else bytes(12)
    return TlsEnable(CryptoAlg.AES_NIST_GCM_16, bytes(range(16)), iv, tls_vminor=vminor)


def connect(state: str, words: tuple[str, ...], params: TlsEnable | None = None) -> None:
    kernel = Kernel.open(state)
    with kernel.transaction() as tx:
        conn = tcp.connect(tx, tcp.parse_endpoints(words))
        if params is not None:
            sessions.enable_tx(tx, conn, params)
    kernel.store.close()


def session_of(state: str, words: tuple[str, ...]) -> sessions.Session | None:
    kernel = Kernel.open(state)
    with kernel.snapshot() as tx:
        conn = tcp.find(tx, tcp.parse_endpoints(words))
        s = sessions.get(tx, conn.id)
    kernel.store.close()
    return s


def counters(ktls: Callable[..., Any]) -> dict[str, int]:
    out = ktls("sysctl", *COUNTERS).stdout
    return {k: int(v) for k, v in (line.split(": ") for line in out.splitlines())}


@pytest.fixture
def host(state: str, init_state: Callable[..., Any], ktls: Callable[..., Any]) -> str:
    """The seed kernel with KTLS on, ktls_ocf loaded, and three connections on lagg0:
    V4 and V6 with software TLS 1.2 AES-GCM sessions, PLAIN without KTLS."""
    init_state(state, "seed", "--seed", "6")
    assert ktls("sysctl", "kern.ipc.tls.enable=1", "kern.ipc.mb_use_ext_pgs=1").exit == 0
    kernel = Kernel.open(state)
    with kernel.transaction() as tx:
        from ktls_core import kld

        kld.kldload(tx, "ktls_ocf")
    kernel.store.close()
    connect(state, V4, gcm())
    connect(state, PLAIN)
    connect(state, V6, gcm())
    return state


def txtls(ktls: Callable[..., Any], *ifnames: str) -> None:
    for ifname in ifnames:
        assert ktls("ifconfig", ifname, "txtls").exit == 0


# -- one connection ---------------------------------------------------------------------


def test_switch_to_ifnet_needs_txtls_then_moves_the_gauges(host: str, ktls: Any) -> None:
    before = counters(ktls)
    assert before["kern.ipc.tls.sw.gcm"] == 2 and before["kern.ipc.tls.stats.active"] == 2

    # lagg0 and its ports have no txtls: no send tag, the session stays software.
    r = ktls("switch_tls", "-i", *V4)
    assert (r.exit, r.stdout) == (1, "")
    assert r.stderr == f"switch_tls: {V4_NAME}: Operation not supported\n"
    after = counters(ktls)
    assert after["kern.ipc.tls.stats.switch_failed"] == 1
    assert after["kern.ipc.tls.stats.active"] == 2 and after["kern.ipc.tls.sw.gcm"] == 2

    txtls(ktls, "lagg0")
    r = ktls("switch_tls", "-i", *V4)
    assert (r.exit, r.stdout, r.stderr) == (0, f"{V4_NAME}: switched\n", "")
    c = counters(ktls)
    assert c["kern.ipc.tls.stats.switch_to_ifnet"] == 1
    assert (c["kern.ipc.tls.sw.gcm"], c["kern.ipc.tls.ifnet.gcm"]) == (1, 1)
    assert c["kern.ipc.tls.stats.active"] == 2
    s = session_of(host, V4)
    assert s is not None and s.mode == 2
    assert (s.tag_ifname, s.tag_port, s.backend) == ("lagg0", "cc0", None)

    # The last of -i / -s wins; -s is the default.
    r = ktls("switch_tls", "-i", "-s", f"{V4[0]}:{V4[1]}", f"{V4[2]}.{V4[3]}")
    assert (r.exit, r.stdout) == (0, f"{V4_NAME}: switched\n")
    c = counters(ktls)
    assert c["kern.ipc.tls.stats.switch_to_sw"] == 1
    assert (c["kern.ipc.tls.sw.gcm"], c["kern.ipc.tls.ifnet.gcm"]) == (2, 0)
    s = session_of(host, V4)
    assert s is not None and (s.mode, s.tag_port, s.backend) == (1, None, "OCF")


def test_sequence_state_survives_a_switch(host: str, ktls: Any) -> None:
    before = session_of(host, V4)
    txtls(ktls, "lagg0")
    assert ktls("switch_tls", "-i", *V4).exit == 0
    after = session_of(host, V4)
    assert before is not None and after is not None
    assert (after.next_seq, after.nonce_ctr, after.cipher_key, after.iv) == (
        before.next_seq,
        before.nonce_ctr,
        before.cipher_key,
        before.iv,
    )


def test_same_mode_and_no_session_are_switched_without_change(host: str, ktls: Any) -> None:
    before = counters(ktls)
    r = ktls("switch_tls", "-s", *V4)
    assert (r.exit, r.stdout) == (0, f"{V4_NAME}: switched\n")
    r = ktls("switch_tls", "-i", *PLAIN)  # no KTLS: ktls_set_tx_mode() returns 0
    assert (r.exit, r.stdout) == (0, f"{' '.join(PLAIN)}: switched\n")
    assert counters(ktls) == before


def test_ipv6_forms(host: str, ktls: Any) -> None:
    txtls(ktls, "lagg0")
    r = ktls("switch_tls", "-i", "2001:db8:1::10.443", "2001:db8:1::77.50122")
    assert (r.exit, r.stdout) == (0, f"{V6_NAME}: switched\n")
    s = session_of(host, V6)
    assert s is not None and (s.mode, s.tag_port) == (2, "cc0")
    # Non-canonical spellings print canonically (getnameinfo NI_NUMERICHOST).
    r = ktls("switch_tls", "2001:DB8:1:0::10", "443", "2001:db8:1:0:0::77", "50122")
    assert (r.exit, r.stdout) == (0, f"{V6_NAME}: switched\n")


def test_ipv6_needs_txtls6(host: str, ktls: Any) -> None:
    txtls(ktls, "lagg0")
    kernel = Kernel.open(host)
    with kernel.transaction() as tx:
        from ktls_core.net import store as net_store
        from ktls_core.net.ifnet import IFCAP_TXTLS6

        net = net_store.load(tx)
        net.setifcap("lagg0", IFCAP_TXTLS6, False)
        net_store.save(tx, net)
    kernel.store.close()
    assert ktls("switch_tls", "-i", *V4).exit == 0
    r = ktls("switch_tls", "-i", *V6)
    assert r.exit == 1 and r.stderr == f"switch_tls: {V6_NAME}: Operation not supported\n"


def test_the_t6_cannot_do_tls13(host: str, ktls: Any) -> None:
    # cxgbe_tls_tag_alloc() takes TLS 1.1 and 1.2 only: the driver refuses the tag.
    tls13 = ("198.51.100.10", "443", "198.51.100.9", "40001")
    connect(host, tls13, gcm(TLS_MINOR_VER_THREE))
    txtls(ktls, "lagg0")
    r = ktls("switch_tls", "-i", *tls13)
    assert r.exit == 1
    assert r.stderr == f"switch_tls: {' '.join(tls13)}: Protocol not supported\n"
    assert ktls("switch_tls", "-i", *V4).exit == 0


def test_unknown_connection_is_esrch(host: str, ktls: Any) -> None:
    r = ktls("switch_tls", "198.51.100.10", "443", "198.51.100.99", "1")
    assert (r.exit, r.stdout) == (1, "")
    assert r.stderr == "switch_tls: 198.51.100.10 443 198.51.100.99 1: No such process\n"


def test_switch_to_sw_without_a_backend_fails(host: str, ktls: Any) -> None:
    txtls(ktls, "lagg0")
    assert ktls("switch_tls", "-i", *V4).exit == 0
    kernel = Kernel.open(host)
    with kernel.transaction() as tx:
        doc = tx.doc("kld")
        doc["loaded"], doc["files"] = [], []
        tx.put_doc("kld", doc)  # as if ktls_ocf had been unloaded
    kernel.store.close()
    r = ktls("switch_tls", "-s", *V4)
    assert r.exit == 1 and r.stderr == f"switch_tls: {V4_NAME}: Operation not supported\n"
    assert counters(ktls)["kern.ipc.tls.stats.switch_failed"] == 1
    s = session_of(host, V4)
    assert s is not None and s.mode == 2


# -- many connections ---------------------------------------------------------------------


def test_all_switches_every_connection_in_pcb_order(host: str, ktls: Any) -> None:
    txtls(ktls, "lagg0")
    r = ktls("switch_tls", "-i", "-a")
    assert r.exit == 0 and r.stderr == ""
    assert r.stdout.splitlines() == [
        f"{V4_NAME}: switched",
        f"{' '.join(PLAIN)}: switched",
        f"{V6_NAME}: switched",
    ]
    c = counters(ktls)
    assert c["kern.ipc.tls.stats.switch_to_ifnet"] == 2
    assert (c["kern.ipc.tls.sw.gcm"], c["kern.ipc.tls.ifnet.gcm"]) == (0, 2)
    assert c["kern.ipc.tls.stats.active"] == 2
    r = ktls("switch_tls", "-S", "freebsd")
    assert r.exit == 0 and len(r.stdout.splitlines()) == 3
    c = counters(ktls)
    assert c["kern.ipc.tls.stats.switch_to_sw"] == 2 and c["kern.ipc.tls.sw.gcm"] == 2


def test_all_reports_failures_and_exits_1(host: str, ktls: Any) -> None:
    r = ktls("switch_tls", "-i", "-a")  # no txtls anywhere: both sessions fail
    assert r.exit == 1
    assert r.stdout == f"{' '.join(PLAIN)}: switched\n"
    assert r.stderr.splitlines() == [
        f"switch_tls: {V4_NAME}: Operation not supported",
        f"switch_tls: {V6_NAME}: Operation not supported",
    ]
    assert counters(ktls)["kern.ipc.tls.stats.switch_failed"] == 2


def test_list_prints_rerunnable_commands(host: str, ktls: Any) -> None:
    r = ktls("switch_tls", "-l", "-i", "-a")
    assert r.exit == 0
    assert r.stdout.splitlines() == [
        f"switch_tls -i {V4_NAME}",
        f"switch_tls -i {' '.join(PLAIN)}",
        f"switch_tls -i {V6_NAME}",
    ]
    assert counters(ktls)["kern.ipc.tls.stats.switch_to_ifnet"] == 0
    r = ktls("switch_tls", "-l", "-S", "freebsd")
    assert r.stdout.splitlines()[0] == f"switch_tls -s {V4_NAME}"
    # Each line runs as it is.
    txtls(ktls, "lagg0")
    words = ktls("switch_tls", "-l", "-i", "-a").stdout.splitlines()[0].split()
    assert ktls(*words).exit == 0
    s = session_of(host, V4)
    assert s is not None and s.mode == 2


def test_other_stack_selects_nothing(host: str, ktls: Any) -> None:
    r = ktls("switch_tls", "-S", "rack")
    assert (r.exit, r.stdout, r.stderr) == (0, "", "")
    assert ktls("switch_tls", "-l", "-S", "bbr").stdout == ""


def test_current_profile_ealready(state: str, init_state: Callable[..., Any], ktls: Any) -> None:
    init_state(state, "current", "--seed", "6")
    assert ktls("sysctl", "kern.ipc.tls.enable=1").exit == 0
    connect(state, V4, gcm())
    txtls(ktls, "lagg0")
    assert ktls("switch_tls", "-i", *V4).exit == 0
    r = ktls("switch_tls", "-i", *V4)
    assert r.exit == 1
    assert r.stderr == f"switch_tls: {V4_NAME}: Operation already in progress\n"
    r = ktls("switch_tls", "-i", "-a")
    assert r.exit == 1 and "Operation already in progress" in r.stderr
    c = counters(ktls)
    assert c["kern.ipc.tls.stats.switch_failed"] == 0  # refused before any clone


# -- JSON -------------------------------------------------------------------------------


def test_json_document(host: str, ktls: Any) -> None:
    txtls(ktls, "lagg0")
    r = ktls("--format", "json", "switch_tls", "-i", *V4)
    assert r.exit == 0
    doc = json.loads(r.stdout)
    assert doc == {
        "switch_tls": {
            "mode": "ifnet",
            "all": False,
            "stack": None,
            "list": False,
            "connections": [
                {
                    "local_address": "198.51.100.10",
                    "local_port": 443,
                    "foreign_address": "198.51.100.7",
                    "foreign_port": 51514,
                    "result": "switched",
                }
            ],
        }
    }
    r = ktls("--format", "json", "switch_tls", "-s", "198.51.100.10", "1", "198.51.100.7", "2")
    assert r.exit == 1
    entry = json.loads(r.stdout)["switch_tls"]["connections"][0]
    assert (entry["result"], entry["errno"], entry["error"]) == ("failed", 3, "No such process")
    assert "No such process" in r.stderr
    r = ktls("--format", "json", "switch_tls", "-l", "-a")
    listed = json.loads(r.stdout)["switch_tls"]["connections"]
    assert listed[0]["command"] == f"switch_tls -s {V4_NAME}"
    assert {e["result"] for e in listed} == {"listed"}


# -- goldens: every form and error ------------------------------------------------------

GOLDEN_CASES: list[tuple[str, list[str]]] = [
    ("four_words", ["-i", *V4]),
    ("two_words_colon", ["-s", f"{V4[0]}:{V4[1]}", f"{V4[2]}:{V4[3]}"]),
    ("two_words_dot", [f"{V4[0]}.{V4[1]}", f"{V4[2]}.{V4[3]}"]),
    ("ipv6_dot", ["2001:db8:1::10.443", "2001:db8:1::77.50122"]),
    ("no_ktls", [*PLAIN]),
    ("all", ["-a"]),
    ("list_all", ["-l", "-i", "-a"]),
    ("list_stack", ["-l", "-S", "freebsd"]),
    ("ifnet_all", ["-i", "-a"]),
    ("stack_other", ["-S", "rack"]),
    ("unknown", ["198.51.100.10", "443", "198.51.100.99", "1"]),
    ("getaddrinfo_local", ["host.example", "443", *V4[2:]]),
    ("getaddrinfo_foreign", [*V4[:2], "198.51.100.7", "99999"]),
    ("families", ["198.51.100.10", "443", "2001:db8:1::77", "50122"]),
    ("usage_none", []),
    ("usage_three", ["a", "1", "b"]),
    ("usage_list_conn", ["-l", *V4]),
    ("usage_all_stack", ["-a", "-S", "freebsd"]),
    ("usage_no_separator", ["localhost", "198.51.100.7.51514"]),
    ("usage_empty_port", ["198.51.100.10:", "198.51.100.7:51514"]),
    ("illegal_option", ["-x"]),
    ("missing_stack", ["-S"]),
]


@pytest.mark.parametrize(("name", "argv"), GOLDEN_CASES, ids=[c[0] for c in GOLDEN_CASES])
def test_golden(
    host: str, ktls: Any, check_golden: Callable[[str, str], None], name: str, argv: list[str]
) -> None:
    txtls(ktls, "lagg0")
    r = ktls("switch_tls", *argv)
    check_golden(
        f"switch_tls/{name}.txt",
        f"$ switch_tls {' '.join(argv)}\n[exit {r.exit}]\n[stdout]\n{r.stdout}[stderr]\n{r.stderr}",
    )
