"""TCP connections of the simulated kernel (the tcpcb/inpcb side of a socket).

A connection is a row of the `conns` table, found by its 4-tuple through the
UNIQUE index, so lookups cost the same with 10 or 100,000 connections. It keeps
the TCP sequence numbers the pcap writer needs (iss, snd_nxt, irs), a flow hash
(flowid, which a lacp lagg hashes on) and `owner` for connections a live process
(`ktls serve`) registered and removes again.

Naming follows tcpdrop(8) and switch_tls: four words `laddr lport faddr fport`,
or two words `laddr:lport faddr:fport` / `laddr.lport faddr.fport`, each split at
whichever of its last `:` or last `.` comes later (so `::1.443` is `::1`, 443).
"""

from __future__ import annotations

import ipaddress
import zlib
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from ktls_core.errors import Errno, KtlsError

if TYPE_CHECKING:
    from ktls_core.kernel import Tx
    from ktls_core.net.ifnet import Network
    from ktls_core.net.route import Egress

# tcp_state names as netstat(1) prints them (tcp_fsm.h order).
TCP_STATES = (
    "CLOSED", "LISTEN", "SYN_SENT", "SYN_RCVD", "ESTABLISHED", "CLOSE_WAIT",
    "FIN_WAIT_1", "CLOSING", "LAST_ACK", "FIN_WAIT_2", "TIME_WAIT",
)  # fmt: skip
ESTABLISHED = "ESTABLISHED"
LISTEN = "LISTEN"

# net.inet.ip.portrange.first/last: where `connect` picks a local port for port 0.
EPHEMERAL_FIRST = 49152
EPHEMERAL_LAST = 65535

# getaddrinfo(3) texts (gai_strerror) that tcpdrop and switch_tls print.
EAI_NONAME = "hostname nor servname provided, or not known"
EAI_SERVICE = "servname not supported for ai_socktype"

_COLUMNS = (
    "id, family, laddr, lport, faddr, fport, state, iss, snd_nxt, irs, flowid, owner,"
    " tx_bytes, rxt_bytes, nic_xmit_dis"
)


class ConnSyntaxError(ValueError):
    """The words do not name a connection (wrong count, no port separator): a usage error."""


class ResolveError(ValueError):
    """getaddrinfo() failed for one endpoint; `host`, `port` and `reason` as tcpdrop prints them."""

    def __init__(self, host: str, port: str, reason: str) -> None:
        super().__init__(f"getaddrinfo: {host} port {port}: {reason}")
        self.host = host
        self.port = port
        self.reason = reason


class FamilyError(ValueError):
    """The local and foreign addresses are of different families."""

    def __init__(self, words: tuple[str, str, str, str]) -> None:
        super().__init__(f"{' '.join(words)}: different address families")
        self.words = words


class Endpoints(NamedTuple):
    """A 4-tuple with canonical (compressed, numeric) addresses."""

    family: int  # 4 or 6
    laddr: str
    lport: int
    faddr: str
    fport: int

    def __str__(self) -> str:
        return f"{self.laddr} {self.lport} {self.faddr} {self.fport}"

    @property
    def words(self) -> tuple[str, str, str, str]:
        return (self.laddr, str(self.lport), self.faddr, str(self.fport))


class Conn(NamedTuple):
    id: int
    family: int
    laddr: str
    lport: int
    faddr: str
    fport: int
    state: str
    iss: int  # initial send sequence number
    snd_nxt: int  # next TCP sequence number to send (u32)
    irs: int  # the peer's initial sequence number; our ACKs carry irs + 1
    flowid: int  # the flow's hash (m_pkthdr.flowid), for lagg port choice
    owner: str | None
    tx_bytes: int  # t_sndbytes: TCP payload bytes sent (reserved) so far
    rxt_bytes: int = 0  # t_snd_rxt_bytes: bytes retransmitted (ifnet drops)
    nic_xmit_dis: bool = False  # t_nic_ktls_xmit_dis: ifnet TLS disabled for rexmits

    @property
    def endpoints(self) -> Endpoints:
        return Endpoints(self.family, self.laddr, self.lport, self.faddr, self.fport)

    @property
    def name(self) -> str:
        """`laddr lport faddr fport`, as tcpdrop and switch_tls print a connection."""
        return str(self.endpoints)


