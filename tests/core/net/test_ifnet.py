"""ifnet: flags, capability bits and propagation, vlan and lagg, errors."""

from __future__ import annotations

import json

import pytest

from ktls_core.errors import Errno, KtlsError
from ktls_core.net import ifnet as ifn
from ktls_core.net.ifnet import (
    IFCAP_MEXTPG,
    IFCAP_NAMES,
    IFCAP_TXTLS,
    IFCAP_TXTLS4,
    IFCAP_TXTLS6,
    IFCAP_TXTLS_RTLMT,
    IfError,
    Network,
    printb,
)
from ktls_core.net.topology import network_from_default


def err(exc: pytest.ExceptionInfo[KtlsError]) -> Errno:
    return exc.value.errno


# --- bit tables -------------------------------------------------------------


def test_printb_matches_freebsd_examples() -> None:
    assert printb(0x8843, ifn.IFF_NAMES) == "8843<UP,BROADCAST,RUNNING,SIMPLEX,MULTICAST>"
    assert printb(0x8049, ifn.IFF_NAMES) == "8049<UP,LOOPBACK,RUNNING,MULTICAST>"
    assert printb(0, ifn.LAGG_PORT_NAMES) == "0<>"
    assert printb(0x18000000, IFCAP_NAMES["seed"]) == "18000000<TXTLS4,TXTLS6>"
    # HWSTATS (bit 23) has no name: in the hex, not in the list
    assert printb(0x81249B, IFCAP_NAMES["seed"]) == (
        "81249b<RXCSUM,TXCSUM,VLAN_MTU,VLAN_HWTAGGING,VLAN_HWCSUM,LRO,WOL_MAGIC,VLAN_HWFILTER>"
    )


def test_bit26_name_depends_on_era() -> None:
    assert printb(IFCAP_MEXTPG, IFCAP_NAMES["seed"]) == "4000000<NOMAP>"
    assert printb(IFCAP_MEXTPG, IFCAP_NAMES["current"]) == "4000000<MEXTPG>"
    assert printb(IFCAP_TXTLS_RTLMT, IFCAP_NAMES["current"]) == "80000000<TXTLS_RTLMT>"
    assert printb(IFCAP_TXTLS_RTLMT, IFCAP_NAMES["seed"]) == "80000000<>"


def test_keywords_per_era() -> None:
    seed, cur = ifn.CAP_KEYWORDS["seed"], ifn.CAP_KEYWORDS["current"]
    assert seed["txtls"] == cur["txtls"] == IFCAP_TXTLS
    assert seed["txtls4"] == IFCAP_TXTLS4 and seed["txtls6"] == IFCAP_TXTLS6
    assert "txtlsrtlmt" not in seed and cur["txtlsrtlmt"] == IFCAP_TXTLS_RTLMT
    assert "nomap" in seed and "mextpg" not in seed and "mextpg" in cur


def test_unknown_era() -> None:
    with pytest.raises(ValueError, match="unknown era"):
        Network("2030")


# --- default host -------------------------------------------------------------


def test_default_host_shape(net: Network) -> None:
    assert net.names() == ["em0", "cc0", "cc1", "mce0", "lo0", "lagg0"]
    assert net.iff("cc0") == 0x8843 and net.iff("lo0") == 0x8049
    for name in ("cc0", "cc1", "mce0"):
        sup, ena = net.caps(name)
        assert sup & IFCAP_TXTLS == IFCAP_TXTLS and not ena & IFCAP_TXTLS
        assert ena & IFCAP_MEXTPG
    assert not net.capabilities("em0") & IFCAP_TXTLS
    assert net.options("cc0") == 0x66C07BB
    lagg = net.get("lagg0").lagg
    assert lagg is not None and lagg.ports == ["cc0", "cc1"] and lagg.primary == "cc0"
    assert net.current_mac("lagg0") == net.current_mac("cc1") == "00:07:43:3a:1b:f0"
    assert net.get("cc1").hwaddr == "00:07:43:3a:1b:f8"
    addrs = [(a.addr, a.prefixlen) for a in net.get("lagg0").addrs]
    assert addrs == [
        ("198.51.100.10", 24),
        ("fe80::207:43ff:fe3a:1bf0", 64),  # EUI-64 of the lagg MAC
        ("2001:db8:1::10", 64),
    ]
    assert net.get("lagg0").nd6 == ifn.ND6_ENABLED and net.get("cc0").nd6 == ifn.ND6_DEFAULT


