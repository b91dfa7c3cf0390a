"""Routing table: kernel routes, static routes, LPM, errors, egress."""

from __future__ import annotations

import pytest

from ktls_core.errors import Errno, KtlsError
from ktls_core.net import route as rt
from ktls_core.net.ifnet import IFCAP_TXTLS, Network


def rows(net: Network, family: str) -> list[tuple[str, str, str, str]]:
    return [
        (r.dst_text(), r.gateway_text(net), r.netstat_flags(), r.ifname)
        for r in rt.routing_table(net, family)
    ]


def test_default_table_inet(net: Network) -> None:
    assert rows(net, "inet") == [
        ("default", "192.0.2.1", "UGS", "em0"),
        ("127.0.0.1", "link#5", "UH", "lo0"),
        ("192.0.2.0/24", "link#1", "U", "em0"),
        ("192.0.2.10", "link#1", "UHS", "lo0"),
        ("198.51.100.0/24", "link#6", "U", "lagg0"),
        ("198.51.100.10", "link#6", "UHS", "lo0"),
        ("203.0.113.0/24", "link#4", "U", "mce0"),
        ("203.0.113.10", "link#4", "UHS", "lo0"),
    ]


def test_default_table_inet6_radix_order(net: Network) -> None:
    assert rows(net, "inet6") == [
        ("::/96", "::1", "UGRS", "lo0"),
        ("::1", "link#5", "UH", "lo0"),  # real netstat; the reference says UHS
        ("::ffff:0.0.0.0/96", "::1", "UGRS", "lo0"),
        ("2001:db8:1::/64", "link#6", "U", "lagg0"),
        ("2001:db8:1::10", "link#6", "UHS", "lo0"),
        ("fe80::/10", "::1", "UGRS", "lo0"),
        ("fe80::%lo0/64", "link#5", "U", "lo0"),
        ("fe80::1%lo0", "link#5", "UHS", "lo0"),
        ("fe80::%lagg0/64", "link#6", "U", "lagg0"),
        ("fe80::207:43ff:fe3a:1bf0%lagg0", "link#6", "UHS", "lo0"),
        ("ff02::/16", "::1", "UGRS", "lo0"),
    ]


def test_longest_prefix_match(net: Network) -> None:
    rt.add_route(net, "203.0.113.128/25", gateway="198.51.100.1")
    rt.add_route(net, "203.0.113.200/32", interface="cc1")
    assert rt.lookup(net, "203.0.113.5").dst == "203.0.113.0/24"  # type: ignore[union-attr]
    assert rt.lookup(net, "203.0.113.129").dst == "203.0.113.128/25"  # type: ignore[union-attr]
    r = rt.lookup(net, "203.0.113.200")
    assert r is not None and r.is_host and r.ifname == "cc1" and r.netstat_flags() == "UHS"
    assert rt.lookup(net, "233.252.0.1").is_default  # type: ignore[union-attr]
    assert rt.lookup(net, "2001:db8:9::1") is None  # no IPv6 default route
    assert rt.lookup(net, "198.51.100.10").ifname == "lo0"  # type: ignore[union-attr]


def test_link_local_needs_its_zone(net: Network) -> None:
    r = rt.lookup(net, "fe80::5%lagg0")
    assert r is not None and r.ifname == "lagg0"
    r = rt.lookup(net, "fe80::5")  # no scope: only the reject route matches
    assert r is not None and r.dst == "fe80::/10"


