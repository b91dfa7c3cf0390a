"""Interfaces: IFF flags, capability bits, addresses, vlan(4) and lagg(4).

The simulated ifnet layer. A `Network` holds the interfaces (by name, in
ifindex order), the static routes (`ktls_core.net.route`) and the next ifindex;
it is persisted as one JSON document (`to_dict()` / `from_dict()`).

Every operation is what one ioctl does in FreeBSD (SIOCSIFFLAGS, SIOCSIFMTU,
SIOCAIFADDR, SIOCSIFCAP, SIOCIFCREATE2, SIOCSETVLAN, SIOCSLAGG, SIOCSLAGGPORT,
...): it raises `KtlsError(errno)` as the kernel fails, and returns the kernel
log lines it produced (`cc0: link state changed to DOWN`) for dmesg.

Modelled semantics (sys/net/if_vlan.c, if_lagg.c, sbin/ifconfig):

- Administrative state is `up`; IFF_RUNNING follows it (the driver's init/stop),
  except for a vlan, which is RUNNING while it has a parent (vlan_config()).
- Link state: a physical port has link when it is up and has carrier (the
  simulated cable, `carrier`); so `ifconfig cc0 down` also stands for losing
  link. A lagg has link when one of its ports is active (LAGG_PORTACTIVE: link
  up and IFF_UP); a vlan has its parent's link state; lo has none.
- Capabilities: a physical interface has `capabilities` (supported) and
  `capenable` (enabled). A vlan derives both from its parent
  (vlan_capabilities(): TLS, unmapped mbufs, link state, checksums and TSO when
  the parent does them on vlans), limited by what was asked on the vlan. A lagg
  offers what all its ports offer (lagg_capabilities(): AND of the ports) and
  writes that common enabled set back to every port, so `txtls` is switched on
  through the lagg (which passes it to each port), not on one port.
- A lagg's ports are kept in ifindex order; the primary is the first port
  added. failover sends on lagg_link_active(primary): the primary if active,
  else the port after it, else the first active one; lacp (with flowid) sends
  on ports_up[hash % len(ports_up)]; loadbalance on
  lagg_link_active(ports[hash % len(ports)]); roundrobin on
  lagg_link_active(ports[seq % len(ports)]).
- MACs: the first port gives the lagg its MAC and every port takes the lagg's
  (lagg_port_lladdr); a port leaving gets its own back; a vlan uses its parent's.

Capability bit 26 prints NOMAP in era 'seed' (2019) and MEXTPG in era 'current';
bits 29-31 (VXLAN_HWCSUM, VXLAN_HWTSO, TXTLS_RTLMT) exist only in 'current', so
the seed era masks them off whatever a driver claims.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any, ClassVar

from ktls_core.errors import Errno, KtlsError

if TYPE_CHECKING:
    from ktls_core.net.route import Route

ERAS = ("seed", "current")

# --- interface kinds -----------------------------------------------------------

LOOPBACK = "loopback"
ETHER = "ether"
VLAN = "vlan"
LAGG = "lagg"
KINDS = (LOOPBACK, ETHER, VLAN, LAGG)

# --- IFF flags (sys/net/if.h), in the order ifconfig prints them ----------------

IFF_UP = 0x1
IFF_BROADCAST = 0x2
IFF_DEBUG = 0x4
IFF_LOOPBACK = 0x8
IFF_POINTOPOINT = 0x10
IFF_RUNNING = 0x40  # IFF_DRV_RUNNING, merged into the flags ifconfig shows
IFF_NOARP = 0x80
IFF_PROMISC = 0x100
IFF_ALLMULTI = 0x200
IFF_OACTIVE = 0x400
IFF_SIMPLEX = 0x800
IFF_LINK0 = 0x1000
IFF_LINK1 = 0x2000
IFF_LINK2 = 0x4000
IFF_MULTICAST = 0x8000
IFF_PPROMISC = 0x20000
IFF_MONITOR = 0x40000
IFF_STATICARP = 0x80000

# ifconfig's IFFBITS; 0x20 and 0x10000 have no name and never print.
IFF_NAMES: tuple[tuple[int, str], ...] = (
    (IFF_UP, "UP"),
    (IFF_BROADCAST, "BROADCAST"),
    (IFF_DEBUG, "DEBUG"),
    (IFF_LOOPBACK, "LOOPBACK"),
    (IFF_POINTOPOINT, "POINTOPOINT"),
    (IFF_RUNNING, "RUNNING"),
    (IFF_NOARP, "NOARP"),
    (IFF_PROMISC, "PROMISC"),
    (IFF_ALLMULTI, "ALLMULTI"),
    (IFF_OACTIVE, "OACTIVE"),
    (IFF_SIMPLEX, "SIMPLEX"),
    (IFF_LINK0, "LINK0"),
    (IFF_LINK1, "LINK1"),
    (IFF_LINK2, "LINK2"),
    (IFF_MULTICAST, "MULTICAST"),
    (IFF_PPROMISC, "PPROMISC"),
    (IFF_MONITOR, "MONITOR"),
    (IFF_STATICARP, "STATICARP"),
)

# What each kind of interface has before UP/RUNNING (the clone or attach code).
ETHER_IFF = IFF_BROADCAST | IFF_SIMPLEX | IFF_MULTICAST  # 0x8802
LOOPBACK_IFF = IFF_LOOPBACK | IFF_MULTICAST  # 0x8008

# --- IFCAP bits (sys/net/if.h) --------------------------------------------------

IFCAP_RXCSUM = 0x1
IFCAP_TXCSUM = 0x2
IFCAP_NETCONS = 0x4
IFCAP_VLAN_MTU = 0x8
IFCAP_VLAN_HWTAGGING = 0x10
IFCAP_JUMBO_MTU = 0x20
IFCAP_POLLING = 0x40
IFCAP_VLAN_HWCSUM = 0x80
IFCAP_TSO4 = 0x100
IFCAP_TSO6 = 0x200
IFCAP_LRO = 0x400
IFCAP_WOL_UCAST = 0x800
IFCAP_WOL_MCAST = 0x1000
IFCAP_WOL_MAGIC = 0x2000
IFCAP_TOE4 = 0x4000
IFCAP_TOE6 = 0x8000
IFCAP_VLAN_HWFILTER = 0x10000
IFCAP_NV = 0x20000  # never printed
IFCAP_VLAN_HWTSO = 0x40000
IFCAP_LINKSTATE = 0x80000
IFCAP_NETMAP = 0x100000
IFCAP_RXCSUM_IPV6 = 0x200000
IFCAP_TXCSUM_IPV6 = 0x400000
IFCAP_HWSTATS = 0x800000  # never printed
IFCAP_TXRTLMT = 0x1000000
IFCAP_HWRXTSTMP = 0x2000000
IFCAP_MEXTPG = 0x4000000  # IFCAP_NOMAP in 2019
IFCAP_NOMAP = IFCAP_MEXTPG
IFCAP_TXTLS4 = 0x8000000
IFCAP_TXTLS6 = 0x10000000
IFCAP_VXLAN_HWCSUM = 0x20000000
IFCAP_VXLAN_HWTSO = 0x40000000
IFCAP_TXTLS_RTLMT = 0x80000000

IFCAP_HWCSUM = IFCAP_RXCSUM | IFCAP_TXCSUM
IFCAP_HWCSUM_IPV6 = IFCAP_RXCSUM_IPV6 | IFCAP_TXCSUM_IPV6
IFCAP_TSO = IFCAP_TSO4 | IFCAP_TSO6
IFCAP_TOE = IFCAP_TOE4 | IFCAP_TOE6
IFCAP_WOL = IFCAP_WOL_UCAST | IFCAP_WOL_MCAST | IFCAP_WOL_MAGIC
IFCAP_TXTLS = IFCAP_TXTLS4 | IFCAP_TXTLS6

# ifconfig's IFCAPBITS of 13.0; bit 26 and bits 29-31 depend on the era.
_IFCAP_COMMON: tuple[tuple[int, str], ...] = (
    (IFCAP_RXCSUM, "RXCSUM"),
    (IFCAP_TXCSUM, "TXCSUM"),
    (IFCAP_NETCONS, "NETCONS"),
    (IFCAP_VLAN_MTU, "VLAN_MTU"),
    (IFCAP_VLAN_HWTAGGING, "VLAN_HWTAGGING"),
    (IFCAP_JUMBO_MTU, "JUMBO_MTU"),
    (IFCAP_POLLING, "POLLING"),
    (IFCAP_VLAN_HWCSUM, "VLAN_HWCSUM"),
    (IFCAP_TSO4, "TSO4"),
    (IFCAP_TSO6, "TSO6"),
    (IFCAP_LRO, "LRO"),
    (IFCAP_WOL_UCAST, "WOL_UCAST"),
    (IFCAP_WOL_MCAST, "WOL_MCAST"),
    (IFCAP_WOL_MAGIC, "WOL_MAGIC"),
    (IFCAP_TOE4, "TOE4"),
    (IFCAP_TOE6, "TOE6"),
    (IFCAP_VLAN_HWFILTER, "VLAN_HWFILTER"),
    (IFCAP_VLAN_HWTSO, "VLAN_HWTSO"),
    (IFCAP_LINKSTATE, "LINKSTATE"),
    (IFCAP_NETMAP, "NETMAP"),
    (IFCAP_RXCSUM_IPV6, "RXCSUM_IPV6"),
    (IFCAP_TXCSUM_IPV6, "TXCSUM_IPV6"),
    (IFCAP_TXRTLMT, "TXRTLMT"),
    (IFCAP_HWRXTSTMP, "HWRXTSTMP"),
)
IFCAP_NAMES: dict[str, tuple[tuple[int, str], ...]] = {
    "seed": (
        *_IFCAP_COMMON,
        (IFCAP_NOMAP, "NOMAP"),
        (IFCAP_TXTLS4, "TXTLS4"),
        (IFCAP_TXTLS6, "TXTLS6"),
    ),
    "current": (
        *_IFCAP_COMMON,
        (IFCAP_MEXTPG, "MEXTPG"),
        (IFCAP_TXTLS4, "TXTLS4"),
        (IFCAP_TXTLS6, "TXTLS6"),
        (IFCAP_VXLAN_HWCSUM, "VXLAN_HWCSUM"),
        (IFCAP_VXLAN_HWTSO, "VXLAN_HWTSO"),
        (IFCAP_TXTLS_RTLMT, "TXTLS_RTLMT"),
    ),
}
# The bits a kernel of that era has at all: 2019's if.h stopped at TXTLS6.
IFCAP_ERA_MASK: dict[str, int] = {"seed": 0x1FFFFFFF, "current": 0xFFFFFFFF}

# Names the topology file accepts besides the printed ones: both spellings of
# bit 26 in every era, and the bits ifconfig never prints.
IFCAP_BY_NAME: dict[str, int] = {
    **{name: bit for bit, name in IFCAP_NAMES["current"]},
    "NOMAP": IFCAP_NOMAP,
    "NV": IFCAP_NV,
    "HWSTATS": IFCAP_HWSTATS,
}

# ifconfig(8) capability keywords (each also as -word). `txtls4`/`txtls6` act
# on one family: real ifconfig has only `txtls`, but the seed commit names
# `[-]txtls[46]`, so the simulator accepts them in both eras.
_CAP_KEYWORDS_COMMON: dict[str, int] = {
    "rxcsum": IFCAP_RXCSUM,
    "txcsum": IFCAP_TXCSUM,
    "rxcsum6": IFCAP_RXCSUM_IPV6,
    "txcsum6": IFCAP_TXCSUM_IPV6,
    "netcons": IFCAP_NETCONS,
    "polling": IFCAP_POLLING,
    "tso": IFCAP_TSO,
    "tso4": IFCAP_TSO4,
    "tso6": IFCAP_TSO6,
    "lro": IFCAP_LRO,
    "wol": IFCAP_WOL,
    "wol_ucast": IFCAP_WOL_UCAST,
    "wol_mcast": IFCAP_WOL_MCAST,
    "wol_magic": IFCAP_WOL_MAGIC,
    "vlanmtu": IFCAP_VLAN_MTU,
    "vlanhwtag": IFCAP_VLAN_HWTAGGING,
    "vlanhwfilter": IFCAP_VLAN_HWFILTER,
    "vlanhwtso": IFCAP_VLAN_HWTSO,
    "vlanhwcsum": IFCAP_VLAN_HWCSUM,
    "toe": IFCAP_TOE,
    "txrtlmt": IFCAP_TXRTLMT,
    "hwrxtstmp": IFCAP_HWRXTSTMP,
    "txtls": IFCAP_TXTLS,
    "txtls4": IFCAP_TXTLS4,
    "txtls6": IFCAP_TXTLS6,
}
CAP_KEYWORDS: dict[str, dict[str, int]] = {
    "seed": {**_CAP_KEYWORDS_COMMON, "nomap": IFCAP_NOMAP},
    "current": {
        **_CAP_KEYWORDS_COMMON,
        "mextpg": IFCAP_MEXTPG,
        "txtlsrtlmt": IFCAP_TXTLS_RTLMT,
        "vxlanhwcsum": IFCAP_VXLAN_HWCSUM,
        "vxlanhwtso": IFCAP_VXLAN_HWTSO,
    },
}

# --- nd6 flags (netinet6/nd6.h) -----------------------------------------------

ND6_IFF_PERFORMNUD = 0x1
ND6_IFF_ACCEPT_RTADV = 0x2
ND6_IFF_PREFER_SOURCE = 0x4
ND6_IFF_IFDISABLED = 0x8
ND6_IFF_DONT_SET_IFROUTE = 0x10
ND6_IFF_AUTO_LINKLOCAL = 0x20
ND6_IFF_NO_RADR = 0x40
ND6_IFF_NO_PREFER_IFACE = 0x80
ND6_IFF_NO_DAD = 0x100
ND6_IFF_DEFAULTIF = 0x8000
ND6_NAMES: tuple[tuple[int, str], ...] = (
    (ND6_IFF_PERFORMNUD, "PERFORMNUD"),
    (ND6_IFF_ACCEPT_RTADV, "ACCEPT_RTADV"),
    (ND6_IFF_PREFER_SOURCE, "PREFER_SOURCE"),
    (ND6_IFF_IFDISABLED, "IFDISABLED"),
    (ND6_IFF_DONT_SET_IFROUTE, "DONT_SET_IFROUTE"),
    (ND6_IFF_AUTO_LINKLOCAL, "AUTO_LINKLOCAL"),
    (ND6_IFF_NO_RADR, "NO_RADR"),
    (ND6_IFF_NO_PREFER_IFACE, "NO_PREFER_IFACE"),
    (ND6_IFF_NO_DAD, "NO_DAD"),
    (ND6_IFF_DEFAULTIF, "DEFAULTIF"),
)
# rc.conf's default for an interface without IPv6 configuration, and lo0's.
ND6_DEFAULT = ND6_IFF_PERFORMNUD | ND6_IFF_IFDISABLED | ND6_IFF_AUTO_LINKLOCAL  # 0x29
ND6_ENABLED = ND6_IFF_PERFORMNUD | ND6_IFF_AUTO_LINKLOCAL  # 0x21

# --- lagg (sys/net/if_lagg.h) ---------------------------------------------------

LAGG_PROTOS = ("failover", "lacp", "loadbalance", "roundrobin", "broadcast", "none")
LAGG_HASHES = ("l2", "l3", "l4")
LAGG_PORT_MASTER = 0x1
LAGG_PORT_STACK = 0x2
LAGG_PORT_ACTIVE = 0x4
LAGG_PORT_COLLECTING = 0x8
LAGG_PORT_DISTRIBUTING = 0x10
LAGG_PORT_NAMES: tuple[tuple[int, str], ...] = (
    (LAGG_PORT_MASTER, "MASTER"),
    (LAGG_PORT_STACK, "STACK"),
    (LAGG_PORT_ACTIVE, "ACTIVE"),
    (LAGG_PORT_COLLECTING, "COLLECTING"),
    (LAGG_PORT_DISTRIBUTING, "DISTRIBUTING"),
)
LAGG_MAX_PORTS = 32

# --- vlan -------------------------------------------------------------------------

ETHERTYPE_VLAN = 0x8100  # 802.1q
ETHERTYPE_QINQ = 0x88A8  # 802.1ad
VLAN_PROTO_NAMES = {ETHERTYPE_VLAN: "802.1q", ETHERTYPE_QINQ: "802.1ad"}
ETHER_VLAN_ENCAP_LEN = 4
EVL_VLID_MAX = 4094  # 4095 is reserved

# sys/net/if.c: SIOCSIFMTU bounds before the driver sees the request.
IF_MINMTU = 72
IF_MAXMTU = 65535
IFNAMSIZ = 16
ZERO_MAC = "00:00:00:00:00:00"


@functools.lru_cache(maxsize=4096)
def parse_address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """ipaddress.ip_address(text), remembered: the objects are immutable, and a route
    lookup per connection parsed every address of the host again (connect --count)."""
    return ipaddress.ip_address(text)


@functools.lru_cache(maxsize=4096)
def parse_network(text: str, strict: bool = False) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """ipaddress.ip_network(text, strict), remembered (as parse_address)."""
    return ipaddress.ip_network(text, strict=strict)



class IfError(KtlsError):
    """A KtlsError that also left kernel log lines (if_printf before the failure)."""

    def __init__(self, errno: Errno, detail: str = "", logs: list[str] | None = None) -> None:
        super().__init__(errno, detail)
        self.logs = list(logs or [])


def printb(value: int, names: Iterable[tuple[int, str]]) -> str:
    """`%x<NAME,...>` as ifconfig's printb() prints it (unnamed bits skipped)."""
    return f"{value:x}<{','.join(n for bit, n in names if value & bit)}>"