def test_txtls_rtlmt_is_masked_in_the_seed_era(net: Network, cur: Network) -> None:
    assert cur.capabilities("mce0") & IFCAP_TXTLS_RTLMT
    assert not net.capabilities("mce0") & IFCAP_TXTLS_RTLMT
    assert net.setifcap("mce0", IFCAP_TXTLS_RTLMT, True) == []
    assert not net.options("mce0") & IFCAP_TXTLS_RTLMT
    cur.setifcap("mce0", IFCAP_TXTLS_RTLMT, True)
    assert cur.options("mce0") & IFCAP_TXTLS_RTLMT


# --- setifcap -------------------------------------------------------------------


def test_setifcap_sets_and_clears(net: Network) -> None:
    net.setifcap("mce0", IFCAP_TXTLS, True)
    assert net.options("mce0") & IFCAP_TXTLS == IFCAP_TXTLS
    net.setifcap("mce0", IFCAP_TXTLS4, False)
    assert net.options("mce0") & IFCAP_TXTLS == IFCAP_TXTLS6
    net.setifcap("mce0", IFCAP_TXTLS6, False)
    assert not net.options("mce0") & IFCAP_TXTLS


def test_setifcap_drops_unsupported_bits_silently(net: Network) -> None:
    before = net.to_dict()
    assert net.setifcap("em0", IFCAP_TXTLS, True) == []
    assert net.to_dict() == before


def test_setifcap_on_lagg_goes_to_every_port(net: Network) -> None:
    net.setifcap("lagg0", IFCAP_TXTLS, True)
    for name in ("lagg0", "cc0", "cc1"):
        assert net.options(name) & IFCAP_TXTLS == IFCAP_TXTLS


def test_setifcap_on_one_lagg_port_is_reverted_by_lagg_capabilities(net: Network) -> None:
    # lagg_port_ioctl(SIOCSIFCAP) then lagg_capabilities() writes the common set back
    net.setifcap("cc0", IFCAP_TXTLS, True)
    assert not net.options("cc0") & IFCAP_TXTLS
    assert not net.options("lagg0") & IFCAP_TXTLS


def test_lagg_offers_the_and_of_its_ports(net: Network) -> None:
    net.del_laggport("lagg0", "cc1")
    net.setifcap("cc1", IFCAP_TXTLS, True)
    net.setifcap("lagg0", IFCAP_TXTLS4, True)  # lagg0 has only cc0 now
    assert net.options("lagg0") & IFCAP_TXTLS == IFCAP_TXTLS4
    # cc1 joins: the common enabled set (TXTLS4 only) is applied to both
    net.add_laggport("lagg0", "cc1")
    assert net.options("cc1") & IFCAP_TXTLS == IFCAP_TXTLS4
    assert net.options("lagg0") & IFCAP_TXTLS == IFCAP_TXTLS4
    # em0 joins: no TLS at all in the AND, and em0's supported set limits the lagg's
    net.add_laggport("lagg0", "em0")
    assert not net.capabilities("lagg0") & IFCAP_TXTLS
    assert not net.options("cc0") & IFCAP_TXTLS


def test_vlan_follows_parent_tls(net: Network) -> None:
    name, _ = net.create("vlan100", vlan_tag=100, vlandev="lagg0")
    assert name == "vlan100"
    sup, ena = net.caps("vlan100")
    assert sup & IFCAP_TXTLS == IFCAP_TXTLS and not ena & IFCAP_TXTLS
    net.setifcap("lagg0", IFCAP_TXTLS, True)
    net.set_up("vlan100", True)
    assert net.options("vlan100") == 0x1C680703  # freebsd-tool-formats.md §1 example
    assert net.iff("vlan100") == 0x8843
    # asked off on the vlan only
    net.setifcap("vlan100", IFCAP_TXTLS6, False)
    assert net.options("vlan100") & IFCAP_TXTLS == IFCAP_TXTLS4
    assert net.options("lagg0") & IFCAP_TXTLS == IFCAP_TXTLS
    # the parent turns it off: gone on the vlan too, whatever the vlan asked
    net.setifcap("lagg0", IFCAP_TXTLS, False)
    assert not net.options("vlan100") & IFCAP_TXTLS


def test_vlan_on_em0_has_no_tls(net: Network) -> None:
    net.create("em0.5")
    assert net.get("em0.5").vlan == ifn.VlanConf(5, ifn.ETHERTYPE_VLAN, 0, "em0")
    assert not net.capabilities("em0.5") & IFCAP_TXTLS
    assert net.setifcap("em0.5", IFCAP_TXTLS, True) == []
    assert not net.options("em0.5") & IFCAP_TXTLS


