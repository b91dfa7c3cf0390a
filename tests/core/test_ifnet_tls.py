"""ifnet TLS, pure parts: send tags, ip_output_send(), the reset task, ktls_set_tx_mode(),
ifnet_max_rexmit_pct and the NIC model's segmentation (ktls_core/tls/ifnet_tls.py)."""

from __future__ import annotations

from collections import Counter

import pytest

from ktls_core.errors import Errno, KtlsError
from ktls_core.tls import ifnet_tls as it
from ktls_core.tls.ifnet_tls import (
    IFCAP_MEXTPG,
    IFCAP_TXTLS4,
    IFCAP_TXTLS6,
    IFCAP_TXTLS_RTLMT,
    TCP_TLS_MODE_IFNET,
    TCP_TLS_MODE_NONE,
    TCP_TLS_MODE_SW,
    Egress,
    SendTag,
)
from ktls_core.tls.suites import (
    TLS_MINOR_VER_ONE,
    TLS_MINOR_VER_THREE,
    TLS_MINOR_VER_TWO,
    TLS_MINOR_VER_ZERO,
    CryptoAlg,
    Suite,
)

TLS_CAPS = IFCAP_MEXTPG | IFCAP_TXTLS4 | IFCAP_TXTLS6
CONN = "198.51.100.10 443 198.51.100.7 51514"


class Sink:
    """A CounterSink that remembers every update (counters and gauges apart)."""

    def __init__(self) -> None:
        self.counters: Counter[str] = Counter()
        self.gauges: Counter[str] = Counter()

    def count(self, name: str, delta: int = 1) -> None:
        assert delta >= 0
        self.counters[name] += delta

    def gauge(self, name: str, delta: int) -> None:
        self.gauges[name] += delta


def lagg(port: str, port_caps: int = TLS_CAPS, caps: int = TLS_CAPS) -> Egress:
    return Egress("lagg0", caps, port, port_caps)


def test_capability_bits_are_net_ifnets() -> None:
    from ktls_core.net import ifnet

    assert (IFCAP_MEXTPG, IFCAP_TXTLS4, IFCAP_TXTLS6, IFCAP_TXTLS_RTLMT) == (
        ifnet.IFCAP_MEXTPG,
        ifnet.IFCAP_TXTLS4,
        ifnet.IFCAP_TXTLS6,
        ifnet.IFCAP_TXTLS_RTLMT,
    )


def test_route_egress_is_an_egress_view() -> None:
    from ktls_core.net import route
    from ktls_core.net.topology import network_from_default

    net = network_from_default("seed")
    e: it.EgressView = route.egress(net, "198.51.100.7", 0)
    assert (e.ifname, e.port, e.snd_tag) == ("lagg0", "cc0", True)
    # cc0 does not have txtls enabled by default: no tag.
    with pytest.raises(KtlsError) as info:
        it.alloc_snd_tag(e, ipv6=False, force=True, permitted=True)
    assert info.value.errno == Errno.EOPNOTSUPP


# -- ktls_alloc_snd_tag() -----------------------------------------------------------------


def test_tag_lives_on_the_physical_port_behind_the_lagg() -> None:
    tag = it.alloc_snd_tag(lagg("cc0"), ipv6=False, force=False, permitted=True)
    assert tag == SendTag(it.IF_SND_TAG_TYPE_TLS, "lagg0", "cc0")
    assert tag.type_name == "tls"


def test_direct_interface_is_its_own_port() -> None:
    tag = it.alloc_snd_tag(Egress.direct("mce0", TLS_CAPS), ipv6=True, force=False, permitted=True)
    assert (tag.ifname, tag.port) == ("mce0", "mce0")