def check_era(era: str) -> str:
    if era not in ERAS:
        raise ValueError(f"unknown era {era!r} (one of {', '.join(ERAS)})")
    return era


def ntop(ip: ipaddress.IPv4Address | ipaddress.IPv6Address | str) -> str:
    """inet_ntop(3): like str(), but FreeBSD keeps the dotted quad of
    `::ffff:a.b.c.d` and `::a.b.c.d` (inet_ntop6's IPv4 rule; ::1 stays ::1)."""
    if isinstance(ip, str):
        ip = ipaddress.ip_address(ip)
    if ip.version == 4:
        return str(ip)
    words = [int.from_bytes(ip.packed[i : i + 2], "big") for i in range(0, 16, 2)]
    if words[:5] == [0] * 5 and (words[5] == 0xFFFF or (words[5] == 0 and words[6] != 0)):
        v4 = ipaddress.IPv4Address(ip.packed[12:])
        return f"::ffff:{v4}" if words[5] == 0xFFFF else f"::{v4}"
    return str(ip)


def eui64_linklocal(mac: str) -> str:
    """The fe80:: address in6_ifattach() derives from a MAC (modified EUI-64)."""
    b = bytes(int(x, 16) for x in mac.split(":"))
    iid = bytes([b[0] ^ 0x02, b[1], b[2], 0xFF, 0xFE, b[3], b[4], b[5]])
    return str(ipaddress.IPv6Address(b"\xfe\x80" + bytes(6) + iid))