# --- link state, failover, lacp ----------------------------------------------------


def test_failover_and_restore(net: Network) -> None:
    assert net.lagg_select("lagg0", 0) == "cc0"
    assert net.lagg_port_flags("lagg0", "cc0") == 0x5
    assert net.lagg_port_flags("lagg0", "cc1") == 0x0
    logs = net.set_up("cc0", False)
    assert logs == ["cc0: link state changed to DOWN"]
    assert net.lagg_select("lagg0", 0) == "cc1"
    assert net.lagg_port_flags("lagg0", "cc0") == ifn.LAGG_PORT_MASTER
    assert net.lagg_port_flags("lagg0", "cc1") == ifn.LAGG_PORT_ACTIVE
    logs = net.set_up("cc1", False)
    assert logs == ["cc1: link state changed to DOWN", "lagg0: link state changed to DOWN"]
    assert net.lagg_select("lagg0", 0) is None
    assert not net.status_active("lagg0")
    logs = net.set_up("cc1", True)
    assert logs == ["cc1: link state changed to UP", "lagg0: link state changed to UP"]
    assert net.lagg_select("lagg0", 0) == "cc1"
    net.set_up("cc0", True)
    assert net.lagg_select("lagg0", 0) == "cc0"  # the primary is active again


def test_carrier_loss_fails_over_like_down(net: Network) -> None:
    before = net._link_snapshot()
    net.get("cc0").carrier = False
    assert net._link_changes(before) == ["cc0: link state changed to DOWN"]
    assert net.lagg_select("lagg0", 0) == "cc1"


def test_vlan_link_follows_lagg(net: Network) -> None:
    net.create("vlan100", vlan_tag=100, vlandev="lagg0")
    net.set_up("cc1", False)
    logs = net.set_up("cc0", False)
    assert logs == [
        "cc0: link state changed to DOWN",
        "lagg0: link state changed to DOWN",
        "vlan100: link state changed to DOWN",
    ]


def test_lacp_rehash_and_restore(net: Network) -> None:
    net.set_laggproto("lagg0", "lacp")
    assert [net.lagg_select("lagg0", h) for h in range(4)] == ["cc0", "cc1", "cc0", "cc1"]
    assert net.lagg_port_flags("lagg0", "cc1") == 0x1C
    net.set_up("cc0", False)
    assert net.lagg_port_flags("lagg0", "cc0") == 0
    assert [net.lagg_select("lagg0", h) for h in range(4)] == ["cc1"] * 4
    net.set_up("cc0", True)
    assert [net.lagg_select("lagg0", h) for h in range(4)] == ["cc0", "cc1", "cc0", "cc1"]


def test_loadbalance_and_roundrobin_skip_down_ports(net: Network) -> None:
    for proto in ("loadbalance", "roundrobin"):
        net.set_laggproto("lagg0", proto)
        assert net.lagg_port_flags("lagg0", "cc0") == ifn.LAGG_PORT_ACTIVE
        net.set_up("cc1", False)
        assert net.lagg_port_flags("lagg0", "cc1") == 0
        # hash 1 would pick cc1: lagg_link_active() moves on to an active port
        assert net.lagg_select("lagg0", 1) == "cc0"
        net.set_up("cc1", True)
        assert net.lagg_select("lagg0", 1) == "cc1"


def test_laggproto_none_sends_nowhere(net: Network) -> None:
    net.set_laggproto("lagg0", "none")
    assert net.lagg_select("lagg0", 0) is None
    assert net.lagg_port_flags("lagg0", "cc0") == 0


def test_failover_primary_is_first_added_not_lowest_index() -> None:
    net = network_from_default("seed")
    name, _ = net.create("lagg")
    assert name == "lagg1"
    net.del_laggport("lagg0", "cc0")
    net.del_laggport("lagg0", "cc1")
    net.add_laggport("lagg1", "cc1")
    net.add_laggport("lagg1", "cc0")
    conf = net.get("lagg1").lagg
    assert conf is not None and conf.ports == ["cc0", "cc1"] and conf.primary == "cc1"
    assert net.lagg_select("lagg1", 0) == "cc1"
    assert net.current_mac("lagg1") == net.current_mac("cc0") == "00:07:43:3a:1b:f8"