def test_static_route_errors(net: Network) -> None:
    rt.add_route(net, "203.0.113.128/25", gateway="198.51.100.1")
    cases = [
        (lambda: rt.add_route(net, "203.0.113.128/25", gateway="192.0.2.1"), Errno.EEXIST),
        (lambda: rt.add_route(net, "198.51.100.0/24", gateway="192.0.2.1"), Errno.EEXIST),
        (lambda: rt.add_route(net, "10.0.0.0/8", gateway="233.252.0.1"), Errno.ENETUNREACH),
        (lambda: rt.add_route(net, "10.0.0.0/8", interface="cc9"), Errno.ENXIO),
        (lambda: rt.delete_route(net, "10.0.0.0/8"), Errno.ESRCH),
        (lambda: rt.delete_route(net, "198.51.100.0/24"), Errno.EADDRINUSE),
        (lambda: rt.delete_route(net, "192.0.2.10/32"), Errno.EADDRINUSE),
        (lambda: rt.change_route(net, "10.0.0.0/8", gateway="192.0.2.1"), Errno.ESRCH),
        (lambda: rt.change_route(net, "198.51.100.0/24", gateway="192.0.2.1"), Errno.EADDRINUSE),
        (lambda: rt.get_route(net, "2001:db8:9::1"), Errno.ESRCH),
        (lambda: rt.add_route(net, "10.0.0.0/8", gateway="2001:db8:1::1"), Errno.EAFNOSUPPORT),
    ]
    for call, errno in cases:
        with pytest.raises(KtlsError) as e:
            call()
        assert e.value.errno == errno


def test_gateway_through_a_static_route_but_not_the_default(net: Network) -> None:
    rt.add_route(net, "233.252.0.0/24", gateway="198.51.100.1")
    r = rt.add_route(net, "10.1.0.0/16", gateway="233.252.0.5")
    assert r.ifname == "lagg0"  # the interface of the route to the gateway
    # on-link wins over a route: 203.0.113.130 is on mce0's prefix
    rt.add_route(net, "203.0.113.128/25", gateway="198.51.100.1")
    assert rt.add_route(net, "10.2.0.0/16", gateway="203.0.113.130").ifname == "mce0"


def test_delete_then_readd(net: Network) -> None:
    rt.add_route(net, "203.0.113.128/25", gateway="198.51.100.1")
    rt.delete_route(net, "203.0.113.128/25")
    assert rt.lookup(net, "203.0.113.129").dst == "203.0.113.0/24"  # type: ignore[union-attr]
    rt.add_route(net, "203.0.113.128/25", gateway="198.51.100.1")


def test_kernel_route_replaces_a_static_one_with_its_key(net: Network) -> None:
    rt.add_route(net, "233.252.0.0/24", gateway="192.0.2.1")
    net.add_addr("mce0", "233.252.0.10", 24, alias=True)
    r = rt.find_route(net, "233.252.0.0/24")
    assert r is not None and r.origin == "connected" and r.ifname == "mce0"
    assert all(s.dst != "233.252.0.0/24" for s in net.routes)


def test_removing_an_address_removes_its_routes(net: Network) -> None:
    net.del_addr("mce0", "203.0.113.10")
    assert rt.lookup(net, "203.0.113.5").is_default  # type: ignore[union-attr]


def test_prefix_owned_by_first_interface_then_moves(net: Network) -> None:
    net.add_addr("cc0", "192.0.2.11", 24, alias=True)  # same prefix as em0
    r = rt.find_route(net, "192.0.2.0/24")
    assert r is not None and r.ifname == "em0"
    net.del_addr("em0", "192.0.2.10")
    r = rt.find_route(net, "192.0.2.0/24")
    assert r is not None and r.ifname == "cc0"


# --- egress --------------------------------------------------------------------------


def test_egress_default_route(net: Network) -> None:
    e = rt.egress(net, "233.252.0.1")
    assert (e.ifname, e.port, e.gateway, e.route) == ("em0", "em0", "192.0.2.1", "default")
    assert not e.capenable & IFCAP_TXTLS


def test_egress_through_lagg_follows_failover(net: Network) -> None:
    e = rt.egress(net, "198.51.100.7", 12345)
    assert (e.ifname, e.port, e.path, e.gateway) == ("lagg0", "cc0", ("lagg0", "cc0"), None)
    net.set_up("cc0", False)
    e = rt.egress(net, "198.51.100.7", 12345)
    assert (e.ifname, e.port) == ("lagg0", "cc1")
    net.set_up("cc1", False)
    with pytest.raises(KtlsError) as exc:
        rt.egress(net, "198.51.100.7", 12345)
    assert exc.value.errno == Errno.ENETUNREACH
    net.set_up("cc0", True)
    assert rt.egress(net, "198.51.100.7", 12345).port == "cc0"


