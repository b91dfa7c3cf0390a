"""The IPv4/IPv6 routing table, longest-prefix match, and the egress question.

Routes come from two places, as in the kernel:

- **Kernel routes** (RTF_PINNED), derived from the interface addresses every
  time they are asked for, so they can never disagree with them: the prefix
  route of each address (`192.0.2.0/24 link#1 U em0`; the first interface with
  that prefix owns it, in ifindex order), and the host route of each local
  address through lo0 (`192.0.2.10 link#1 UHS lo0`). An inet address on a
  loopback interface, and an inet6 one with a full-length prefix (::1), gets
  one `UH` host route on that interface instead (in_ifinit() makes lo0's
  address its own destination). Deleting or changing a
  pinned route is EADDRINUSE (rt_unlinkrte(): "gateway uses the same route");
  when an address brings in a kernel route with the key of a static route, the
  static route is replaced (the pinned add wins).
- **Static routes** (`Network.routes`): `route add` with a gateway (UGS) or with
  `-interface IF` (US, gateway link#N), `-reject` (R), `-blackhole` (B). The
  outgoing interface is fixed when the route is added, as a nexthop's nh_ifp
  is: the interface holding the gateway address, else the one whose prefix
  contains it, else the interface of the route to it unless that is the default
  route (ifa_ifwithroute(); ENETUNREACH otherwise). Destroying an interface
  flushes its routes.

A route's key is its network (a host route is the full-length prefix) plus, for
link-local IPv6, the interface it is scoped to (KAME embeds it in the address,
which is also why `fe80::%lo0/64` sorts after `fe80::/10`).

`egress(net, faddr, flow_hash)` is what the transmit path asks: the interface
the destination leaves by now (the route's interface, nh_ifp) and the physical
port behind any vlan and lagg. It raises KtlsError:

- EHOSTUNREACH: no route, or a reject or blackhole route (ip_output()'s answer;
  connect(2) callers may prefer to report ENETUNREACH as in_pcbladdr() does);
- ENETUNREACH: the route exists but nothing can send: an interface on the way
  is down or not running, a physical port has no link, or a lagg has no active
  port (no ports, all down, or laggproto none). FreeBSD says ENETDOWN
  (ether_output(), lagg_transmit()) or ENXIO there; ENETDOWN is not among the
  simulator's errno values, so ENETUNREACH stands for all of them, and the
  exception's detail names the interface.
"""

from __future__ import annotations

import ipaddress
from typing import Any, NamedTuple

from ktls_core.errors import Errno, KtlsError
from ktls_core.net.ifnet import (
    ETHER,
    IFF_RUNNING,
    IFF_UP,
    LAGG,
    LOOPBACK,
    VLAN,
    Network,
    Record,
    ntop,
    parse_network,
)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# --- RTF flags (sys/net/route.h) ------------------------------------------------

RTF_UP = 0x1
RTF_GATEWAY = 0x2
RTF_HOST = 0x4
RTF_REJECT = 0x8
RTF_DYNAMIC = 0x10
RTF_MODIFIED = 0x20
RTF_DONE = 0x40  # set on a routing-socket reply, never on a stored route
RTF_XRESOLVE = 0x200
RTF_LLINFO = 0x400
RTF_STATIC = 0x800
RTF_BLACKHOLE = 0x1000
RTF_PROTO2 = 0x4000
RTF_PROTO1 = 0x8000
RTF_PRCLONING = 0x10000
RTF_WASCLONED = 0x20000
RTF_PROTO3 = 0x40000
RTF_FIXEDMTU = 0x80000
RTF_PINNED = 0x100000
RTF_LOCAL = 0x200000
RTF_BROADCAST = 0x400000
RTF_MULTICAST = 0x800000
RTF_STICKY = 0x10000000