def test_lagg_primary_leaving_gives_the_lagg_a_new_mac(net: Network) -> None:
    net.del_laggport("lagg0", "cc0")
    assert net.current_mac("cc0") == "00:07:43:3a:1b:f0"
    assert net.current_mac("lagg0") == net.current_mac("cc1") == "00:07:43:3a:1b:f8"
    net.del_laggport("lagg0", "cc1")
    assert net.current_mac("lagg0") == ifn.ZERO_MAC
    assert not net.link_up("lagg0")


# --- errors -----------------------------------------------------------------------


def test_unknown_interface(net: Network) -> None:
    with pytest.raises(KtlsError) as e:
        net.get("foo0")
    assert err(e) == Errno.ENXIO


def test_laggport_errors(net: Network) -> None:
    net.create("lagg1")
    with pytest.raises(KtlsError) as e:
        net.add_laggport("lagg1", "cc0")
    assert err(e) == Errno.EBUSY
    with pytest.raises(KtlsError) as e:
        net.add_laggport("lagg1", "cc9")
    assert err(e) == Errno.EINVAL
    with pytest.raises(KtlsError) as e:
        net.add_laggport("lagg1", "lo0")
    assert err(e) == Errno.EPROTONOSUPPORT
    with pytest.raises(KtlsError) as e:
        net.add_laggport("lagg0", "cc0")
    assert err(e) == Errno.EEXIST
    with pytest.raises(IfError) as ie:
        net.add_laggport("lagg1", "lagg1")
    assert ie.value.errno == Errno.EINVAL
    assert ie.value.logs == ["lagg1: cannot add a lagg to itself as a port"]
    with pytest.raises(KtlsError) as e:
        net.add_laggport("lagg1", "lagg0")
    assert err(e) == Errno.EINVAL
    with pytest.raises(KtlsError) as e:
        net.del_laggport("lagg1", "cc0")
    assert err(e) == Errno.ENOENT
    with pytest.raises(KtlsError) as e:
        net.del_laggport("lagg1", "cc9")
    assert err(e) == Errno.EINVAL
    with pytest.raises(KtlsError) as e:
        net.set_laggproto("lagg1", "fec")
    assert err(e) == Errno.EPROTONOSUPPORT


def test_laggport_removes_ipv6_with_a_message(net: Network) -> None:
    net.create("lagg1")
    net.add_addr("mce0", "2001:db8:2::10", 64)
    logs = net.add_laggport("lagg1", "mce0")
    assert logs[0] == (
        "lagg1: IPv6 addresses on mce0 have been removed before adding it as a member "
        "to prevent IPv6 address scope violation."
    )
    assert [a.family for a in net.get("mce0").addrs] == ["inet"]


def test_create_and_destroy(net: Network) -> None:
    assert net.create("vlan")[0] == "vlan0"
    assert net.create("vlan")[0] == "vlan1"
    assert net.create("lo")[0] == "lo1"
    with pytest.raises(KtlsError) as e:
        net.create("lagg0")
    assert err(e) == Errno.EEXIST
    with pytest.raises(KtlsError) as e:
        net.create("foo0")
    assert err(e) == Errno.EINVAL
    with pytest.raises(KtlsError) as e:
        net.create("cc9.5")  # no such parent: no cloner matches
    assert err(e) == Errno.EINVAL
    for phys in ("cc0", "em0", "lo0"):
        with pytest.raises(KtlsError) as e:
            net.destroy(phys)
        assert err(e) == Errno.EINVAL
    idx = net.next_index
    net.destroy("vlan0")
    assert "vlan0" not in net and net.next_index == idx


def test_destroy_lagg_frees_ports_detaches_vlans_and_flushes_routes(net: Network) -> None:
    from ktls_core.net import route as rt

    net.create("vlan100", vlan_tag=100, vlandev="lagg0")
    rt.add_route(net, "203.0.113.128/25", interface="lagg0")
    net.destroy("lagg0")
    assert net.lagg_of("cc0") is None and net.current_mac("cc1") == "00:07:43:3a:1b:f8"
    vlan = net.get("vlan100").vlan
    assert vlan is not None and vlan.parent is None
    assert net.iff("vlan100") & ifn.IFF_RUNNING == 0
    assert all(r.ifname != "lagg0" for r in net.routes)