# -- naming ---------------------------------------------------------------------------


def split_endpoint(word: str) -> tuple[str, str]:
    """`addr:port` or `addr.port`, split at the later of the last `:` and last `.`."""
    cut = max(word.rfind(":"), word.rfind("."))
    if cut <= 0 or cut == len(word) - 1:
        raise ConnSyntaxError(f"{word!r} is not address:port or address.port")
    return word[:cut], word[cut + 1 :]


# getservbyname(name, "tcp"): a TCP service name's port, or None. The core reads no
# files: the CLI passes the host's services database (ktls_cli.connections).
ServiceLookup = Callable[[str], int | None]


def resolve(
    host: str, port: str, services: ServiceLookup | None = None
) -> tuple[int, str, int]:
    """getaddrinfo() of a numeric host: (family, canonical address, port) or ResolveError.

    The port is a number or, with `services`, a TCP service name (`https`), as
    getaddrinfo(3) reads /etc/services; host names are not looked up.
    """
    text = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        raise ResolveError(host, port, EAI_NONAME) from None
    if not port:
        raise ResolveError(host, port, EAI_NONAME)
    if port.isdigit():
        number: int | None = int(port) if port.isascii() and int(port) <= 65535 else None
    else:
        number = services(port) if services is not None else None
    if number is None:
        raise ResolveError(host, port, EAI_SERVICE)
    return addr.version, addr.compressed, number


def parse_endpoints(words: Sequence[str], services: ServiceLookup | None = None) -> Endpoints:
    """Four words, or two `addr:port`/`addr.port` words, as tcpdrop(8) reads them."""
    if len(words) == 4:
        lh, lp, fh, fp = words
    elif len(words) == 2:
        lh, lp = split_endpoint(words[0])
        fh, fp = split_endpoint(words[1])
    else:
        raise ConnSyntaxError("a connection is 2 or 4 words")
    lfam, laddr, lport = resolve(lh, lp, services)
    ffam, faddr, fport = resolve(fh, fp, services)
    if lfam != ffam:
        raise FamilyError((lh, lp, fh, fp))
    return Endpoints(lfam, laddr, lport, faddr, fport)


def flow_hash(ep: Endpoints) -> int:
    """A stable 32-bit hash of the 4-tuple, standing in for the NIC's RSS hash."""
    return zlib.crc32(f"{ep.laddr}|{ep.lport}|{ep.faddr}|{ep.fport}".encode())


# -- the table ------------------------------------------------------------------------


def _row(row: Sequence[Any]) -> Conn:
    (cid, fam, la, lp, fa, fp, st, iss, nxt, irs, flow, owner, txb, rxt, dis) = row
    return Conn(
        int(cid),
        int(fam),
        str(la),
        int(lp),
        str(fa),
        int(fp),
        str(st),
        int(iss),
        int(nxt),
        int(irs),
        int(flow),
        None if owner is None else str(owner),
        int(txb),
        int(rxt),
        bool(dis),
    )


def lookup(tx: Tx, ep: Endpoints) -> Conn | None:
    row = tx.conn.execute(
        f"SELECT {_COLUMNS} FROM conns WHERE laddr = ? AND lport = ? AND faddr = ? AND fport = ?",
        (ep.laddr, ep.lport, ep.faddr, ep.fport),
    ).fetchone()
    return None if row is None else _row(row)


def get(tx: Tx, conn_id: int) -> Conn | None:
    row = tx.conn.execute(f"SELECT {_COLUMNS} FROM conns WHERE id = ?", (conn_id,)).fetchone()
    return None if row is None else _row(row)


def id_range(tx: Tx, first: int, last: int) -> list[Conn]:
    """The connections with ids first..last in id order (one query for connect --count)."""
    rows = tx.conn.execute(
        f"SELECT {_COLUMNS} FROM conns WHERE id BETWEEN ? AND ? ORDER BY id", (first, last)
    )
    return [_row(r) for r in rows]


def find(tx: Tx, ep: Endpoints) -> Conn:
    """The connection or ESRCH, as the kernel's pcb lookup answers tcpdrop."""
    conn = lookup(tx, ep)
    if conn is None:
        raise KtlsError(Errno.ESRCH, f"no connection {ep}")
    return conn