# route(8)'s routeflags, in bit order (`flags: <UP,GATEWAY,DONE,STATIC>`).
RTF_NAMES: tuple[tuple[int, str], ...] = (
    (RTF_UP, "UP"),
    (RTF_GATEWAY, "GATEWAY"),
    (RTF_HOST, "HOST"),
    (RTF_REJECT, "REJECT"),
    (RTF_DYNAMIC, "DYNAMIC"),
    (RTF_MODIFIED, "MODIFIED"),
    (RTF_DONE, "DONE"),
    (RTF_XRESOLVE, "XRESOLVE"),
    (RTF_LLINFO, "LLINFO"),
    (RTF_STATIC, "STATIC"),
    (RTF_BLACKHOLE, "BLACKHOLE"),
    (RTF_PROTO2, "PROTO2"),
    (RTF_PROTO1, "PROTO1"),
    (RTF_PRCLONING, "PRCLONING"),
    (RTF_WASCLONED, "WASCLONED"),
    (RTF_PROTO3, "PROTO3"),
    (RTF_FIXEDMTU, "FIXEDMTU"),
    (RTF_PINNED, "PINNED"),
    (RTF_LOCAL, "LOCAL"),
    (RTF_BROADCAST, "BROADCAST"),
    (RTF_MULTICAST, "MULTICAST"),
    (RTF_STICKY, "STICKY"),
)

# netstat(1)'s flag letters, in the order it prints them.
NETSTAT_FLAGS: tuple[tuple[int, str], ...] = (
    (RTF_UP, "U"),
    (RTF_GATEWAY, "G"),
    (RTF_HOST, "H"),
    (RTF_REJECT, "R"),
    (RTF_DYNAMIC, "D"),
    (RTF_MODIFIED, "M"),
    (RTF_DONE, "d"),
    (RTF_XRESOLVE, "X"),
    (RTF_STATIC, "S"),
    (RTF_PROTO1, "1"),
    (RTF_PROTO2, "2"),
    (RTF_PROTO3, "3"),
    (RTF_BLACKHOLE, "B"),
    (RTF_BROADCAST, "b"),
)

RT_DEFAULT_WEIGHT = 1


