"""Ports by service name: getaddrinfo(3) reads a port that is not a number from the
services database, so `tcpdrop 192.0.2.10 https ...` works as on FreeBSD."""

from __future__ import annotations

import socket
from typing import Any

import pytest

CONN = ["203.0.113.10:443", "203.0.113.7:50000"]


@pytest.fixture
def conn(state: str, init_state: Any, ktls: Any) -> Any:
    init_state(state)
    assert socket.getservbyname("https", "tcp") == 443  # this host's /etc/services
    assert ktls("sysctl", "kern.ipc.tls.enable=1", "kern.ipc.mb_use_ext_pgs=1").exit == 0
    assert ktls("kldload", "ktls_ocf").exit == 0
    assert ktls("connect", *CONN, "--random-keys", "--tls-version", "1.2").exit == 0
    return ktls


def test_every_tool_takes_a_service_name(conn: Any) -> None:
    ktls = conn
    r = ktls("switch_tls", "-s", "203.0.113.10", "https", "203.0.113.7", "50000")
    assert (r.exit, r.stdout) == (0, "203.0.113.10 443 203.0.113.7 50000: switched\n")
    r = ktls("getsockopt", "203.0.113.10:https", "203.0.113.7:50000", "TCP_TXTLS_MODE")
    assert (r.exit, r.stdout) == (0, "TCP_TXTLS_MODE: 1 (sw)\n")
    r = ktls("send", "203.0.113.10.https", "203.0.113.7.50000", "--data", "x")
    assert r.exit == 0 and r.stdout.startswith("203.0.113.10 443 203.0.113.7 50000: 1 record")
    r = ktls("tcpdrop", "203.0.113.10:https", "203.0.113.7:50000")
    assert (r.exit, r.stdout) == (0, "203.0.113.10 443 203.0.113.7 50000: dropped\n")


@pytest.mark.parametrize("tool", ["tcpdrop", "switch_tls"])
def test_an_unknown_service_is_getaddrinfos_error(conn: Any, tool: str) -> None:
    r = conn(tool, "203.0.113.10", "nosuchservice", "203.0.113.7", "50000")
    assert (r.exit, r.stdout) == (1, "")
    assert r.stderr == (
        f"{tool}: getaddrinfo: 203.0.113.10 port nosuchservice:"
        " servname not supported for ai_socktype\n"
    )