@pytest.mark.parametrize(
    ("egress", "ipv6", "force", "permitted", "errno"),
    [
        # ifnet.permitted = 0 refuses unless forced (ktls_set_tx_mode, reset task).
        (lagg("cc0"), False, False, False, Errno.ENXIO),
        # No cached route.
        (None, False, False, True, Errno.ENXIO),
        (None, False, True, False, Errno.ENXIO),
        # Unmapped mbufs (NOMAP/MEXTPG) not enabled on the route's interface.
        (lagg("cc0", caps=IFCAP_TXTLS4 | IFCAP_TXTLS6), False, True, True, Errno.EOPNOTSUPP),
        # The family's TXTLS bit.
        (lagg("cc0", caps=IFCAP_MEXTPG | IFCAP_TXTLS6), False, False, True, Errno.EOPNOTSUPP),
        (lagg("cc0", caps=IFCAP_MEXTPG | IFCAP_TXTLS4), True, False, True, Errno.EOPNOTSUPP),
        # em0: no TLS capability at all.
        (Egress.direct("em0", IFCAP_MEXTPG), False, True, True, Errno.EOPNOTSUPP),
        # A lagg with no active port.
        (Egress("lagg0", TLS_CAPS, None, 0), False, False, True, Errno.EOPNOTSUPP),
        # The port's driver has TLS off.
        (lagg("cc1", port_caps=IFCAP_MEXTPG), False, False, True, Errno.EOPNOTSUPP),
    ],
)
def test_alloc_snd_tag_errors(
    egress: Egress | None, ipv6: bool, force: bool, permitted: bool, errno: Errno
) -> None:
    with pytest.raises(KtlsError) as info:
        it.alloc_snd_tag(egress, ipv6=ipv6, force=force, permitted=permitted)
    assert info.value.errno == errno


GCM12 = Suite(CryptoAlg.AES_NIST_GCM_16, 16, TLS_MINOR_VER_TWO)


@pytest.mark.parametrize(
    ("driver", "suite", "errno"),
    [
        ("cxgbe", GCM12, None),
        ("cxgbe", Suite(CryptoAlg.AES_NIST_GCM_16, 24, TLS_MINOR_VER_ONE), None),
        ("cxgbe", Suite(CryptoAlg.AES_CBC, 32, TLS_MINOR_VER_TWO, CryptoAlg.SHA2_384_HMAC), None),
        # The T6 does no TLS 1.0 and no TLS 1.3, and no ChaCha20.
        ("cxgbe", Suite(CryptoAlg.AES_CBC, 16, TLS_MINOR_VER_ZERO, CryptoAlg.SHA1_HMAC),
         Errno.EPROTONOSUPPORT),
        ("cxgbe", Suite(CryptoAlg.AES_NIST_GCM_16, 16, TLS_MINOR_VER_THREE), Errno.EPROTONOSUPPORT),
        ("cxgbe", Suite(CryptoAlg.CHACHA20_POLY1305, 32, TLS_MINOR_VER_TWO),
         Errno.EPROTONOSUPPORT),
        # ConnectX-6 Dx: AES-GCM-128/256 with TLS 1.2 and 1.3 only.
        ("mlx5en", Suite(CryptoAlg.AES_NIST_GCM_16, 32, TLS_MINOR_VER_THREE), None),
        ("mlx5en", Suite(CryptoAlg.AES_NIST_GCM_16, 24, TLS_MINOR_VER_TWO), Errno.EINVAL),
        ("mlx5en", Suite(CryptoAlg.AES_CBC, 16, TLS_MINOR_VER_TWO, CryptoAlg.SHA1_HMAC),
         Errno.EPROTONOSUPPORT),
        ("mlx5en", Suite(CryptoAlg.AES_NIST_GCM_16, 16, TLS_MINOR_VER_ONE), Errno.EPROTONOSUPPORT),
        # em(4) has no TLS send tags at all.
        ("em", GCM12, Errno.EOPNOTSUPP),
        (None, GCM12, Errno.EOPNOTSUPP),
    ],
)  # fmt: skip
def test_driver_takes_only_the_suites_its_nic_does(
    driver: str | None, suite: Suite, errno: Errno | None
) -> None:
    egress = Egress.direct("mce0", TLS_CAPS, driver)
    if errno is None:
        tag = it.alloc_snd_tag(egress, ipv6=False, force=True, permitted=True, driver=driver,
                               suite=suite)  # fmt: skip
        assert tag.port == "mce0"
        return
    with pytest.raises(KtlsError) as info:
        it.alloc_snd_tag(egress, ipv6=False, force=True, permitted=True, driver=driver,
                         suite=suite)  # fmt: skip
    assert info.value.errno == errno


