"""Wires (ktls_cli.adapters): a tee asks for the smallest batch its wires ask for."""

from __future__ import annotations

import socket

from ktls_cli.adapters import TeeWire
from ktls_cli.realpeer import SocketWire


class _File:
    def transmit(self, data: memoryview, tcp_seq: int, link: object) -> None:
        pass


def test_a_tee_with_a_socket_takes_the_sockets_batches() -> None:
    a, b = socket.socketpair()
    try:
        sock = SocketWire(a)
        assert TeeWire([_File(), sock]).batch_bytes == sock.batch_bytes == 1 << 20  # type: ignore[list-item]
        assert not hasattr(TeeWire([_File(), _File()]), "batch_bytes")  # type: ignore[list-item]
    finally:
        a.close()
        b.close()
