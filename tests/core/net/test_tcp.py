"""Connections: naming as tcpdrop reads it, connect(2)'s checks, bulk creation."""

from __future__ import annotations

from pathlib import Path

import pytest
from ktls_sw import boot

from ktls_core.errors import Errno, KtlsError
from ktls_core.net import tcp


@pytest.mark.parametrize(
    ("words", "expected"),
    [
        (["192.0.2.10", "443", "198.51.100.7", "51514"], "192.0.2.10 443 198.51.100.7 51514"),
        (["192.0.2.10:443", "198.51.100.7:51514"], "192.0.2.10 443 198.51.100.7 51514"),
        (["192.0.2.10.443", "198.51.100.7.51514"], "192.0.2.10 443 198.51.100.7 51514"),
        (["::1.443", "::1.50000"], "::1 443 ::1 50000"),
        (["2001:db8:1::10:443", "2001:db8:1:0::77.1"], "2001:db8:1::10 443 2001:db8:1::77 1"),
    ],
)
def test_connection_names(words: list[str], expected: str) -> None:
    assert str(tcp.parse_endpoints(words)) == expected


def test_naming_errors_as_tcpdrop_words_them() -> None:
    with pytest.raises(tcp.ConnSyntaxError):
        tcp.parse_endpoints(["192.0.2.10", "443", "x"])
    with pytest.raises(tcp.ConnSyntaxError):
        tcp.parse_endpoints(["192.0.2.10:", "198.51.100.7:1"])
    with pytest.raises(tcp.ResolveError) as info:
        tcp.parse_endpoints(["foo:443", "198.51.100.7:1"])
    assert str(info.value) == (
        "getaddrinfo: foo port 443: hostname nor servname provided, or not known"
    )
    with pytest.raises(tcp.FamilyError) as fam:
        tcp.parse_endpoints(["192.0.2.10:443", "::1.1"])
    assert str(fam.value) == "192.0.2.10 443 ::1 1: different address families"


SERVICES = {"https": 443, "http": 80}.get  # a services database, as the CLI passes one


@pytest.mark.parametrize(
    ("port", "expected"),
    [
        ("443", 443), ("0443", 443), ("65535", 65535), ("https", 443), ("http", 80),
        ("65536", tcp.EAI_SERVICE), ("gopherx", tcp.EAI_SERVICE), ("-1", tcp.EAI_SERVICE),
        ("\u0664\u0664\u0663", tcp.EAI_SERVICE),  # Arabic-Indic digits: not a number to strtoul
        ("\u00b2", tcp.EAI_SERVICE),  # a superscript 2 is a digit to Python, not to getaddrinfo
        ("", tcp.EAI_NONAME),
    ],
)  # fmt: skip
def test_ports_are_numbers_or_service_names(port: str, expected: int | str) -> None:
    if isinstance(expected, int):
        assert tcp.resolve("192.0.2.10", port, SERVICES) == (4, "192.0.2.10", expected)
    else:
        with pytest.raises(tcp.ResolveError) as info:
            tcp.resolve("192.0.2.10", port, SERVICES)
        assert str(info.value) == f"getaddrinfo: 192.0.2.10 port {port}: {expected}"
    # Without a services database a name is unknown, as an empty /etc/services makes it.
    if not port.isascii() or not port.isdigit():
        with pytest.raises(tcp.ResolveError):
            tcp.resolve("192.0.2.10", port)


def test_connect_checks_and_ephemeral_ports(tmp_path: Path) -> None:
    kernel = boot(tmp_path)
    ep = tcp.parse_endpoints(["192.0.2.10:443", "198.51.100.7:51514"])

    def errno(words: list[str]) -> int:
        with pytest.raises(KtlsError) as info, kernel.transaction() as tx:
            tcp.connect(tx, tcp.parse_endpoints(words))
        return int(info.value.errno)

    with kernel.transaction() as tx:
        conn = tcp.connect(tx, ep)
        assert (conn.state, conn.snd_nxt) == ("ESTABLISHED", conn.iss)
    assert errno(["192.0.2.10:443", "198.51.100.7:51514"]) == Errno.EADDRINUSE
    assert errno(["203.0.113.99:443", "198.51.100.7:1"]) == Errno.EADDRNOTAVAIL
    assert errno(["192.0.2.10:443", "198.51.100.7:0"]) == Errno.EADDRNOTAVAIL
    assert errno(["2001:db8:1::10.443", "2001:db8:99::1.1"]) == Errno.ENETUNREACH
    with kernel.transaction() as tx:
        a = tcp.connect(tx, tcp.parse_endpoints(["192.0.2.10:0", "198.51.100.7:80"]))
        b = tcp.connect(tx, tcp.parse_endpoints(["192.0.2.10:0", "198.51.100.7:80"]))
    assert (a.lport, b.lport) == (tcp.EPHEMERAL_FIRST, tcp.EPHEMERAL_FIRST + 1)
    assert b.id > a.id > conn.id


def test_bulk_connect_steps_foreign_ports_and_addresses(tmp_path: Path) -> None:
    kernel = boot(tmp_path)
    ep = tcp.parse_endpoints(["192.0.2.10:443", "198.51.100.7:65530"])
    with kernel.transaction() as tx:
        ids = tcp.connect_many(tx, ep, 10)
        last = tcp.get(tx, ids[-1])
        assert tcp.count(tx) == 10
    assert last is not None and (last.faddr, last.fport) == ("198.51.100.8", 1027)
    # All or nothing: a range that runs into an existing connection adds none.
    with pytest.raises(KtlsError) as info, kernel.transaction() as tx:
        tcp.connect_many(tx, tcp.parse_endpoints(["192.0.2.10:443", "198.51.100.7:65000"]), 600)
    assert info.value.errno == Errno.EADDRINUSE
    with kernel.snapshot() as tx:
        assert tcp.count(tx) == 10


def test_tcp_sequence_reservation_and_give_back(tmp_path: Path) -> None:
    kernel = boot(tmp_path)
    with kernel.transaction() as tx:
        conn = tcp.connect(tx, tcp.parse_endpoints(["192.0.2.10:443", "198.51.100.7:1"]))
        first = tcp.reserve_seq(tx, conn, 100)
        assert first == conn.iss
        tcp.give_back_seq(tx, conn.id, first + 100, 40)
        assert tcp.reserve_seq(tx, conn, 1) == (first + 60) & 0xFFFFFFFF
        # Someone reserved after: nothing is given back.
        tcp.give_back_seq(tx, conn.id, first + 100, 40)
        now = tcp.get(tx, conn.id)
    assert now is not None and now.snd_nxt == (first + 61) & 0xFFFFFFFF