def test_force_ignores_permitted_but_not_capabilities() -> None:
    tag = it.alloc_snd_tag(lagg("cc0"), ipv6=False, force=True, permitted=False)
    assert tag.port == "cc0"


def test_permitted_is_checked_before_the_route() -> None:
    # Both would fail; ktls_alloc_snd_tag() looks at permitted first: ENXIO either way,
    # but the detail names the sysctl.
    with pytest.raises(KtlsError) as info:
        it.alloc_snd_tag(None, ipv6=False, force=False, permitted=False)
    assert "permitted" in info.value.detail


def test_dropped_connection_gives_econnreset() -> None:
    with pytest.raises(KtlsError) as info:
        it.alloc_snd_tag(lagg("cc0"), ipv6=False, force=True, permitted=True, connected=False)
    assert info.value.errno == Errno.ECONNRESET


def test_pacing_gets_a_rate_limit_tag_only_with_txtls_rtlmt() -> None:
    plain = it.alloc_snd_tag(lagg("cc0"), ipv6=False, force=False, permitted=True, pacing=True)
    assert plain.type == it.IF_SND_TAG_TYPE_TLS
    rtl = Egress.direct("mce0", TLS_CAPS | IFCAP_TXTLS_RTLMT)
    tag = it.alloc_snd_tag(rtl, ipv6=False, force=False, permitted=True, pacing=True)
    assert tag.type == it.IF_SND_TAG_TYPE_TLS_RATE_LIMIT


def test_try_ifnet_counts_the_cipher_gauge_only_on_success() -> None:
    sink = Sink()
    it.try_ifnet(sink, lagg("cc0"), gauge="gcm", ipv6=False, force=False, permitted=True)
    assert sink.gauges == {"kern.ipc.tls.ifnet.gcm": 1}
    with pytest.raises(KtlsError):
        it.try_ifnet(sink, lagg("cc0"), gauge="gcm", ipv6=False, force=False, permitted=False)
    assert sink.gauges == {"kern.ipc.tls.ifnet.gcm": 1}
    assert not sink.counters


# -- ip_output_send() ---------------------------------------------------------------------


def test_output_on_the_tag_port_is_sent() -> None:
    tag = SendTag(it.IF_SND_TAG_TYPE_TLS, "lagg0", "cc0")
    assert it.output_check(tag, lagg("cc0"), reset_pending=False) == it.OutputVerdict(sent=True)


def test_failover_drops_with_enobufs_and_schedules_one_reset() -> None:
    tag = SendTag(it.IF_SND_TAG_TYPE_TLS, "lagg0", "cc0")
    first = it.output_check(tag, lagg("cc1"), reset_pending=False)
    assert (first.sent, first.errno, first.schedule_reset) == (False, Errno.ENOBUFS, True)
    assert "cc0" in first.reason and "cc1" in first.reason
    again = it.output_check(tag, lagg("cc1"), reset_pending=True)
    assert (again.sent, again.schedule_reset) == (False, False)


def test_route_change_to_another_interface_is_a_mismatch() -> None:
    tag = SendTag(it.IF_SND_TAG_TYPE_TLS, "vlan100", "cc0")
    verdict = it.output_check(tag, lagg("cc0"), reset_pending=False)
    assert not verdict.sent and "vlan100" in verdict.reason and "lagg0" in verdict.reason


def test_no_tag_or_no_route_drops() -> None:
    assert not it.output_check(None, lagg("cc0"), reset_pending=True).sent
    tag = SendTag(it.IF_SND_TAG_TYPE_TLS, "lagg0", "cc0")
    assert "no route" in it.output_check(tag, None, reset_pending=False).reason


# -- ktls_reset_send_tag() ----------------------------------------------------------------