class Route(Record):
    """One rtentry + nexthop.

    `dst` is the network in CIDR form (a host route is /32 or /128 with
    RTF_HOST); `zone` is the interface a link-local IPv6 destination is scoped
    to. `gateway` is the next-hop address (RTF_GATEWAY), else None and `link`
    names the interface whose `link#N` is the gateway. `ifname` is nh_ifp, the
    Netif column. `origin` is "static" or, for derived routes, "connected"
    (prefix) or "local" (an address of this host).
    """

    _fields = ("dst", "ifname", "flags", "gateway", "link", "zone", "origin")

    def __init__(
        self,
        dst: str,
        ifname: str,
        flags: int,
        gateway: str | None = None,
        link: str | None = None,
        zone: str | None = None,
        origin: str = "static",
    ) -> None:
        self.dst = dst
        self.ifname = ifname
        self.flags = flags
        self.gateway = gateway
        self.link = link
        self.zone = zone
        self.origin = origin

    @property
    def network(self) -> IPNetwork:
        return parse_network(self.dst, strict=True)

    @property
    def family(self) -> str:
        return "inet" if self.network.version == 4 else "inet6"

    @property
    def is_default(self) -> bool:
        return self.network.prefixlen == 0

    @property
    def is_host(self) -> bool:
        return bool(self.flags & RTF_HOST)

    def key(self) -> tuple[str, str | None]:
        return (self.dst, self.zone)

    def dst_text(self) -> str:
        """netstat's Destination: `default`, `192.0.2.0/24`, `fe80::%lo0/64`, `::1`."""
        net = self.network
        if net.prefixlen == 0:
            return "default"
        addr = ntop(net.network_address) + (f"%{self.zone}" if self.zone else "")
        return addr if self.is_host else f"{addr}/{net.prefixlen}"

    def gateway_text(self, net: Network) -> str:
        """netstat's Gateway: the address, or `link#N` of an interface route."""
        if self.gateway is not None:
            return self.gateway
        name = self.link or self.ifname
        iface = net.interfaces.get(name)
        return f"link#{iface.index}" if iface is not None else "link#0"

    def netstat_flags(self) -> str:
        return "".join(c for bit, c in NETSTAT_FLAGS if self.flags & bit)

    def to_dict(self) -> dict[str, Any]:
        return {
            "dst": self.dst,
            "ifname": self.ifname,
            "flags": self.flags,
            "gateway": self.gateway,
            "link": self.link,
            "zone": self.zone,
            "origin": self.origin,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Route:
        return cls(
            dst=str(d["dst"]),
            ifname=str(d["ifname"]),
            flags=int(d["flags"]),
            gateway=d.get("gateway"),
            link=d.get("link"),
            zone=d.get("zone"),
            origin=str(d.get("origin", "static")),
        )


class Egress(NamedTuple):
    """Where a packet to a destination leaves right now.

    `ifname` is the route's interface (nh_ifp: em0, lagg0, vlan100, lo0), the
    one whose `capenable` ktls_alloc_snd_tag() checks; `port` is the physical
    port the frame goes out on (cc1 behind lagg0 after a failover), with its
    own `port_capenable`. `path` runs from ifname down to port; `vlan_tags`
    are the 802.1Q tags pushed on the way, outermost first. `snd_tag` is False
    when a send tag cannot be allocated through this path (a lagg whose
    protocol has no tag lookup: roundrobin, broadcast; or lo0).
    """

    ifname: str
    port: str
    path: tuple[str, ...]
    gateway: str | None
    route: str
    mtu: int
    vlan_tags: tuple[int, ...]
    capenable: int
    port_capenable: int
    src_mac: str | None
    snd_tag: bool


# --- parsing ----------------------------------------------------------------


def parse_addr(text: str) -> tuple[IPAddress, str | None]:
    """`198.51.100.7` or `fe80::1%lagg0` -> (address, zone); ValueError if bad."""
    addr, _, zone = text.partition("%")
    ip = ipaddress.ip_address(addr)
    if zone and ip.version == 4:
        raise ValueError(f"zone on an IPv4 address: {text!r}")
    return ip, (zone or None)


def _zone_of(ip: IPAddress, zone: str | None) -> str | None:
    return zone if ip.version == 6 and ip.is_link_local else None


# --- kernel (derived) routes ----------------------------------------------------


def _loopback_name(net: Network) -> str | None:
    if "lo0" in net.interfaces:
        return "lo0"
    for name in net.names():
        if net.interfaces[name].kind == LOOPBACK:
            return name
    return None


def connected_routes(net: Network) -> list[Route]:
    """The kernel's routes for the interface addresses (in ifindex order)."""
    lo = _loopback_name(net)
    routes: list[Route] = []
    seen: set[tuple[str, str | None]] = set()

    def add(r: Route) -> None:
        if r.key() not in seen:
            seen.add(r.key())
            routes.append(r)

    for name in net.names():
        iface = net.interfaces[name]
        for a in iface.addrs:
            ip = a.ip
            zone = name if a.link_local else None
            host = f"{ip}/{ip.max_prefixlen}"
            # On a loopback interface an inet address, and an inet6 address with a
            # full-length prefix (::1), is its own destination: one UH host route
            # on that interface and no loopback route (real `netstat -rn` shows
            # `::1 link#N UH lo0`; the reference's UHS example is derived).
            if iface.kind == LOOPBACK and (a.family == "inet" or a.prefixlen == ip.max_prefixlen):
                add(
                    Route(host, name, RTF_UP | RTF_HOST | RTF_PINNED, link=name, origin="connected")
                )
                continue
            if a.prefixlen < ip.max_prefixlen:
                prefix = str(a.network)
                add(
                    Route(
                        prefix, name, RTF_UP | RTF_PINNED, link=name, zone=zone, origin="connected"
                    )
                )
            local_if = lo if lo is not None else name
            flags = RTF_UP | RTF_HOST | RTF_STATIC | RTF_PINNED
            add(Route(host, local_if, flags, link=name, zone=zone, origin="local"))
    return routes


def connected_keys(net: Network) -> set[tuple[str, str | None]]:
    return {r.key() for r in connected_routes(net)}


def flush_interface_routes(net: Network, name: str) -> None:
    """rt_flushifroutes(): the static routes through an interface go with it."""
    net.routes = [r for r in net.routes if r.ifname != name and r.link != name]


def all_routes(net: Network, family: str | None = None) -> list[Route]:
    routes = connected_routes(net) + list(net.routes)
    if family is not None:
        routes = [r for r in routes if r.family == family]
    return routes


def _radix_key(net: Network, r: Route) -> tuple[int, int, int]:
    n = r.network
    value = int(n.network_address)
    if r.zone is not None and n.version == 6:
        iface = net.interfaces.get(r.zone)
        # KAME: the zone index sits in bytes 2-3 of a link-local address
        value |= (iface.index if iface else 0) << 96
    return (n.version, value, -n.prefixlen)


def routing_table(net: Network, family: str) -> list[Route]:
    """`netstat -rn`'s rows of one family ('inet' or 'inet6'), in radix order."""
    return sorted(all_routes(net, family), key=lambda r: _radix_key(net, r))


# --- lookup -------------------------------------------------------------------


def lookup(net: Network, addr: str) -> Route | None:
    """fib4_lookup()/fib6_lookup(): the longest prefix containing `addr`."""
    ip, zone = parse_addr(addr)
    zone = _zone_of(ip, zone)
    best: Route | None = None
    for r in all_routes(net, "inet" if ip.version == 4 else "inet6"):
        if ip not in r.network:
            continue
        if r.zone is not None and r.zone != zone:
            continue
        if best is None or r.network.prefixlen > best.network.prefixlen:
            best = r
    return best


def get_route(net: Network, addr: str) -> Route:
    """`route get`: the matching route, or ESRCH ("route has not been found")."""
    r = lookup(net, addr)
    if r is None:
        raise KtlsError(Errno.ESRCH, f"no route to {addr}")
    return r


def find_route(net: Network, dst: str, zone: str | None = None) -> Route | None:
    """The route with exactly this key (a radix exact-match lookup)."""
    key = (str(ipaddress.ip_network(dst)), zone)
    for r in all_routes(net):
        if r.key() == key:
            return r
    return None


# --- static routes --------------------------------------------------------------


def _resolve_gateway(net: Network, gateway: str) -> str:
    """ifa_ifwithroute(): the interface a gateway address is reached through."""
    ip, zone = parse_addr(gateway)
    zone = _zone_of(ip, zone)
    text = str(ip)
    for name in net.names():  # ifa_ifwithaddr(): one of our own addresses
        if any(a.addr == text for a in net.interfaces[name].addrs):
            return name
    for name in net.names():  # ifa_ifwithnet(): on one of our prefixes
        iface = net.interfaces[name]
        if iface.kind == LOOPBACK:
            continue
        for a in iface.addrs:
            if a.ip.version == ip.version and ip in a.network:
                if a.link_local and zone != name:
                    continue
                return name
    r = lookup(net, gateway)
    if r is None or r.is_default or r.flags & (RTF_REJECT | RTF_BLACKHOLE):
        # "dismiss a gateway that is reachable only through the default router"
        raise KtlsError(Errno.ENETUNREACH, f"gateway {gateway} is not on a connected network")
    return r.ifname


def _static(
    net: Network,
    dst: str,
    gateway: str | None,
    interface: str | None,
    reject: bool,
    blackhole: bool,
) -> Route:
    network = ipaddress.ip_network(dst)
    flags = RTF_UP | RTF_STATIC
    if network.prefixlen == network.max_prefixlen:
        flags |= RTF_HOST
    if reject:
        flags |= RTF_REJECT
    if blackhole:
        flags |= RTF_BLACKHOLE
    if interface is not None:
        net.get(interface)
        if gateway is None:
            return Route(str(network), interface, flags, link=interface)
    if gateway is None:
        raise KtlsError(Errno.EINVAL, "a route needs a gateway or an interface")
    gw_ip, gw_zone = parse_addr(gateway)
    if gw_ip.version != network.version:
        raise KtlsError(Errno.EAFNOSUPPORT, f"gateway {gateway} for {dst}")
    ifname = interface if interface is not None else _resolve_gateway(net, gateway)
    gw_text = str(gw_ip) + (f"%{gw_zone}" if gw_zone else "")
    return Route(str(network), ifname, flags | RTF_GATEWAY, gateway=gw_text)


def add_route(
    net: Network,
    dst: str,
    *,
    gateway: str | None = None,
    interface: str | None = None,
    reject: bool = False,
    blackhole: bool = False,
) -> Route:
    """RTM_ADD: `route add DST GATEWAY` or `route add DST -interface IF`.

    EEXIST a route with that key exists (static or kernel); ENETUNREACH the
    gateway is not reachable; ENXIO no such interface.
    """
    r = _static(net, dst, gateway, interface, reject, blackhole)
    if find_route(net, r.dst) is not None:
        raise KtlsError(Errno.EEXIST, "route already in table")
    net.routes.append(r)
    return r


def delete_route(net: Network, dst: str) -> Route:
    """RTM_DELETE: ESRCH not in the table; EADDRINUSE a kernel (pinned) route."""
    r = find_route(net, dst)
    if r is None:
        raise KtlsError(Errno.ESRCH, "not in table")
    if r.origin != "static":
        raise KtlsError(Errno.EADDRINUSE, f"{r.dst_text()} belongs to {r.link}")
    net.routes.remove(r)
    return r


def change_route(
    net: Network,
    dst: str,
    *,
    gateway: str | None = None,
    interface: str | None = None,
    reject: bool = False,
    blackhole: bool = False,
) -> Route:
    """RTM_CHANGE: a new gateway or interface for an existing static route.

    ESRCH not in the table; EADDRINUSE a kernel route (they follow the
    addresses; the simulator does not let them be changed).
    """
    old = find_route(net, dst)
    if old is None:
        raise KtlsError(Errno.ESRCH, "not in table")
    if old.origin != "static":
        raise KtlsError(Errno.EADDRINUSE, f"{old.dst_text()} belongs to {old.link}")
    new = _static(net, dst, gateway, interface, reject, blackhole)
    net.routes[net.routes.index(old)] = new
    return new


# --- the transmit path's questions ------------------------------------------------


def source_interface(net: Network, laddr: str) -> str:
    """in_pcbbind(): the interface that has `laddr`, or EADDRNOTAVAIL."""
    try:
        ip, zone = parse_addr(laddr)
    except ValueError:
        raise KtlsError(Errno.EADDRNOTAVAIL, f"{laddr} is not an address") from None
    text = str(ip)
    for name in net.names():
        for a in net.interfaces[name].addrs:
            if a.addr == text and (not a.link_local or zone in (None, name)):
                return name
    raise KtlsError(Errno.EADDRNOTAVAIL, f"{laddr} is not an address of this host")


_TAG_PROTOS = ("failover", "lacp", "loadbalance")  # lookup_snd_tag_port()


def egress(net: Network, faddr: str, flow_hash: int = 0) -> Egress:
    """Which interface, and which physical port, a packet to `faddr` leaves by now.

    `flow_hash` is the connection's flow id as lagg uses it (after
    flowid_shift): lacp sends on ports_up[hash % len], loadbalance on
    ports[hash % len] or the next active one, roundrobin treats it as the
    packet's sequence number. See the module docstring for the errors.
    """
    try:
        ip, _zone = parse_addr(faddr)
    except ValueError:
        raise KtlsError(Errno.EHOSTUNREACH, f"{faddr} is not an address") from None
    r = lookup(net, faddr)
    if r is None:
        raise KtlsError(Errno.EHOSTUNREACH, f"no route to {ip}")
    if r.flags & RTF_REJECT:
        raise KtlsError(Errno.EHOSTUNREACH, f"reject route {r.dst_text()}")
    if r.flags & RTF_BLACKHOLE:
        raise KtlsError(Errno.EHOSTUNREACH, f"blackhole route {r.dst_text()}")
    path: list[str] = []
    tags: list[int] = []
    snd_tag = True
    name = r.ifname
    while True:
        if name in path:
            raise KtlsError(Errno.ENETUNREACH, f"{name}: interface loop")
        path.append(name)
        iface = net.get(name)
        flags = net.iff(name)
        if not (flags & IFF_UP and flags & IFF_RUNNING):
            raise KtlsError(Errno.ENETUNREACH, f"ENETDOWN: {name} is down")
        if iface.kind == VLAN:
            assert iface.vlan is not None and iface.vlan.parent is not None
            if iface.vlan.tag is not None:
                tags.append(iface.vlan.tag)
            name = iface.vlan.parent
            continue
        if iface.kind == LAGG:
            assert iface.lagg is not None
            if iface.lagg.proto not in _TAG_PROTOS:
                snd_tag = False
            port = net.lagg_select(name, flow_hash)
            if port is None:
                raise KtlsError(Errno.ENETUNREACH, f"ENETDOWN: {name} has no active port")
            name = port
            continue
        if iface.kind == ETHER and not net.link_up(name):
            raise KtlsError(Errno.ENETUNREACH, f"ENETDOWN: {name} has no carrier")
        if iface.kind == LOOPBACK:
            snd_tag = False
        break
    return Egress(
        ifname=r.ifname,
        port=name,
        path=tuple(path),
        gateway=r.gateway,
        route=r.dst_text(),
        mtu=net.get(r.ifname).mtu,
        vlan_tags=tuple(reversed(tags)),
        capenable=net.options(r.ifname),
        port_capenable=net.options(name),
        src_mac=net.current_mac(r.ifname),
        snd_tag=snd_tag,
    )