def normalize_mac(text: str) -> str:
    """Lowercase, zero-padded, colon-separated; ValueError if it is not a MAC."""
    parts = re.split(r"[:\-.]", text.strip())
    if len(parts) != 6 or not all(re.fullmatch(r"[0-9A-Fa-f]{1,2}", p) for p in parts):
        raise ValueError(f"bad MAC address {text!r}")
    return ":".join(f"{int(p, 16):02x}" for p in parts)


# --- data -------------------------------------------------------------------------


class Record:
    """What @dataclass gave these records (field-wise __eq__, a repr, no hash),
    written out: generating it cost ~2 ms of every command that imports ifnet."""

    __slots__ = ()
    _fields: ClassVar[tuple[str, ...]] = ()
    __hash__ = None  # type: ignore[assignment]

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return all(getattr(self, f) == getattr(other, f) for f in self._fields)

    def __repr__(self) -> str:
        body = ", ".join(f"{f}={getattr(self, f)!r}" for f in self._fields)
        return f"{type(self).__qualname__}({body})"


class IfAddr(Record):
    """One inet or inet6 address; link-local inet6 prints as `fe80::1%IF`."""

    _fields = ("family", "addr", "prefixlen", "broadcast")

    def __init__(
        self, family: str, addr: str, prefixlen: int, broadcast: str | None = None
    ) -> None:
        self.family = family  # "inet" | "inet6"
        self.addr = addr  # numeric, compressed, no zone
        self.prefixlen = prefixlen
        self.broadcast = broadcast  # inet on an IFF_BROADCAST interface

    @property
    def ip(self) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
        return parse_address(self.addr)

    @property
    def network(self) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
        return parse_network(f"{self.addr}/{self.prefixlen}")

    @property
    def link_local(self) -> bool:
        return self.family == "inet6" and self.ip.is_link_local

    def to_dict(self) -> dict[str, Any]:
        return {
            "family": self.family,
            "addr": self.addr,
            "prefixlen": self.prefixlen,
            "broadcast": self.broadcast,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> IfAddr:
        return cls(str(d["family"]), str(d["addr"]), int(d["prefixlen"]), d.get("broadcast"))


class VlanConf(Record):
    _fields = ("tag", "proto", "pcp", "parent")

    def __init__(
        self,
        tag: int | None = None,
        proto: int = ETHERTYPE_VLAN,
        pcp: int = 0,
        parent: str | None = None,
    ) -> None:
        self.tag = tag  # None while unconfigured
        self.proto = proto
        self.pcp = pcp
        self.parent = parent

    def to_dict(self) -> dict[str, Any]:
        return {"tag": self.tag, "proto": self.proto, "pcp": self.pcp, "parent": self.parent}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> VlanConf:
        return cls(d.get("tag"), int(d["proto"]), int(d["pcp"]), d.get("parent"))


class LaggConf(Record):
    _fields = ("proto", "ports", "primary", "hash")

    def __init__(
        self,
        proto: str = "failover",
        ports: list[str] | None = None,
        primary: str | None = None,
        hash: list[str] | None = None,
    ) -> None:
        self.proto = proto
        self.ports: list[str] = [] if ports is None else ports  # ifindex order
        self.primary = primary  # sc_primary: the first port added
        self.hash: list[str] = list(LAGG_HASHES) if hash is None else hash

    def to_dict(self) -> dict[str, Any]:
        return {
            "proto": self.proto,
            "ports": list(self.ports),
            "primary": self.primary,
            "hash": list(self.hash),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LaggConf:
        return cls(str(d["proto"]), list(d["ports"]), d.get("primary"), list(d["hash"]))


class Interface(Record):
    """struct ifnet, as much of it as ifconfig shows and the transmit path needs.

    For ether and loopback interfaces `capabilities`/`capenable` are the
    driver's supported and enabled bits; for a vlan `capenable` is what was
    asked on the vlan (ifv_capenable, all bits by default) and `capabilities`
    is unused; for a lagg both are unused. Use `Network.caps()` for the
    effective values.
    """

    _fields = (
        "name",
        "index",
        "kind",
        "driver",
        "description",
        "up",
        "flags",
        "mtu",
        "mtu_max",
        "hwaddr",
        "mac",
        "capabilities",
        "capenable",
        "addrs",
        "media",
        "media_active",
        "media_supported",
        "carrier",
        "nd6",
        "groups",
        "cloned",
        "vlan",
        "lagg",
    )

    def __init__(
        self,
        name: str,
        index: int,
        kind: str,
        driver: str,
        description: str = "",
        up: bool = False,
        flags: int = ETHER_IFF,
        mtu: int = 1500,
        mtu_max: int = 9000,
        hwaddr: str | None = None,
        mac: str | None = None,
        capabilities: int = 0,
        capenable: int = 0,
        addrs: list[IfAddr] | None = None,
        media: str = "",
        media_active: str = "",
        media_supported: list[str] | None = None,
        carrier: bool = True,
        nd6: int = ND6_DEFAULT,
        groups: list[str] | None = None,
        cloned: bool = False,
        vlan: VlanConf | None = None,
        lagg: LaggConf | None = None,
    ) -> None:
        self.name = name
        self.index = index
        self.kind = kind
        self.driver = driver
        self.description = description
        self.up = up
        self.flags = flags  # IFF bits other than UP and RUNNING
        self.mtu = mtu
        self.mtu_max = mtu_max
        self.hwaddr = hwaddr  # factory MAC of a physical port
        self.mac = mac  # own lladdr (a lagg's current MAC)
        self.capabilities = capabilities
        self.capenable = capenable
        self.addrs: list[IfAddr] = [] if addrs is None else addrs
        self.media = media  # current media subtype word; "" = no media (lo)
        self.media_active = media_active  # the active subtype and options when link is up
        self.media_supported: list[str] = [] if media_supported is None else media_supported
        self.carrier = carrier
        self.nd6 = nd6
        self.groups: list[str] = [] if groups is None else groups
        self.cloned = cloned
        self.vlan = vlan
        self.lagg = lagg

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "index": self.index,
            "kind": self.kind,
            "driver": self.driver,
            "description": self.description,
            "up": self.up,
            "flags": self.flags,
            "mtu": self.mtu,
            "mtu_max": self.mtu_max,
            "hwaddr": self.hwaddr,
            "mac": self.mac,
            "capabilities": self.capabilities,
            "capenable": self.capenable,
            "addrs": [a.to_dict() for a in self.addrs],
            "media": self.media,
            "media_active": self.media_active,
            "media_supported": list(self.media_supported),
            "carrier": self.carrier,
            "nd6": self.nd6,
            "groups": list(self.groups),
            "cloned": self.cloned,
            "vlan": self.vlan.to_dict() if self.vlan else None,
            "lagg": self.lagg.to_dict() if self.lagg else None,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Interface:
        return cls(
            name=str(d["name"]),
            index=int(d["index"]),
            kind=str(d["kind"]),
            driver=str(d["driver"]),
            description=str(d["description"]),
            up=bool(d["up"]),
            flags=int(d["flags"]),
            mtu=int(d["mtu"]),
            mtu_max=int(d["mtu_max"]),
            hwaddr=d.get("hwaddr"),
            mac=d.get("mac"),
            capabilities=int(d["capabilities"]),
            capenable=int(d["capenable"]),
            addrs=[IfAddr.from_dict(a) for a in d["addrs"]],
            media=str(d["media"]),
            media_active=str(d["media_active"]),
            media_supported=list(d["media_supported"]),
            carrier=bool(d["carrier"]),
            nd6=int(d["nd6"]),
            groups=list(d["groups"]),
            cloned=bool(d["cloned"]),
            vlan=VlanConf.from_dict(d["vlan"]) if d.get("vlan") else None,
            lagg=LaggConf.from_dict(d["lagg"]) if d.get("lagg") else None,
        )


_CLONE_RE = re.compile(r"(lagg|vlan|lo)(\d*)")


class Network:
    """The interfaces and routes of the simulated host."""

    def __init__(self, era: str = "seed") -> None:
        self.era = check_era(era)
        self.interfaces: dict[str, Interface] = {}
        self.routes: list[Route] = []  # static routes; connected ones are derived
        self.next_index = 1

    # --- persistence ----------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": 1,
            "era": self.era,
            "next_index": self.next_index,
            "interfaces": [i.to_dict() for i in self.interfaces.values()],
            "routes": [r.to_dict() for r in self.routes],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Network:
        from ktls_core.net.route import Route

        if d.get("version") != 1:
            raise ValueError(f"unknown network document version {d.get('version')!r}")
        net = cls(str(d["era"]))
        net.next_index = int(d["next_index"])
        for i in d["interfaces"]:
            iface = Interface.from_dict(i)
            net.interfaces[iface.name] = iface
        net.routes = [Route.from_dict(r) for r in d["routes"]]
        return net

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Network) and self.to_dict() == other.to_dict()

    __hash__ = None  # type: ignore[assignment]

    # --- lookup ----------------------------------------------------------------

    def get(self, name: str) -> Interface:
        """ifunit(): the interface, or ENXIO (ifconfig: interface X does not exist)."""
        try:
            return self.interfaces[name]
        except KeyError:
            raise KtlsError(Errno.ENXIO, f"interface {name} does not exist") from None

    def __contains__(self, name: object) -> bool:
        return name in self.interfaces

    def names(self) -> list[str]:
        """Interface names in ifindex order (ifconfig -l)."""
        return [i.name for i in sorted(self.interfaces.values(), key=lambda i: i.index)]

    def by_index(self, index: int) -> Interface | None:
        for iface in self.interfaces.values():
            if iface.index == index:
                return iface
        return None

    def lagg_of(self, port: str) -> str | None:
        """The lagg `port` is a member of (if_lagg), or None."""
        for iface in self.interfaces.values():
            if iface.lagg is not None and port in iface.lagg.ports:
                return iface.name
        return None

    def vlans_on(self, parent: str) -> list[str]:
        return [
            i.name
            for i in self.interfaces.values()
            if i.vlan is not None and i.vlan.parent == parent
        ]

    # --- derived state -------------------------------------------------------------

    def iff(self, name: str) -> int:
        """The flags ifconfig prints (if_flags | if_drv_flags)."""
        iface = self.get(name)
        flags = iface.flags
        if iface.up:
            flags |= IFF_UP
        if iface.kind == VLAN:
            if iface.vlan is not None and iface.vlan.parent is not None:
                flags |= IFF_RUNNING
        elif iface.up:
            flags |= IFF_RUNNING
        return flags

    def link_up(self, name: str) -> bool | None:
        """if_link_state: True (UP), False (DOWN) or None (UNKNOWN, lo)."""
        return self._link(name, 0)

    def _link(self, name: str, depth: int) -> bool | None:
        if depth > len(self.interfaces):
            return False  # a cycle cannot be built through the ioctls; be safe
        iface = self.get(name)
        if iface.kind == LOOPBACK:
            return None
        if iface.kind == ETHER:
            return iface.up and iface.carrier
        if iface.kind == LAGG:
            assert iface.lagg is not None
            return any(self._port_active(p, depth + 1) for p in iface.lagg.ports)
        assert iface.vlan is not None
        if iface.vlan.parent is None:
            return False
        return bool(self._link(iface.vlan.parent, depth + 1))

    def _port_active(self, port: str, depth: int = 0) -> bool:
        """LAGG_PORTACTIVE(): the port has link and is IFF_UP."""
        iface = self.get(port)
        return bool(self._link(port, depth)) and iface.up

    def port_active(self, port: str) -> bool:
        return self._port_active(port)

    def status_active(self, name: str) -> bool:
        """`status: active` (IFM_ACTIVE) rather than `status: no carrier`."""
        return bool(self.link_up(name))

    def current_mac(self, name: str) -> str | None:
        """The lladdr ifconfig prints as `ether`."""
        iface = self.get(name)
        if iface.kind == LOOPBACK:
            return None
        if iface.kind == VLAN:
            assert iface.vlan is not None
            if iface.vlan.parent is not None:
                return self.current_mac(iface.vlan.parent)
            return iface.mac or ZERO_MAC
        lagg = self.lagg_of(name)
        if lagg is not None:
            return self.get(lagg).mac
        return iface.mac or iface.hwaddr or ZERO_MAC

    def caps(self, name: str) -> tuple[int, int]:
        """(if_capabilities, if_capenable) as ifconfig -m shows them, era-masked."""
        sup, ena = self._caps(name, 0)
        mask = IFCAP_ERA_MASK[self.era]
        return sup & mask, ena & mask

    def capabilities(self, name: str) -> int:
        return self.caps(name)[0]

    def options(self, name: str) -> int:
        """The enabled capabilities (`options=`): what ktls_alloc_snd_tag() checks."""
        return self.caps(name)[1]

    def _caps(self, name: str, depth: int) -> tuple[int, int]:
        iface = self.get(name)
        mask = IFCAP_ERA_MASK[self.era]
        if depth > len(self.interfaces):
            return 0, 0
        if iface.kind in (ETHER, LOOPBACK):
            sup = iface.capabilities & mask
            return sup, iface.capenable & sup
        if iface.kind == LAGG:
            assert iface.lagg is not None
            if not iface.lagg.ports:
                return 0, 0
            cap = ena = 0xFFFFFFFF
            for p in iface.lagg.ports:
                psup, pena = self._caps(p, depth + 1)
                cap &= psup
                ena &= pena
            return cap, ena & cap
        assert iface.vlan is not None
        if iface.vlan.parent is None:
            return 0, 0
        psup, pena = self._caps(iface.vlan.parent, depth + 1)
        return vlan_capabilities(psup, pena, iface.capenable)

    # --- lagg port selection -------------------------------------------------------

    def lagg_link_active(self, lagg: str, start: str | None) -> str | None:
        """lagg_link_active(): `start` if active, else the next port, else the first active."""
        conf = self._lagg(lagg)
        if start is not None and start in conf.ports:
            if self._port_active(start):
                return start
            i = conf.ports.index(start)
            if i + 1 < len(conf.ports) and self._port_active(conf.ports[i + 1]):
                return conf.ports[i + 1]
        for p in conf.ports:
            if self._port_active(p):
                return p
        return None

    def lagg_ports_up(self, lagg: str) -> list[str]:
        """The distributing ports (lacp's pm_map), in port order."""
        return [p for p in self._lagg(lagg).ports if self._port_active(p)]

    def lagg_select(self, lagg: str, flow_hash: int) -> str | None:
        """The member a flow leaves by right now, or None when none can send.

        failover: lagg_link_active(primary); lacp (flowid):
        ports_up[hash % len]; loadbalance: lagg_link_active(ports[hash % count]);
        roundrobin: the same with `flow_hash` as the packet sequence number;
        broadcast: every active port sends, the first one is returned; none: None.
        """
        conf = self._lagg(lagg)
        if not conf.ports or conf.proto == "none":
            return None
        if conf.proto == "failover":
            return self.lagg_link_active(lagg, conf.primary)
        if conf.proto == "lacp":
            up = self.lagg_ports_up(lagg)
            return up[flow_hash % len(up)] if up else None
        if conf.proto in ("loadbalance", "roundrobin"):
            return self.lagg_link_active(lagg, conf.ports[flow_hash % len(conf.ports)])
        return self.lagg_link_active(lagg, None)  # broadcast

    def lagg_port_flags(self, lagg: str, port: str) -> int:
        """lagg_port2req()'s rp_flags, as `laggport: cc0 flags=5<MASTER,ACTIVE>`."""
        conf = self._lagg(lagg)
        flags = 0
        if conf.proto == "failover":
            if port == conf.primary:
                flags |= LAGG_PORT_MASTER
            if port == self.lagg_link_active(lagg, conf.primary):
                flags |= LAGG_PORT_ACTIVE
        elif conf.proto in ("roundrobin", "loadbalance", "broadcast"):
            if self._port_active(port):
                flags |= LAGG_PORT_ACTIVE
        elif conf.proto == "lacp" and self._port_active(port):
            # we model a partner that always agrees: an up port distributes
            flags |= LAGG_PORT_ACTIVE | LAGG_PORT_COLLECTING | LAGG_PORT_DISTRIBUTING
        return flags

    def _lagg(self, name: str) -> LaggConf:
        iface = self.get(name)
        if iface.lagg is None:
            raise KtlsError(Errno.EINVAL, f"{name} is not a lagg")
        return iface.lagg

    # --- link-state messages ---------------------------------------------------------

    def stack_depth(self, name: str, seen: int = 0) -> int:
        """Stacking depth: ports before laggs before vlans, for message order."""
        iface = self.interfaces[name]
        if seen > len(self.interfaces):
            return seen
        if iface.kind == LAGG and iface.lagg is not None and iface.lagg.ports:
            return 1 + max(self.stack_depth(p, seen + 1) for p in iface.lagg.ports)
        if iface.kind == VLAN and iface.vlan is not None and iface.vlan.parent:
            return 1 + self.stack_depth(iface.vlan.parent, seen + 1)
        return 1 if iface.kind in (LAGG, VLAN) else 0

    def _link_snapshot(self) -> dict[str, bool | None]:
        return {n: self.link_up(n) for n in self.interfaces}

    def _link_changes(self, before: dict[str, bool | None]) -> list[str]:
        """do_link_state_change()'s `IF: link state changed to UP|DOWN` lines."""
        changed = [
            n
            for n in self.interfaces
            if n in before and self.link_up(n) is not None and self.link_up(n) != bool(before[n])
        ]
        changed.sort(key=lambda n: (self.stack_depth(n), self.interfaces[n].index))
        return [
            f"{n}: link state changed to {'UP' if self.link_up(n) else 'DOWN'}" for n in changed
        ]

    # --- SIOCSIFFLAGS -------------------------------------------------------------

    def set_up(self, name: str, up: bool) -> list[str]:
        """`ifconfig IF up|down`: if_up()/if_down() and the driver's init/stop."""
        iface = self.get(name)
        before = self._link_snapshot()
        iface.up = up
        logs = self._link_changes(before)
        if up:
            self._in6_if_up(iface)
        return logs

    # --- SIOCSIFMTU ----------------------------------------------------------------

    def set_mtu(self, name: str, mtu: int) -> list[str]:
        """`ifconfig IF mtu N`; EINVAL out of range, on a lagg port, or above a vlan's parent."""
        iface = self.get(name)
        if mtu < IF_MINMTU or mtu > IF_MAXMTU:
            raise KtlsError(Errno.EINVAL, f"mtu {mtu} outside {IF_MINMTU}..{IF_MAXMTU}")
        if self.lagg_of(name) is not None:
            # lagg_port_ioctl(): the MTU of a member is the lagg's business
            raise KtlsError(Errno.EINVAL, f"{name} is a lagg port")
        if iface.kind in (ETHER, LOOPBACK):
            if mtu > iface.mtu_max:
                raise KtlsError(Errno.EINVAL, f"{iface.driver} supports at most {iface.mtu_max}")
            iface.mtu = mtu
            return []
        if iface.kind == VLAN:
            assert iface.vlan is not None
            if iface.vlan.parent is None:
                raise KtlsError(Errno.EINVAL, f"{name} has no parent")
            limit = self.get(iface.vlan.parent).mtu - self._vlan_mtufudge(iface.vlan.parent)
            if mtu > limit:
                raise KtlsError(Errno.EINVAL, f"above the parent's {limit}")
            iface.mtu = mtu
            return []
        assert iface.lagg is not None
        for p in iface.lagg.ports:
            if mtu > self._mtu_max(p):
                # lagg_ioctl() reverts the ports it already changed
                line = (
                    f"{name}: failed to change MTU to {mtu} on port {p}, "
                    f"reverting all ports to original MTU ({iface.mtu})"
                )
                raise IfError(Errno.EINVAL, f"{p} cannot take MTU {mtu}", [line])
        for p in iface.lagg.ports:
            self.get(p).mtu = mtu
        iface.mtu = mtu
        return []

    def _mtu_max(self, name: str) -> int:
        iface = self.get(name)
        if iface.kind == VLAN and iface.vlan is not None and iface.vlan.parent:
            return self.get(iface.vlan.parent).mtu - self._vlan_mtufudge(iface.vlan.parent)
        return iface.mtu_max

    def _vlan_mtufudge(self, parent: str) -> int:
        """ifv_mtufudge: 0 when the parent carries full-size frames on vlans."""
        return 0 if self.options(parent) & IFCAP_VLAN_MTU else ETHER_VLAN_ENCAP_LEN

    # --- SIOCAIFADDR / SIOCDIFADDR -------------------------------------------------

    def add_addr(
        self,
        name: str,
        addr: str,
        prefixlen: int | None = None,
        *,
        alias: bool = False,
        broadcast: str | None = None,
    ) -> list[str]:
        """`ifconfig IF inet|inet6 ADDR[/LEN] [alias]`.

        inet without `alias` replaces the interface's first inet address (ifconfig
        deletes it first); inet6 always adds. A missing inet prefix is classful
        and a missing inet6 prefix is 64, as ifconfig and in_aifaddr() do.
        Adding brings the interface up (ether_ioctl SIOCSIFADDR). An inet6
        address clears ND6_IFF_IFDISABLED, which adds the link-local.
        An address already on another interface is EEXIST.
        """
        iface = self.get(name)
        ip = ipaddress.ip_address(addr.split("%")[0])
        family = "inet" if ip.version == 4 else "inet6"
        if prefixlen is None:
            prefixlen = classful_prefixlen(ip) if ip.version == 4 else 64
        if not 0 <= prefixlen <= ip.max_prefixlen:
            raise KtlsError(Errno.EINVAL, f"prefix length {prefixlen}")
        text = str(ip)
        for other in self.interfaces.values():
            if other.name != name and any(a.addr == text for a in other.addrs):
                raise KtlsError(Errno.EEXIST, f"{text} is on {other.name}")
        before = self._link_snapshot()
        if family == "inet" and broadcast is None and self.iff(name) & IFF_BROADCAST:
            broadcast = inet_broadcast(ip, prefixlen)
        new = IfAddr(family, text, prefixlen, broadcast if family == "inet" else None)
        existing = [i for i, a in enumerate(iface.addrs) if a.addr == text]
        if existing:
            iface.addrs[existing[0]] = new  # in_aifaddr() updates it in place
        else:
            if family == "inet" and not alias:
                firsts = [i for i, a in enumerate(iface.addrs) if a.family == "inet"]
                if firsts:
                    del iface.addrs[firsts[0]]
            iface.addrs.append(new)
        self._drop_shadowed_routes()
        if iface.kind != LOOPBACK:
            iface.up = True  # ether_ioctl(SIOCSIFADDR): IFF_UP and if_init()
        if family == "inet6" and iface.nd6 & ND6_IFF_IFDISABLED:
            iface.nd6 &= ~ND6_IFF_IFDISABLED  # in6_control(): manual address enables IPv6
        self._in6_if_up(iface)
        return self._link_changes(before)

    def del_addr(self, name: str, addr: str) -> list[str]:
        """`ifconfig IF inet|inet6 ADDR -alias`; EADDRNOTAVAIL when not there."""
        iface = self.get(name)
        try:
            text = str(ipaddress.ip_address(addr.split("%")[0]))
        except ValueError:
            raise KtlsError(Errno.EADDRNOTAVAIL, addr) from None
        for i, a in enumerate(iface.addrs):
            if a.addr == text:
                del iface.addrs[i]
                return []
        raise KtlsError(Errno.EADDRNOTAVAIL, f"{text} is not on {name}")

    def set_ifdisabled(self, name: str, disabled: bool) -> list[str]:
        """`ifconfig IF inet6 [-]ifdisabled` (nd6 ND6_IFF_IFDISABLED)."""
        iface = self.get(name)
        if disabled:
            iface.nd6 |= ND6_IFF_IFDISABLED
        else:
            iface.nd6 &= ~ND6_IFF_IFDISABLED
            self._in6_if_up(iface)
        return []

    def _in6_if_up(self, iface: Interface) -> None:
        """in6_if_up(): an up interface with IPv6 enabled gets its link-local."""
        if (
            iface.kind == LOOPBACK
            or not iface.up
            or iface.nd6 & ND6_IFF_IFDISABLED
            or not iface.nd6 & ND6_IFF_AUTO_LINKLOCAL
            or any(a.link_local for a in iface.addrs)
        ):
            return
        mac = self.current_mac(iface.name)
        if mac is None or mac == ZERO_MAC:
            return
        iface.addrs.append(IfAddr("inet6", eui64_linklocal(mac), 64))

    def _drop_shadowed_routes(self) -> None:
        """A kernel (RTF_PINNED) connected route replaces a static one with its key."""
        from ktls_core.net.route import connected_keys

        keys = connected_keys(self)
        self.routes = [r for r in self.routes if r.key() not in keys]

    # --- SIOCSIFCAP ------------------------------------------------------------------

    def setifcap(self, name: str, bits: int, on: bool) -> list[str]:
        """ifconfig's setifcap(): set or clear `bits`, keep what the driver supports.

        Unsupported bits are dropped silently; no change means no ioctl.
        """
        sup, ena = self.caps(name)
        want = (ena | bits) if on else (ena & ~bits)
        want &= sup
        if want == ena:
            return []
        self._siocsifcap(name, want)
        return []

    def _siocsifcap(self, name: str, reqcap: int, depth: int = 0) -> None:
        iface = self.get(name)
        if iface.kind in (ETHER, LOOPBACK):
            iface.capenable = reqcap & iface.capabilities
        elif iface.kind == VLAN:
            iface.capenable = reqcap  # ifv_capenable; vlan_capabilities() derives the rest
        else:
            assert iface.lagg is not None
            if depth <= len(self.interfaces):
                # lagg_ioctl() calls each port's own if_ioctl (lp_ioctl), not
                # lagg_port_ioctl(), so the write-back runs once, below
                for p in iface.lagg.ports:
                    self._siocsifcap(p, reqcap, depth + 1)
        if depth == 0:
            self._lagg_capabilities_all()

    def _lagg_capabilities_all(self) -> None:
        for iface in self.interfaces.values():
            if iface.lagg is not None:
                self._lagg_capabilities(iface.name)

    def _lagg_capabilities(self, lagg: str) -> None:
        """lagg_capabilities(): write the ports' common enabled set back to each port."""
        conf = self._lagg(lagg)
        if not conf.ports:
            return
        ena = 0xFFFFFFFF
        for p in conf.ports:
            ena &= self.options(p)
        for _ in range(8):  # "may require several iterations if they are dependent"
            pena = ena
            for p in conf.ports:
                if self.options(p) != ena:  # lagg_setcaps()
                    piface = self.get(p)
                    if piface.kind == VLAN:
                        piface.capenable = ena
                    elif piface.kind == ETHER:
                        piface.capenable = ena & piface.capabilities
                ena &= self.options(p)
            if pena == ena:
                break

    # --- cloning -----------------------------------------------------------------

    def create(
        self,
        name: str,
        *,
        vlan_tag: int | None = None,
        vlandev: str | None = None,
    ) -> tuple[str, list[str]]:
        """SIOCIFCREATE2: clone lagg, vlan or lo; returns the name chosen and log lines.

        `lagg`, `vlan` and `lo` pick the next free unit; `lagg3`, `vlan100`,
        `lo1` name it; `PARENT.TAG` (cc0.100) is a vlan on PARENT with TAG.
        No cloner for the name: EINVAL. The name exists, or the vlan tag is
        taken on that parent: EEXIST.
        """
        if name in self.interfaces:
            raise KtlsError(Errno.EEXIST, f"interface {name} already exists")
        if len(name) >= IFNAMSIZ:
            raise KtlsError(Errno.EINVAL, f"name {name!r} too long")
        m = _CLONE_RE.fullmatch(name)
        dot = re.fullmatch(r"(.+)\.(\d+)", name)
        if m:
            cloner, unit = m.group(1), m.group(2)
            if unit == "":
                n = 0
                while f"{cloner}{n}" in self.interfaces:
                    n += 1
                name = f"{cloner}{n}"
            elif len(unit) > 1 and unit.startswith("0"):
                raise KtlsError(Errno.EINVAL, f"bad unit in {name!r}")
        elif dot and dot.group(1) in self.interfaces:
            cloner = "vlan"
            if vlan_tag is not None or vlandev is not None:
                raise KtlsError(Errno.EINVAL, "tag and parent are in the name")
            vlandev, vlan_tag = dot.group(1), int(dot.group(2))
        else:
            raise KtlsError(Errno.EINVAL, f"no interface cloner for {name!r}")
        if cloner != "vlan" and (vlan_tag is not None or vlandev is not None):
            raise KtlsError(Errno.EINVAL, "vlan parameters on a non-vlan")
        before = self._link_snapshot()
        if cloner == "vlan":
            if (vlan_tag is None) != (vlandev is None):
                raise KtlsError(Errno.EINVAL, "both vlan and vlandev must be specified")
            if vlandev is not None and vlan_tag is not None:
                self._check_vlan(name, vlan_tag, vlandev)
        iface = self.new_cloned(name, cloner)
        if cloner == "vlan" and vlandev is not None and vlan_tag is not None:
            self._vlan_config(iface, vlan_tag, vlandev)
        return name, self._link_changes(before)

    def new_cloned(self, name: str, cloner: str) -> Interface:
        """A cloner's create routine: a new, unconfigured lagg, vlan or lo."""
        kind = {"lagg": LAGG, "vlan": VLAN, "lo": LOOPBACK}[cloner]
        iface = Interface(
            name=name,
            index=self.next_index,
            kind=kind,
            driver=cloner,
            cloned=True,
            groups=[cloner],
        )
        if kind == LOOPBACK:
            iface.flags = LOOPBACK_IFF
            iface.mtu = 16384
            iface.mtu_max = IF_MAXMTU
            iface.capabilities = iface.capenable = LO_CAPS
            iface.nd6 = ND6_DEFAULT
        elif kind == LAGG:
            iface.lagg = LaggConf()
            iface.mac = ZERO_MAC  # lagg_clone_create()'s all-zero eaddr
            iface.media = "autoselect"
            iface.media_supported = ["autoselect"]
        else:
            iface.vlan = VlanConf()
            iface.mac = ZERO_MAC
            iface.capenable = 0xFFFFFFFF  # ifv_capenable starts as "everything"
        self.interfaces[name] = iface
        self.next_index += 1
        return iface

    def destroy(self, name: str) -> list[str]:
        """SIOCIFDESTROY: only cloned interfaces, never lo0 (EINVAL)."""
        from ktls_core.net.route import flush_interface_routes

        iface = self.get(name)
        if not iface.cloned or name == "lo0":
            raise KtlsError(Errno.EINVAL, f"{name} cannot be destroyed")
        before = self._link_snapshot()
        lagg = self.lagg_of(name)
        if lagg is not None:
            self.del_laggport(lagg, name)
        if iface.lagg is not None:
            for p in list(iface.lagg.ports):
                self._lagg_port_destroy(name, p)
        for v in self.vlans_on(name):  # vlan_ifdetach(): the vlan loses its parent
            self._vlan_unconfig(self.get(v))
        del self.interfaces[name]
        flush_interface_routes(self, name)
        return self._link_changes(before)

    # --- vlan(4) ---------------------------------------------------------------

    def set_vlan(
        self,
        name: str,
        tag: int,
        parent: str,
        *,
        proto: int | None = None,
    ) -> list[str]:
        """SIOCSETVLAN: `ifconfig vlanN vlan TAG vlandev PARENT`.

        ENOENT no such parent; EPROTONOSUPPORT a parent that is not Ethernet;
        EINVAL a tag above 4094; EEXIST the tag is taken on that parent; EBUSY
        the vlan already has another parent (-vlandev first).
        """
        iface = self.get(name)
        if iface.kind != VLAN or iface.vlan is None:
            raise KtlsError(Errno.EINVAL, f"{name} is not a vlan")
        if parent not in self.interfaces:
            raise KtlsError(Errno.ENOENT, f"no interface {parent}")
        if iface.vlan.parent is not None and iface.vlan.parent != parent:
            raise KtlsError(Errno.EBUSY, f"{name} is on {iface.vlan.parent}")
        self._check_vlan(name, tag, parent)
        before = self._link_snapshot()
        if proto is not None:
            iface.vlan.proto = proto
        self._vlan_config(iface, tag, parent)
        return self._link_changes(before)

    def unset_vlandev(self, name: str) -> list[str]:
        """`ifconfig vlanN -vlandev`: vlan_unconfig()."""
        iface = self.get(name)
        if iface.kind != VLAN:
            raise KtlsError(Errno.EINVAL, f"{name} is not a vlan")
        before = self._link_snapshot()
        self._vlan_unconfig(iface)
        return self._link_changes(before)

    def set_vlanpcp(self, name: str, pcp: int) -> list[str]:
        iface = self.get(name)
        if iface.vlan is None:
            raise KtlsError(Errno.EINVAL, f"{name} is not a vlan")
        if not 0 <= pcp <= 7:
            raise KtlsError(Errno.EINVAL, f"pcp {pcp}")
        iface.vlan.pcp = pcp
        return []

    def _check_vlan(self, name: str, tag: int, parent: str) -> None:
        if parent not in self.interfaces:
            raise KtlsError(Errno.ENOENT, f"no interface {parent}")
        if not 0 <= tag <= EVL_VLID_MAX:
            raise KtlsError(Errno.EINVAL, f"vlan tag {tag}")
        p = self.get(parent)
        # vlan_config(): only Ethernet-like parents with broadcast and multicast
        if p.kind not in (ETHER, LAGG, VLAN) or (p.flags & ETHER_IFF) != ETHER_IFF:
            raise KtlsError(Errno.EPROTONOSUPPORT, f"{parent} is not Ethernet")
        for v in self.vlans_on(parent):
            other = self.get(v).vlan
            if v != name and other is not None and other.tag == tag:
                raise KtlsError(Errno.EEXIST, f"tag {tag} is {v} on {parent}")

    def _vlan_config(self, iface: Interface, tag: int, parent: str) -> None:
        assert iface.vlan is not None
        first = iface.vlan.parent is None
        iface.vlan.tag = tag
        iface.vlan.parent = parent
        if first:
            iface.mtu = self.get(parent).mtu - self._vlan_mtufudge(parent)
        self._lagg_capabilities_all()

    def _vlan_unconfig(self, iface: Interface) -> None:
        assert iface.vlan is not None
        if iface.vlan.parent is not None:
            iface.mac = self.current_mac(iface.vlan.parent)
        iface.vlan.parent = None
        iface.vlan.tag = None

    # --- lagg(4) -----------------------------------------------------------------

    def set_laggproto(self, name: str, proto: str) -> list[str]:
        """SIOCSLAGG: `ifconfig laggN laggproto PROTO` (EPROTONOSUPPORT unknown)."""
        conf = self._lagg(name)
        if proto not in LAGG_PROTOS:
            raise KtlsError(Errno.EPROTONOSUPPORT, f"lagg protocol {proto!r}")
        before = self._link_snapshot()
        conf.proto = proto
        return self._link_changes(before)

    def set_lagghash(self, name: str, hashes: list[str]) -> list[str]:
        """SIOCSLAGGHASH: `lagghash l2,l3,l4` (stored in l2,l3,l4 order)."""
        conf = self._lagg(name)
        if not hashes or any(h not in LAGG_HASHES for h in hashes):
            raise KtlsError(Errno.EINVAL, f"lagghash {','.join(hashes)}")
        conf.hash = [h for h in LAGG_HASHES if h in hashes]
        return []

    def add_laggport(self, lagg: str, port: str) -> list[str]:
        """SIOCSLAGGPORT: lagg_port_create().

        EINVAL no such port, or the port is a lagg (stacking is disabled);
        EEXIST already a member of this lagg (ifconfig says nothing); EBUSY a
        member of another lagg; EPROTONOSUPPORT not Ethernet; ENOSPC 32 ports.
        """
        conf = self._lagg(lagg)
        logs: list[str] = []
        if port not in self.interfaces:
            raise KtlsError(Errno.EINVAL, f"no interface {port}")
        piface = self.get(port)
        if piface.kind == LAGG:
            if port == lagg:
                logs.append(f"{lagg}: cannot add a lagg to itself as a port")
            raise IfError(Errno.EINVAL, "lagg stacking is disabled", logs)
        if len(conf.ports) >= LAGG_MAX_PORTS:
            raise KtlsError(Errno.ENOSPC, "too many ports")
        owner = self.lagg_of(port)
        if owner == lagg:
            raise KtlsError(Errno.EEXIST, f"{port} is already in {lagg}")
        if owner is not None:
            raise KtlsError(Errno.EBUSY, f"{port} is in {owner}")
        if piface.kind not in (ETHER, VLAN):
            raise KtlsError(Errno.EPROTONOSUPPORT, f"{port} is not Ethernet")
        before = self._link_snapshot()
        lagg_iface = self.get(lagg)
        if not conf.ports:
            lagg_iface.mtu = piface.mtu  # "allow the first Ethernet member to define the MTU"
        elif piface.mtu != lagg_iface.mtu:
            if lagg_iface.mtu > self._mtu_max(port):
                raise IfError(
                    Errno.EINVAL,
                    f"{port} cannot take MTU {lagg_iface.mtu}",
                    [f"{lagg}: invalid MTU for {port}"],
                )
            piface.mtu = lagg_iface.mtu
        v6 = [a for a in piface.addrs if a.family == "inet6"]
        if v6:
            piface.addrs = [a for a in piface.addrs if a.family != "inet6"]
            logs.append(
                f"{lagg}: IPv6 addresses on {port} have been removed before adding it "
                "as a member to prevent IPv6 address scope violation."
            )
        if not conf.ports:
            conf.primary = port
            lagg_iface.mac = self.current_mac(port)  # lagg takes the first port's MAC
        conf.ports.append(port)
        conf.ports.sort(key=lambda p: self.get(p).index)  # "keep ports sorted by if_index"
        self._lagg_capabilities(lagg)
        self._in6_if_up(lagg_iface)
        return logs + self._link_changes(before)

    def del_laggport(self, lagg: str, port: str) -> list[str]:
        """SIOCSLAGGDELPORT: EINVAL no such interface, ENOENT not a member of this lagg."""
        self._lagg(lagg)
        if port not in self.interfaces:
            raise KtlsError(Errno.EINVAL, f"no interface {port}")
        if self.lagg_of(port) != lagg:
            raise KtlsError(Errno.ENOENT, f"{port} is not in {lagg}")
        before = self._link_snapshot()
        self._lagg_port_destroy(lagg, port)
        self._lagg_capabilities(lagg)
        return self._link_changes(before)

    def _lagg_port_destroy(self, lagg: str, port: str) -> None:
        """lagg_port_destroy(): a new primary (and lagg MAC) if the primary leaves."""
        conf = self._lagg(lagg)
        conf.ports.remove(port)
        if conf.primary == port:
            conf.primary = conf.ports[0] if conf.ports else None
            new_mac = self.get(conf.primary).hwaddr if conf.primary else ZERO_MAC
            lagg_iface = self.get(lagg)
            lagg_iface.mac = new_mac or ZERO_MAC


def vlan_capabilities(psup: int, pena: int, requested: int) -> tuple[int, int]:
    """vlan_capabilities(): a vlan's (capabilities, capenable) from its parent's.

    `requested` is what was asked on the vlan itself (ifv_capenable); mena is
    the parent's enabled set limited by it.
    """
    mena = pena & requested
    cap = ena = 0
    if psup & IFCAP_VLAN_HWCSUM:
        cap |= psup & (IFCAP_HWCSUM | IFCAP_HWCSUM_IPV6)
    if pena & IFCAP_VLAN_HWCSUM and pena & IFCAP_VLAN_HWTAGGING:
        ena |= mena & (IFCAP_HWCSUM | IFCAP_HWCSUM_IPV6)
    if psup & IFCAP_VLAN_HWTSO:
        cap |= psup & IFCAP_TSO
    if pena & IFCAP_VLAN_HWTSO:
        ena |= mena & IFCAP_TSO
    if psup & IFCAP_VLAN_HWCSUM:  # "guess it may do LRO on VLANs"
        cap |= psup & IFCAP_LRO
    if pena & IFCAP_VLAN_HWCSUM:
        ena |= mena & IFCAP_LRO
    if psup & IFCAP_VLAN_HWTAGGING:
        cap |= psup & IFCAP_TOE
    if pena & IFCAP_VLAN_HWTAGGING:
        ena |= mena & IFCAP_TOE
    for bit in (IFCAP_LINKSTATE, IFCAP_TXRTLMT, IFCAP_MEXTPG):
        cap |= psup & bit
        ena |= mena & bit
    # "All TLS drivers in the tree today can deal with VLANs."
    for bits in (IFCAP_TXTLS, IFCAP_TXTLS_RTLMT):
        if psup & bits:
            cap |= psup & bits
        if pena & bits:
            ena |= mena & bits
    return cap, ena & cap


# lo(4): if_capabilities = IFCAP_HWCSUM | IFCAP_HWCSUM_IPV6 | IFCAP_LINKSTATE
LO_CAPS = IFCAP_HWCSUM | IFCAP_HWCSUM_IPV6 | IFCAP_LINKSTATE


def classful_prefixlen(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> int:
    """IN_CLASSA/B/C: the prefix an inet address without a mask gets."""
    if ip.version == 6:
        return 64
    first = int(ip) >> 24
    if first < 128:
        return 8
    if first < 192:
        return 16
    if first < 224:
        return 24
    return 32


def inet_broadcast(ip: ipaddress.IPv4Address | ipaddress.IPv6Address, prefixlen: int) -> str:
    """in_ifinit(): addr | ~mask; a /31 (RFC 3021) broadcasts to 255.255.255.255."""
    if prefixlen == 31:
        return "255.255.255.255"
    return str(ipaddress.ip_network(f"{ip}/{prefixlen}", strict=False).broadcast_address)


def inet_netmask_hex(prefixlen: int) -> str:
    """`netmask 0xffffff00`: lowercase hex, no leading zeros."""
    mask = (0xFFFFFFFF << (32 - prefixlen)) & 0xFFFFFFFF if prefixlen else 0
    return f"0x{mask:x}"


def iter_addrs(net: Network, family: str | None = None) -> Iterator[tuple[Interface, IfAddr]]:
    """Every address in ifindex order, then address order."""
    for name in net.names():
        iface = net.interfaces[name]
        for a in iface.addrs:
            if family is None or a.family == family:
                yield iface, a