def test_reset_allocates_on_the_new_port() -> None:
    sink = Sink()
    old = SendTag(it.IF_SND_TAG_TYPE_TLS, "lagg0", "cc0")
    out = it.reset_send_tag(sink, conn=CONN, old=old, egress=lagg("cc1"), ipv6=False)
    assert out.tag == SendTag(it.IF_SND_TAG_TYPE_TLS, "lagg0", "cc1")
    assert (out.reset_pending, out.dropped, out.error) == (False, False, None)
    assert sink.counters == {"kern.ipc.tls.ifnet.reset": 1}
    (event,) = out.events
    assert isinstance(event, it.TagReset)
    assert event.describe() == "send tag reset to cc1 via lagg0"
    assert event.dmesg() == f"ktls_reset_send_tag: {CONN}: send tag moved from cc0 to cc1"


def test_reset_ignores_permitted() -> None:
    # The reset task always passes force=true; permitted is not even an argument.
    sink = Sink()
    out = it.reset_send_tag(sink, conn=CONN, old=None, egress=lagg("cc1"), ipv6=True)
    assert out.tag is not None


def test_reset_that_cannot_allocate_drops_the_connection() -> None:
    sink = Sink()
    old = SendTag(it.IF_SND_TAG_TYPE_TLS, "lagg0", "cc0")
    out = it.reset_send_tag(
        sink, conn=CONN, old=old, egress=lagg("cc1", port_caps=IFCAP_MEXTPG), ipv6=False
    )
    assert (out.tag, out.reset_pending, out.dropped) == (None, True, True)
    assert out.error is not None and out.error.errno == Errno.EOPNOTSUPP
    assert sink.counters == {
        "kern.ipc.tls.ifnet.reset_failed": 1,
        "kern.ipc.tls.ifnet.reset_dropped": 1,
    }
    (event,) = out.events
    assert isinstance(event, it.ConnectionDropped)
    assert event.errno == Errno.ECONNABORTED
    assert event.describe() == (
        "connection dropped: Software caused connection abort "
        "(no send tag on cc1: Operation not supported)"
    )


def test_reset_on_an_already_dropped_connection_counts_only_failed() -> None:
    sink = Sink()
    out = it.reset_send_tag(sink, conn=CONN, old=None, egress=lagg("cc1"), ipv6=False, dropped=True)
    assert out.tag is None and out.reset_pending and not out.events
    assert sink.counters == {"kern.ipc.tls.ifnet.reset_failed": 1}


# -- ktls_set_tx_mode() -------------------------------------------------------------------


def _tag() -> SendTag:
    return SendTag(it.IF_SND_TAG_TYPE_TLS, "lagg0", "cc0")


def _no_sw() -> None:
    raise KtlsError(Errno.EOPNOTSUPP, "ktls_ocf not loaded")


@pytest.mark.parametrize("mode", [0, 3, 4, -1])
def test_bad_mode_is_einval(mode: int) -> None:
    sink = Sink()
    with pytest.raises(KtlsError) as info:
        it.set_tx_mode(sink, mode, current=TCP_TLS_MODE_SW, gauge="gcm")
    assert info.value.errno == Errno.EINVAL
    assert not sink.counters and not sink.gauges


def test_listening_socket_is_einval() -> None:
    with pytest.raises(KtlsError) as info:
        it.set_tx_mode(
            Sink(), TCP_TLS_MODE_SW, current=TCP_TLS_MODE_NONE, gauge=None, listening=True
        )
    assert info.value.errno == Errno.EINVAL


@pytest.mark.parametrize("mode", [TCP_TLS_MODE_SW, TCP_TLS_MODE_IFNET])
def test_no_session_is_a_no_op(mode: int) -> None:
    sink = Sink()
    change = it.set_tx_mode(sink, mode, current=TCP_TLS_MODE_NONE, gauge=None, ealready=True)
    assert change == it.ModeChange(TCP_TLS_MODE_NONE, TCP_TLS_MODE_NONE, changed=False)
    assert not sink.counters and not sink.gauges