def test_vlan_errors(net: Network) -> None:
    net.create("vlan100", vlan_tag=100, vlandev="lagg0")
    with pytest.raises(KtlsError) as e:
        net.create("vlan101", vlan_tag=100, vlandev="lagg0")
    assert err(e) == Errno.EEXIST
    assert "vlan101" not in net
    with pytest.raises(KtlsError) as e:
        net.create("vlan102", vlan_tag=5000, vlandev="lagg0")
    assert err(e) == Errno.EINVAL
    net.create("vlan103")
    with pytest.raises(KtlsError) as e:
        net.set_vlan("vlan103", 7, "nope0")
    assert err(e) == Errno.ENOENT
    with pytest.raises(KtlsError) as e:
        net.set_vlan("vlan103", 7, "lo0")
    assert err(e) == Errno.EPROTONOSUPPORT
    net.set_vlan("vlan103", 7, "em0")
    with pytest.raises(KtlsError) as e:
        net.set_vlan("vlan103", 7, "mce0")
    assert err(e) == Errno.EBUSY
    net.unset_vlandev("vlan103")
    net.set_vlan("vlan103", 7, "mce0")
    with pytest.raises(KtlsError) as e:
        net.create("vlan104", vlan_tag=7)
    assert err(e) == Errno.EINVAL


def test_mtu(net: Network) -> None:
    net.set_mtu("em0", 9000)
    assert net.get("em0").mtu == 9000
    for name, mtu in (("em0", 9217), ("em0", 71), ("cc0", 1400)):
        with pytest.raises(KtlsError) as e:
            net.set_mtu(name, mtu)
        assert err(e) == Errno.EINVAL
    net.set_mtu("lagg0", 9000)
    assert [net.get(n).mtu for n in ("lagg0", "cc0", "cc1")] == [9000] * 3
    with pytest.raises(IfError) as ie:
        net.set_mtu("lagg0", 9700)
    assert ie.value.logs[0].startswith("lagg0: failed to change MTU to 9700 on port cc0")
    net.create("vlan100", vlan_tag=100, vlandev="lagg0")
    assert net.get("vlan100").mtu == 9000  # the T6 has VLAN_MTU
    with pytest.raises(KtlsError):
        net.set_mtu("vlan100", 9001)


def test_addresses(net: Network) -> None:
    net.add_addr("em0", "192.0.2.20", 24)  # no alias: replaces the first inet address
    assert [a.addr for a in net.get("em0").addrs] == ["192.0.2.20"]
    net.add_addr("em0", "192.0.2.21", 32, alias=True)
    assert net.get("em0").addrs[-1].broadcast == "192.0.2.21"
    net.add_addr("em0", "192.0.2.22", None, alias=True)  # classful: /24
    assert net.get("em0").addrs[-1].prefixlen == 24
    net.del_addr("em0", "192.0.2.21")
    with pytest.raises(KtlsError) as e:
        net.del_addr("em0", "192.0.2.21")
    assert err(e) == Errno.EADDRNOTAVAIL
    with pytest.raises(KtlsError) as e:
        net.add_addr("mce0", "198.51.100.10", 24)
    assert err(e) == Errno.EEXIST
    # inet6 on an interface with IPv6 disabled: enabled, link-local added after
    net.add_addr("mce0", "2001:db8:2::10", 64)
    assert [a.addr for a in net.get("mce0").addrs] == [
        "203.0.113.10",
        "2001:db8:2::10",
        "fe80::bace:f6ff:fe4e:2a10",
    ]
    assert not net.get("mce0").nd6 & ifn.ND6_IFF_IFDISABLED


def test_address_brings_a_new_lagg_up(net: Network) -> None:
    net.create("lagg1")
    assert net.iff("lagg1") == 0x8802
    net.add_addr("lagg1", "192.0.2.77", 24, alias=True)
    assert net.iff("lagg1") == 0x8843


# --- persistence ---------------------------------------------------------------------


def test_round_trip_through_json(era: str) -> None:
    net = network_from_default(era)
    net.create("vlan100", vlan_tag=100, vlandev="lagg0")
    net.set_laggproto("lagg0", "lacp")
    net.set_up("cc0", False)
    net.setifcap("lagg0", IFCAP_TXTLS, True)
    doc = json.dumps(net.to_dict())
    back = Network.from_dict(json.loads(doc))
    assert back == net
    assert json.dumps(back.to_dict()) == doc
    assert back.era == era and back.lagg_select("lagg0", 3) == "cc1"


def test_from_dict_rejects_unknown_version(net: Network) -> None:
    d = net.to_dict()
    d["version"] = 2
    with pytest.raises(ValueError, match="version"):
        Network.from_dict(d)