def test_egress_lacp_rehash(net: Network) -> None:
    net.set_laggproto("lagg0", "lacp")
    ports = [rt.egress(net, "2001:db8:1::77", h).port for h in range(4)]
    assert ports == ["cc0", "cc1", "cc0", "cc1"]
    net.set_up("cc1", False)
    assert {rt.egress(net, "2001:db8:1::77", h).port for h in range(4)} == {"cc0"}


def test_egress_vlan_on_lagg(net: Network) -> None:
    net.create("vlan100", vlan_tag=100, vlandev="lagg0")
    net.add_addr("vlan100", "233.252.0.10", 24)
    net.setifcap("lagg0", IFCAP_TXTLS, True)
    net.set_up("cc0", False)
    e = rt.egress(net, "233.252.0.99", 1)
    assert e.path == ("vlan100", "lagg0", "cc1") and e.vlan_tags == (100,)
    assert e.capenable & IFCAP_TXTLS == IFCAP_TXTLS
    assert e.port_capenable & IFCAP_TXTLS == IFCAP_TXTLS
    assert e.src_mac == "00:07:43:3a:1b:f0" and e.snd_tag


def test_route_change_moves_the_egress(net: Network) -> None:
    rt.add_route(net, "233.252.0.0/24", gateway="192.0.2.1")
    assert rt.egress(net, "233.252.0.5").ifname == "em0"
    rt.change_route(net, "233.252.0.0/24", gateway="198.51.100.1")
    e = rt.egress(net, "233.252.0.5")
    assert (e.ifname, e.port, e.gateway) == ("lagg0", "cc0", "198.51.100.1")
    rt.change_route(net, "233.252.0.0/24", interface="mce0")
    e = rt.egress(net, "233.252.0.5")
    assert (e.ifname, e.gateway) == ("mce0", None)
    assert rt.find_route(net, "233.252.0.0/24").netstat_flags() == "US"  # type: ignore[union-attr]


def test_egress_errors(net: Network) -> None:
    with pytest.raises(KtlsError) as e:
        rt.egress(net, "2001:db8:9::1")
    assert e.value.errno == Errno.EHOSTUNREACH
    with pytest.raises(KtlsError) as e:
        rt.egress(net, "::ffff:192.0.2.1")  # reject route
    assert e.value.errno == Errno.EHOSTUNREACH
    with pytest.raises(KtlsError) as e:
        rt.egress(net, "not-an-address")
    assert e.value.errno == Errno.EHOSTUNREACH
    net.set_up("em0", False)
    with pytest.raises(KtlsError) as e:
        rt.egress(net, "233.252.0.1")
    assert e.value.errno == Errno.ENETUNREACH and "em0" in e.value.detail
    net.set_up("em0", True)
    net.get("em0").carrier = False
    with pytest.raises(KtlsError) as e:
        rt.egress(net, "233.252.0.1")
    assert e.value.errno == Errno.ENETUNREACH and "carrier" in e.value.detail
    net.set_laggproto("lagg0", "none")
    with pytest.raises(KtlsError) as e:
        rt.egress(net, "198.51.100.7")
    assert e.value.errno == Errno.ENETUNREACH


def test_snd_tag_only_through_tag_capable_lagg_protocols(net: Network) -> None:
    for proto, ok in (("failover", True), ("lacp", True), ("loadbalance", True),
                      ("roundrobin", False), ("broadcast", False)):  # fmt: skip
        net.set_laggproto("lagg0", proto)
        assert rt.egress(net, "198.51.100.7").snd_tag is ok
    assert rt.egress(net, "198.51.100.10").port == "lo0"
    assert not rt.egress(net, "198.51.100.10").snd_tag


def test_source_interface(net: Network) -> None:
    assert rt.source_interface(net, "198.51.100.10") == "lagg0"
    assert rt.source_interface(net, "2001:db8:1::10") == "lagg0"
    assert rt.source_interface(net, "fe80::1%lo0") == "lo0"
    for bad in ("198.51.100.11", "fe80::1%lagg0", "junk"):
        with pytest.raises(KtlsError) as e:
            rt.source_interface(net, bad)
        assert e.value.errno == Errno.EADDRNOTAVAIL