def iter_conns(tx: Tx, *, include_listen: bool = True) -> Iterator[Conn]:
    """Every connection in creation order (the pcb list order netstat walks)."""
    sql = f"SELECT {_COLUMNS} FROM conns"
    if not include_listen:
        sql += " WHERE state != 'LISTEN'"
    for row in tx.conn.execute(sql + " ORDER BY id"):
        yield _row(row)


def count(tx: Tx) -> int:
    return int(tx.conn.execute("SELECT count(*) FROM conns").fetchone()[0])


def route_egress(
    tx: Tx, family: int, faddr: str, flowid: int, net: Network | None = None
) -> Egress:
    """ip_output()'s question for this flow: the route's interface and physical port now."""
    from ktls_core.net import route
    from ktls_core.net import store as net_store

    return route.egress(net if net is not None else net_store.load(tx), faddr, flowid)


def egress(tx: Tx, conn: Conn) -> Egress:
    """The connection's egress now (KtlsError EHOSTUNREACH/ENETUNREACH as ip_output())."""
    return route_egress(tx, conn.family, conn.faddr, conn.flowid)


def _check_local(tx: Tx, net: Network, ep: Endpoints) -> None:
    """in_pcbbind(): the local address must be configured on an interface."""
    from ktls_core.net import route

    route.source_interface(net, ep.laddr)


def _check_route(tx: Tx, net: Network, ep: Endpoints) -> None:
    """in_pcbconnect(): the SYN must be able to leave; no route is ENETUNREACH
    (in_pcbladdr()), a path that is down fails as ip_output() does."""
    try:
        route_egress(tx, ep.family, ep.faddr, flow_hash(ep), net)
    except KtlsError as exc:
        if exc.errno == Errno.EHOSTUNREACH:
            raise KtlsError(Errno.ENETUNREACH, exc.detail) from None
        raise


def connect(tx: Tx, ep: Endpoints, *, owner: str | None = None) -> Conn:
    """connect(2): an ESTABLISHED connection on `ep` (lport 0 picks an ephemeral port)."""
    from ktls_core.net import store as net_store

    if ep.fport == 0:
        raise KtlsError(Errno.EADDRNOTAVAIL, "foreign port 0")
    net = net_store.load(tx)
    _check_local(tx, net, ep)
    _check_route(tx, net, ep)
    if ep.lport == 0:
        ep = _ephemeral(tx, ep)
    elif lookup(tx, ep) is not None:
        raise KtlsError(Errno.EADDRINUSE, f"{ep} exists")
    rand = tx.random_bytes(8)
    iss = int.from_bytes(rand[:4], "big")
    irs = int.from_bytes(rand[4:], "big")
    cur = tx.conn.execute(
        "INSERT INTO conns (family, laddr, lport, faddr, fport, state, iss, snd_nxt, irs,"
        " flowid, owner) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (ep.family, ep.laddr, ep.lport, ep.faddr, ep.fport, ESTABLISHED, iss, iss, irs,
         flow_hash(ep), owner),
    )  # fmt: skip
    conn = get(tx, int(cur.lastrowid or 0))
    assert conn is not None
    return conn


def _ephemeral(tx: Tx, ep: Endpoints) -> Endpoints:
    """in_pcb_lport(): the first free port of the ephemeral range for this 4-tuple."""
    used = {
        int(r[0])
        for r in tx.conn.execute(
            "SELECT lport FROM conns WHERE laddr = ? AND faddr = ? AND fport = ?",
            (ep.laddr, ep.faddr, ep.fport),
        )
    }
    for port in range(EPHEMERAL_FIRST, EPHEMERAL_LAST + 1):
        if port not in used:
            return Endpoints(ep.family, ep.laddr, port, ep.faddr, ep.fport)
    raise KtlsError(Errno.EADDRNOTAVAIL, "no free local port")


