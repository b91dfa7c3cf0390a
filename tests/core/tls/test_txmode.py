"""ifnet TLS on the state (ktls_core/tls/txmode.py): ktls_set_tx_mode() per connection,
ktls_output_eagain() and the ktls_reset_send_tag() task, ifnet_max_rexmit_pct."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from ktls_core.errors import Errno, KtlsError
from ktls_core.kernel import Kernel, Tx
from ktls_core.net import tcp
from ktls_core.tls import ifnet_tls, txmode
from ktls_core.tls import session as sessions
from ktls_core.tls.enable import TlsEnable
from ktls_core.tls.suites import CryptoAlg

PEER = ("198.51.100.10", "443", "198.51.100.7", "51514")
NAME = " ".join(PEER)


@contextmanager
def kernel_tx(state: str) -> Iterator[Tx]:
    kernel = Kernel.open(state)
    try:
        with kernel.transaction() as tx:
            yield tx
    finally:
        kernel.store.close()


def conn_of(tx: Tx) -> tcp.Conn:
    return tcp.find(tx, tcp.parse_endpoints(PEER))


def counter(tx: Tx, name: str) -> int:
    return tx.sysctl(name)


@pytest.fixture
def ifnet_conn(state: str, init_state: Callable[..., Any], ktls: Callable[..., Any]) -> str:
    """Current profile, ifnet permitted, txtls on lagg0: a new session goes to the NIC."""
    init_state(state, "current", "--seed", "3")
    assert ktls("sysctl", "kern.ipc.tls.enable=1", "kern.ipc.tls.ifnet.permitted=1").exit == 0
    assert ktls("ifconfig", "lagg0", "txtls").exit == 0
    with kernel_tx(state) as tx:
        conn = tcp.connect(tx, tcp.parse_endpoints(PEER))
        s = sessions.enable_tx(tx, conn, TlsEnable(CryptoAlg.AES_NIST_GCM_16, bytes(16), bytes(4)))
        assert s.mode == ifnet_tls.TCP_TLS_MODE_IFNET
        assert (s.tag_ifname, s.tag_port) == ("lagg0", "cc0")
    return state


def test_output_eagain_schedules_once(ifnet_conn: str) -> None:
    with kernel_tx(ifnet_conn) as tx:
        cid = conn_of(tx).id
        assert txmode.output_eagain(tx, cid)
        assert not txmode.output_eagain(tx, cid)
        s = sessions.get(tx, cid)
        assert s is not None and s.reset_pending


def test_reset_after_failover_moves_the_tag(ifnet_conn: str, ktls: Any) -> None:
    assert ktls("ifconfig", "cc0", "down").exit == 0
    with kernel_tx(ifnet_conn) as tx:
        conn = conn_of(tx)
        txmode.output_eagain(tx, conn.id)
        out = txmode.reset_send_tag(tx, conn)
        assert out.tag is not None and (out.tag.ifname, out.tag.port) == ("lagg0", "cc1")
        s = sessions.get(tx, conn.id)
        assert s is not None and (s.tag_port, s.reset_pending) == ("cc1", False)
        assert counter(tx, "kern.ipc.tls.ifnet.reset") == 1
        assert tx.dmesg()[-1] == f"ktls_reset_send_tag: {NAME}: send tag moved from cc0 to cc1"


def test_reset_onto_an_interface_without_txtls_drops_the_connection(
    ifnet_conn: str, ktls: Any
) -> None:
    # A host route moves the peer to em0 (Intel, no TLS offload).
    assert ktls("route", "add", "-host", "198.51.100.7", "-interface", "em0").exit == 0
    with kernel_tx(ifnet_conn) as tx:
        conn = conn_of(tx)
        txmode.output_eagain(tx, conn.id)
        out = txmode.reset_send_tag(tx, conn)
        assert (out.tag, out.dropped, out.reset_pending) == (None, True, True)
        assert tcp.get(tx, conn.id) is None and sessions.get(tx, conn.id) is None
        assert counter(tx, "kern.ipc.tls.ifnet.reset_failed") == 1
        assert counter(tx, "kern.ipc.tls.ifnet.reset_dropped") == 1
        assert counter(tx, "kern.ipc.tls.ifnet.gcm") == 0
        assert counter(tx, "kern.ipc.tls.stats.active") == 0
        assert tx.dmesg()[-1] == (
            f"ktls_reset_send_tag: {NAME}: no send tag on em0: Operation not supported;"
            " connection dropped"
        )


def test_retransmissions_above_the_limit_move_the_session_to_software(
    ifnet_conn: str, ktls: Any
) -> None:
    with kernel_tx(ifnet_conn) as tx:
        conn = conn_of(tx)
        tcp.reserve_seq(tx, conn, 100_000)  # t_sndbytes
        assert txmode.account_retransmit(tx, conn, 2_000) is None  # 1.96 % -> 1
        event = txmode.account_retransmit(tx, conn, 2_000)  # 3.8 % > 2
        assert event is not None and event.ok and event.rexmit_pct == 3
        s = sessions.get(tx, conn.id)
        assert s is not None and (s.mode, s.tag_port) == (ifnet_tls.TCP_TLS_MODE_SW, None)
        assert counter(tx, "kern.ipc.tls.stats.ifnet_disable_ok") == 1
        assert counter(tx, "kern.ipc.tls.stats.switch_to_sw") == 1
        assert (counter(tx, "kern.ipc.tls.sw.gcm"), counter(tx, "kern.ipc.tls.ifnet.gcm")) == (1, 0)
        # t_nic_ktls_xmit_dis: never ifnet again on this connection.
        with pytest.raises(KtlsError) as info:
            txmode.set_tx_mode(tx, conn, ifnet_tls.TCP_TLS_MODE_IFNET)
        assert info.value.errno == Errno.ENXIO
        assert txmode.account_retransmit(tx, conn, 50_000) is None
        assert counter(tx, "kern.ipc.tls.stats.ifnet_disable_ok") == 1


def test_seed_has_no_rexmit_limit(state: str, init_state: Callable[..., Any], ktls: Any) -> None:
    init_state(state, "seed")
    with kernel_tx(state) as tx:
        assert txmode.max_rexmit_pct(tx) is None
        tx.set_sysctl("kern.ipc.tls.ifnet.permitted", 1)
        conn = tcp.connect(tx, tcp.parse_endpoints(PEER))
        assert txmode.account_retransmit(tx, conn, 10_000) is None
        row = tx.conn.execute("SELECT rxt_bytes FROM conns WHERE id = ?", (conn.id,)).fetchone()
        assert row[0] == 10_000


def test_set_tx_mode_round_trip_keeps_sequence_state(ifnet_conn: str) -> None:
    with kernel_tx(ifnet_conn) as tx:
        conn = conn_of(tx)
        tx.conn.execute("UPDATE sessions SET next_seq = 41 WHERE conn_id = ?", (conn.id,))
        before = sessions.get(tx, conn.id)
        change = txmode.set_tx_mode(tx, conn, ifnet_tls.TCP_TLS_MODE_SW)
        assert (change.old, change.new, change.changed) == (2, 1, True)
        change = txmode.set_tx_mode(tx, conn, ifnet_tls.TCP_TLS_MODE_IFNET)
        assert change.tag is not None and change.tag.port == "cc0"
        after = sessions.get(tx, conn.id)
        assert before is not None and after is not None
        assert (after.next_seq, after.nonce_ctr) == (41, before.nonce_ctr)
        assert counter(tx, "kern.ipc.tls.stats.switch_to_sw") == 1
        assert counter(tx, "kern.ipc.tls.stats.switch_to_ifnet") == 1
        assert counter(tx, "kern.ipc.tls.stats.active") == 1


def test_txtls_mode_commits_switch_failed_before_raising(ifnet_conn: str, ktls: Any) -> None:
    assert ktls("ifconfig", "lagg0", "-txtls").exit == 0
    assert ktls("switch_tls", "-s", *PEER).exit == 0
    kernel = Kernel.open(ifnet_conn)
    with pytest.raises(KtlsError) as info:
        txmode.txtls_mode(kernel, tcp.parse_endpoints(PEER), ifnet_tls.TCP_TLS_MODE_IFNET)
    assert info.value.errno == Errno.EOPNOTSUPP
    with kernel.snapshot() as tx:
        assert counter(tx, "kern.ipc.tls.stats.switch_failed") == 1
        assert counter(tx, "kern.ipc.tls.stats.active") == 1
    change = txmode.txtls_mode(kernel, tcp.parse_endpoints(PEER), ifnet_tls.TCP_TLS_MODE_SW)
    assert not change.changed
    kernel.store.close()


@pytest.mark.parametrize("proto", ["failover", "lacp", "loadbalance"])
def test_hash_modulus_keeps_every_port_choice(
    state: str, init_state: Callable[..., Any], ktls: Any, proto: str
) -> None:
    init_state(state, "seed")
    assert ktls("ifconfig", "lagg0", "laggproto", proto).exit == 0
    kernel = Kernel.open(state)
    with kernel.snapshot() as tx:
        net = txmode.load_net(tx)
        m = txmode.hash_modulus(net)
        assert m == 2  # two ports: lcm(1, 2)
        for h in range(0, 4000, 7):
            assert txmode.tls_egress(net, 4, "198.51.100.7", h) == txmode.tls_egress(
                net, 4, "198.51.100.7", h % m
            )
    kernel.store.close()


def test_switch_all_to_ifnet_under_lacp_spreads_the_tags(
    state: str, init_state: Callable[..., Any], ktls: Any
) -> None:
    init_state(state, "seed", "--seed", "2")
    assert ktls("sysctl", "kern.ipc.tls.enable=1", "kern.ipc.mb_use_ext_pgs=1").exit == 0
    assert ktls("kldload", "ktls_ocf").exit == 0
    assert ktls("ifconfig", "lagg0", "laggproto", "lacp").exit == 0
    assert ktls("ifconfig", "lagg0", "txtls").exit == 0
    with kernel_tx(state) as tx:
        ep = tcp.parse_endpoints(["198.51.100.10", "443", "198.51.100.7", "51600"])
        for cid in tcp.connect_many(tx, ep, 8):
            conn = tcp.get(tx, cid)
            assert conn is not None
            sessions.enable_tx(tx, conn, TlsEnable(CryptoAlg.AES_NIST_GCM_16, bytes(16), bytes(4)))
    assert ktls("switch_tls", "-i", "-a").exit == 0
    with kernel_tx(state) as tx:
        net = txmode.load_net(tx)
        tags = {}
        for conn in tcp.iter_conns(tx):
            s = sessions.get(tx, conn.id)
            assert s is not None and s.mode == ifnet_tls.TCP_TLS_MODE_IFNET
            tags[conn.fport] = s.tag_port
            # Each tag is on the port the flow's hash picks.
            egress = txmode.tls_egress(net, 4, conn.faddr, conn.flowid)
            assert egress is not None and egress.port == s.tag_port
        assert set(tags.values()) == {"cc0", "cc1"}
        assert counter(tx, "kern.ipc.tls.ifnet.gcm") == 8
        assert counter(tx, "kern.ipc.tls.stats.switch_to_ifnet") == 8


def test_failover_in_the_middle_of_a_long_send(ifnet_conn: str) -> None:
    """cc0 goes down while a three-batch send is under way (another process's ifconfig):
    the send looks at the egress between batches, meets the stale tag, resets it onto
    cc1 and goes on; the stream decodes whole and ifnet.reset counts one."""
    import os
    import time

    from ktls_core.tls import output
    from tests.ktls_sw import MemSource, MemWire
    from tests.oracle import decrypt_stream

    data = os.urandom(3 * output.BATCH_BYTES)

    class FailingOver(MemSource):
        calls = 0

        def fill(self, buf: memoryview) -> int:
            self.calls += 1
            if self.calls == 3:  # the first batch went out on cc0, the second is queued
                with kernel_tx(ifnet_conn) as tx:
                    from ktls_core.net import store as net_store

                    net = net_store.load(tx)
                    net.set_up("cc0", False)
                    net_store.save(tx, net)
                time.sleep(txmode.REFRESH_SECONDS * 1.5)  # the send will look again
            return super().fill(buf)

    events: list[Any] = []
    wire = MemWire()
    kernel = Kernel.open(ifnet_conn)
    result = output.send(
        kernel, tcp.parse_endpoints(PEER), FailingOver(data), wire=wire, on_event=events.append
    )
    kernel.store.close()
    assert result.bytes == len(data)
    resets = [e for e in events if isinstance(e, ifnet_tls.TagReset)]
    assert [(r.old.port if r.old else None, r.new.port) for r in resets] == [("cc0", "cc1")]
    dropped = [e for e in events if isinstance(e, ifnet_tls.PacketDropped)]
    per_batch = output.BATCH_BYTES // 16384
    assert [d.seq for d in dropped] == [per_batch]  # the second batch's first record
    ports = [e.port for e in events if isinstance(e, output.Transmitted)]
    assert ports[0] == "cc0" and ports[-1] == "cc1"
    suite = {"version": "1.2", "cipher": "aes-gcm", "key": bytes(16), "iv": bytes(4)}
    assert b"".join(p for _, p in decrypt_stream(bytes(wire.data), suite)) == data
    with kernel_tx(ifnet_conn) as tx:
        assert counter(tx, "kern.ipc.tls.ifnet.reset") == 1