def test_same_mode_is_a_no_op_and_seed_allows_ifnet_to_ifnet() -> None:
    sink = Sink()
    assert not it.set_tx_mode(sink, 1, current=TCP_TLS_MODE_SW, gauge="gcm").changed
    assert not it.set_tx_mode(sink, 2, current=TCP_TLS_MODE_IFNET, gauge="gcm").changed
    assert not sink.counters and not sink.gauges


def test_current_profile_refuses_ifnet_twice_with_ealready() -> None:
    sink = Sink()
    with pytest.raises(KtlsError) as info:
        it.set_tx_mode(sink, 2, current=TCP_TLS_MODE_IFNET, gauge="gcm", ealready=True)
    assert info.value.errno == Errno.EALREADY
    assert not sink.counters  # refused before any clone: not a failed switch


def test_current_profile_refuses_ifnet_after_rexmit_disable_with_enxio() -> None:
    with pytest.raises(KtlsError) as info:
        it.set_tx_mode(
            Sink(), 2, current=TCP_TLS_MODE_SW, gauge="gcm", ealready=True, nic_xmit_disabled=True
        )
    assert info.value.errno == Errno.ENXIO


def test_switch_sw_to_ifnet_moves_the_gauges() -> None:
    sink = Sink()
    change = it.set_tx_mode(
        sink, TCP_TLS_MODE_IFNET, current=TCP_TLS_MODE_SW, gauge="gcm", try_ifnet_tag=_tag
    )
    assert change == it.ModeChange(TCP_TLS_MODE_SW, TCP_TLS_MODE_IFNET, True, _tag())
    # active: +1 (clone) then -1 (old freed): net 0.
    assert sink.gauges == {
        "kern.ipc.tls.stats.active": 0,
        "kern.ipc.tls.sw.gcm": -1,
        "kern.ipc.tls.ifnet.gcm": 1,
    }
    assert sink.counters == {"kern.ipc.tls.stats.switch_to_ifnet": 1}


def test_switch_ifnet_to_sw() -> None:
    sink = Sink()
    change = it.set_tx_mode(
        sink, TCP_TLS_MODE_SW, current=TCP_TLS_MODE_IFNET, gauge="chacha20", try_sw=lambda: None
    )
    assert change.changed and change.tag is None
    assert sink.gauges == {
        "kern.ipc.tls.stats.active": 0,
        "kern.ipc.tls.ifnet.chacha20": -1,
        "kern.ipc.tls.sw.chacha20": 1,
    }
    assert sink.counters == {"kern.ipc.tls.stats.switch_to_sw": 1}


def test_failed_switch_frees_the_clone_and_counts_switch_failed() -> None:
    sink = Sink()

    def no_tag() -> SendTag:
        return it.alloc_snd_tag(lagg("cc1", port_caps=0), ipv6=False, force=True, permitted=True)

    with pytest.raises(KtlsError) as info:
        it.set_tx_mode(sink, 2, current=TCP_TLS_MODE_SW, gauge="gcm", try_ifnet_tag=no_tag)
    assert info.value.errno == Errno.EOPNOTSUPP
    assert sink.gauges == {"kern.ipc.tls.stats.active": 0}
    assert sink.counters == {"kern.ipc.tls.stats.switch_failed": 1}

    sink = Sink()
    with pytest.raises(KtlsError):
        it.set_tx_mode(sink, 1, current=TCP_TLS_MODE_IFNET, gauge="gcm", try_sw=_no_sw)
    assert sink.counters == {"kern.ipc.tls.stats.switch_failed": 1}
    assert sink.gauges["kern.ipc.tls.ifnet.gcm"] == 0


def test_active_goes_up_before_it_goes_down() -> None:
    # The clone exists while the try runs (active is a gauge that never dips below 0).
    seen: list[tuple[str, int]] = []

    class Recorder(Sink):
        def gauge(self, name: str, delta: int) -> None:
            seen.append((name, delta))

    it.set_tx_mode(Recorder(), 2, current=1, gauge="gcm", try_ifnet_tag=_tag)
    assert seen[0] == ("kern.ipc.tls.stats.active", 1)
    assert ("kern.ipc.tls.stats.active", -1) in seen[1:]