def bulk_endpoints(ep: Endpoints, count: int) -> Iterator[Endpoints]:
    """The 4-tuples `connect --count N` creates: foreign ports step up from ep.fport;
    past 65535 they wrap to 1024 on the next foreign address (so 100,000 clients fit)."""
    addr = ipaddress.ip_address(ep.faddr)
    port = ep.fport
    for _ in range(count):
        yield Endpoints(ep.family, ep.laddr, ep.lport, addr.compressed, port)
        port += 1
        if port > 65535:
            port = 1024
            addr = addr + 1


def connect_many(tx: Tx, ep: Endpoints, count: int, *, owner: str | None = None) -> list[int]:
    """`connect --count N`: N connections in one transaction (executemany), all or none."""
    from ktls_core.net import store as net_store

    if ep.fport == 0 or ep.lport == 0:
        raise KtlsError(Errno.EADDRNOTAVAIL, "--count needs explicit ports")
    net = net_store.load(tx)
    _check_local(tx, net, ep)
    eps = list(bulk_endpoints(ep, count))
    for faddr in sorted({e.faddr for e in eps}):
        _check_route(tx, net, Endpoints(ep.family, ep.laddr, ep.lport, faddr, ep.fport))
    seed = tx.random_bytes(32)
    rows = []
    for i, e in enumerate(eps):
        r = zlib.crc32(seed + i.to_bytes(4, "big"))
        iss, irs = r, zlib.crc32(seed[::-1] + i.to_bytes(4, "big"))
        rows.append((e.family, e.laddr, e.lport, e.faddr, e.fport, ESTABLISHED, iss, iss, irs,
                     flow_hash(e), owner))  # fmt: skip
    first = int(tx.conn.execute("SELECT coalesce(max(id), 0) FROM conns").fetchone()[0])
    try:
        tx.conn.executemany(
            "INSERT INTO conns (family, laddr, lport, faddr, fport, state, iss, snd_nxt, irs,"
            " flowid, owner) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
    except Exception as exc:  # sqlite3.IntegrityError: one 4-tuple already exists
        if "UNIQUE" in str(exc):
            raise KtlsError(Errno.EADDRINUSE, "a connection of the range exists") from None
        raise
    return [
        int(r[0])
        for r in tx.conn.execute("SELECT id FROM conns WHERE id > ? ORDER BY id", (first,))
    ]


def reserve_seq(tx: Tx, conn: Conn, nbytes: int) -> int:
    """Take `nbytes` of TCP sequence space (snd_nxt advances); returns the first sequence.

    Reserved in the same transaction as the TLS sequence numbers, so two senders on
    one connection never put different bytes under one TCP sequence number.
    """
    row = tx.conn.execute("SELECT snd_nxt FROM conns WHERE id = ?", (conn.id,)).fetchone()
    if row is None:
        raise KtlsError(Errno.ECONNABORTED, "connection dropped")
    first = int(row[0])
    tx.conn.execute(
        "UPDATE conns SET snd_nxt = ?, tx_bytes = tx_bytes + ? WHERE id = ?",
        ((first + nbytes) & 0xFFFFFFFF, nbytes, conn.id),
    )
    return first


def give_back_seq(tx: Tx, conn_id: int, end: int, unused: int) -> None:
    """Return the unused tail of a reservation ending at `end` if nobody reserved after it
    (a short file): the next capture then joins up. Never moves backwards otherwise."""
    if unused <= 0:
        return
    tx.conn.execute(
        "UPDATE conns SET snd_nxt = ?, tx_bytes = tx_bytes - ? WHERE id = ? AND snd_nxt = ?",
        ((end - unused) & 0xFFFFFFFF, unused, conn_id, end & 0xFFFFFFFF),
    )


def drop(tx: Tx, conn: Conn) -> None:
    """tcp_drop(): the connection goes, and with it its KTLS session (ktls_destroy())."""
    from ktls_core.tls import session

    session.free(tx, conn.id)
    tx.conn.execute("DELETE FROM conns WHERE id = ?", (conn.id,))


def drop_owned(tx: Tx, owner: str) -> int:
    """Drop every connection a live process registered (it is exiting); returns the count."""
    conns = [
        _row(r) for r in tx.conn.execute(f"SELECT {_COLUMNS} FROM conns WHERE owner = ?", (owner,))
    ]
    for conn in conns:
        drop(tx, conn)
    return len(conns)