@pytest.mark.parametrize(
    ("text", "mode"), [("sw", 1), ("ifnet", 2), ("1", 1), ("2", 2), ("IFNET", 2), ("7", 7)]
)
def test_parse_mode(text: str, mode: int) -> None:
    assert it.parse_mode(text) == mode


def test_parse_mode_rejects_words() -> None:
    with pytest.raises(KtlsError) as info:
        it.parse_mode("hardware")
    assert info.value.errno == Errno.EINVAL


# -- ifnet_max_rexmit_pct -----------------------------------------------------------------


def test_rexmit_percent_is_integer_like_tcp_account_for_send() -> None:
    assert it.rexmit_percent(0, 0) == 0
    assert it.rexmit_percent(97, 3) == 3
    assert it.rexmit_percent(975, 25) == 2  # 2.5 % rounds down


def test_retransmission_above_the_limit_asks_for_disable_once() -> None:
    acct = it.account_for_send(
        100_000, 0, 2_100, is_rxt=True, hw_tls=True, max_rexmit_pct=2
    )  # 2100 / 102100 = 2.06 % -> 2: not above
    assert not acct.disable and acct.rexmit_pct == 2
    acct = it.account_for_send(
        acct.snd_bytes, acct.rxt_bytes, 1_000, is_rxt=True, hw_tls=True, max_rexmit_pct=2
    )
    assert acct.disable and acct.rexmit_pct == 3
    again = it.account_for_send(
        acct.snd_bytes, acct.rxt_bytes, 1_000, is_rxt=True, hw_tls=True, max_rexmit_pct=2,
        disabled=True,
    )  # fmt: skip
    assert not again.disable


def test_no_disable_for_new_data_software_sessions_or_the_seed() -> None:
    assert not it.account_for_send(0, 10, 1, is_rxt=False, hw_tls=True, max_rexmit_pct=2).disable
    assert not it.account_for_send(0, 0, 100, is_rxt=True, hw_tls=False, max_rexmit_pct=2).disable
    assert not it.account_for_send(0, 0, 100, is_rxt=True, hw_tls=True, max_rexmit_pct=None).disable
    assert it.account_for_send(0, 0, 100, is_rxt=True, hw_tls=True, max_rexmit_pct=2).disable


def test_disable_ifnet_counts_ok_or_failed() -> None:
    sink = Sink()
    change, event = it.disable_ifnet(
        sink,
        conn=CONN,
        rexmit_pct=50,
        switch=lambda: it.set_tx_mode(
            sink, 1, current=TCP_TLS_MODE_IFNET, gauge="gcm", try_sw=lambda: None
        ),
    )
    assert change is not None and change.new == TCP_TLS_MODE_SW and event.ok
    assert sink.counters["kern.ipc.tls.stats.ifnet_disable_ok"] == 1
    assert sink.counters["kern.ipc.tls.stats.switch_to_sw"] == 1

    sink = Sink()
    change, event = it.disable_ifnet(
        sink,
        conn=CONN,
        rexmit_pct=50,
        switch=lambda: it.set_tx_mode(
            sink, 1, current=TCP_TLS_MODE_IFNET, gauge="gcm", try_sw=_no_sw
        ),
    )
    assert change is None and not event.ok and event.errno == Errno.EOPNOTSUPP
    assert sink.counters == {
        "kern.ipc.tls.stats.switch_failed": 1,
        "kern.ipc.tls.stats.ifnet_disable_failed": 1,
    }
    assert event.dmesg().startswith(f"ktls_disable_ifnet: {CONN}: ")


def test_mode_constants_are_the_sessions() -> None:
    from ktls_core.tls import session

    assert (
        it.TCP_TLS_MODE_NONE,
        it.TCP_TLS_MODE_SW,
        it.TCP_TLS_MODE_IFNET,
        it.TCP_TLS_MODE_TOE,
    ) == (
        session.TCP_TLS_MODE_NONE,
        session.TCP_TLS_MODE_SW,
        session.TCP_TLS_MODE_IFNET,
        session.TCP_TLS_MODE_TOE,
    )
    assert it.MODE_NAMES == session.MODE_NAMES
