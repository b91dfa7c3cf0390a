"""TCP_TXTLS_MODE on the kernel state, and what `switch_tls` writes to.

- `set_tx_mode()`: setsockopt(TCP_TXTLS_MODE) / ktls_set_tx_mode() for one
  connection: ifnet_tls.set_tx_mode() decides and counts, this module looks the
  session up, tries the new mode and stores the clone.
- `switch_one()` / `switch_all()`: the net.inet.tcp.switch_to_sw_tls and
  switch_to_ifnet_tls sysctls (sysctl_switch_tls() in tcp_subr.c): an exact pcb
  lookup by 4-tuple (ESRCH when there is none), then ktls_set_tx_mode(). A
  connection without KTLS answers 0, so switch_tls prints "switched" for it.
- `tls_egress()`: the route's egress as ifnet TLS sees it.
- The transmit path's tasks: `output_eagain()` (reset_pending),
  `reset_send_tag()` (the ktls_reset_send_tag() task: a new tag, or the
  connection dropped) and `account_retransmit()` (tcp_account_for_send() and
  ktls_disable_ifnet() behind kern.ipc.tls.ifnet_max_rexmit_pct).

`switch_all()` is set-oriented, for `switch_tls -a` over 100,000 connections:
one SELECT of every non-listening connection with its session, the sessions
that really change mode grouped by what decides the outcome (suite, egress,
t_nic_ktls_xmit_dis), ktls_set_tx_mode()'s decision and counters taken once
per group (scaled by its size), and one UPDATE per group.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

from ktls_core.errors import Errno, KtlsError
from ktls_core.tls.session import TCP_TLS_MODE_IFNET, TCP_TLS_MODE_NONE, TCP_TLS_MODE_SW
from ktls_core.tls.suites import gauge_name

if TYPE_CHECKING:
    from collections.abc import Callable

    from ktls_core.kernel import Kernel, Tx
    from ktls_core.net.ifnet import Network
    from ktls_core.net.tcp import Conn, Endpoints
    from ktls_core.tls.ifnet_tls import (
        Egress,
        EgressView,
        IfnetDisabled,
        ModeChange,
        ResetOutcome,
        SendTag,
    )
    from ktls_core.tls.session import Session

__all__ = [
    "DEFAULT_STACK",
    "TCP_TLS_MODE_IFNET",
    "TCP_TLS_MODE_SW",
    "connection_names",
    "set_tx_mode",
    "switch_all",
    "switch_one",
    "tls_egress",
]

# tcp_def_funcblk.tfb_tcp_block_name: the only TCP stack of the simulated kernel.
DEFAULT_STACK = "freebsd"


# -- the egress ifnet TLS sees ------------------------------------------------------


def load_net(tx: Tx) -> Network:
    from ktls_core.net import store as net_store

    net: Network = net_store.load(tx)
    return net


def tls_egress(net: Network, family: int, faddr: str, flowid: int) -> Egress | None:
    """The route's interface and the port behind it, for ktls_alloc_snd_tag().

    No route (or a reject/blackhole route) is None: ktls_alloc_snd_tag() then
    says ENXIO. A route whose path cannot send (an interface down, a lagg with no
    active port) still names its interface, with no port: a tag cannot be had
    there (EOPNOTSUPP) and an old tag does not match it. The port's driver
    comes along for ifnet_tls.driver_check().
    """
    from ktls_core.net import route
    from ktls_core.tls.ifnet_tls import Egress

    try:
        e = route.egress(net, faddr, flowid)
    except KtlsError as exc:
        if exc.errno != Errno.ENETUNREACH:
            return None
        r = route.lookup(net, faddr)
        if r is None:
            return None
        return Egress(r.ifname, net.options(r.ifname), None, 0)
    return Egress(
        e.ifname, e.capenable, e.port, e.port_capenable, e.snd_tag, net.get(e.port).driver
    )


# -- one connection -------------------------------------------------------------------


def _nic_xmit_disabled(tx: Tx, conn_id: int) -> bool:
    row = tx.conn.execute("SELECT nic_xmit_dis FROM conns WHERE id = ?", (conn_id,)).fetchone()
    return bool(row and row[0])


class _SwTry:
    """ktls_try_sw() for a clone of session `s`; keeps the chosen backend's name."""

    def __init__(self, tx: Tx, s: Session) -> None:
        self.tx = tx
        self.session = s
        self.backend: str | None = None

    def __call__(self) -> None:
        from ktls_core import kld
        from ktls_core.tls.session import tls_enable

        self.backend = kld.select_backend(self.tx, tls_enable(self.session)).name


def set_tx_mode(tx: Tx, conn: Conn, mode: int, *, net: Network | None = None) -> ModeChange:
    """ktls_set_tx_mode() on `conn`; the clone replaces the session in its row.

    Raises KtlsError as FreeBSD's returns an errno (EINVAL, EALREADY, ENXIO, or
    the try's error after switch_failed += 1). Sequence numbers, the nonce
    counter and the CBC chain carry over: only mode, backend and tag change.
    """
    from ktls_core.net.tcp import LISTEN
    from ktls_core.tls import ifnet_tls
    from ktls_core.tls import session as sessions

    s = sessions.get(tx, conn.id)
    current = TCP_TLS_MODE_NONE if s is None else s.mode
    try_sw = _SwTry(tx, s) if s is not None else None

    def try_ifnet_tag() -> SendTag:
        egress = tls_egress(net or load_net(tx), conn.family, conn.faddr, conn.flowid)
        # ktls_try_ifnet(so, tls, true): permitted is ignored, capabilities are not.
        return ifnet_tls.alloc_snd_tag(
            egress,
            ipv6=conn.family == 6,
            force=True,
            permitted=True,
            driver=None if egress is None else egress.port_driver,
            suite=None if s is None else s.suite,
        )

    change = ifnet_tls.set_tx_mode(
        tx,
        mode,
        current=current,
        gauge=None if s is None else gauge_name(s.cipher),
        listening=conn.state == LISTEN,
        ealready=bool(tx.profile.feature("ifnet_switch_ealready")),
        nic_xmit_disabled=_nic_xmit_disabled(tx, conn.id),
        try_ifnet_tag=try_ifnet_tag,
        try_sw=try_sw,
    )
    if change.changed and s is not None:
        backend = try_sw.backend if try_sw is not None else None
        _store_mode(tx, [conn.id], mode, backend, change.tag)
    return change


def txtls_mode(kernel: Kernel, ep: Endpoints, mode: int) -> ModeChange:
    """setsockopt(TCP_TXTLS_MODE) as one kernel call.

    A refused switch still commits what FreeBSD counts for it (switch_failed,
    active up and down again), then raises the errno.
    """
    from ktls_core.net import tcp

    failure: KtlsError | None = None
    with kernel.transaction() as tx:
        conn = tcp.find(tx, ep)
        try:
            return set_tx_mode(tx, conn, mode)
        except KtlsError as exc:
            failure = exc
    raise failure


def _store_mode(
    tx: Tx, conn_ids: list[int], mode: int, backend: str | None, tag: SendTag | None
) -> None:
    """The clone takes the old session's place: one UPDATE for all of `conn_ids`."""
    tx.conn.execute(
        "UPDATE sessions SET mode = ?, backend = ?, tag_type = ?, tag_ifname = ?,"
        " tag_port = ?, reset_pending = 0"
        " WHERE conn_id IN (SELECT value FROM json_each(?))",
        (
            mode,
            backend,
            None if tag is None else tag.type,
            None if tag is None else tag.ifname,
            None if tag is None else tag.port,
            json.dumps(conn_ids),
        ),
    )


# -- net.inet.tcp.switch_to_{sw,ifnet}_tls --------------------------------------------


def switch_one(tx: Tx, ep: Endpoints, mode: int) -> int:
    """sysctl_switch_tls() for one 4-tuple: 0, or the errno switch_tls prints.

    The answers that need no session object (no such pcb, no KTLS, already in
    that mode) come from one indexed SELECT, so `switch_tls -s CONN` costs the
    same with 100,000 connections and loads nothing of the ifnet machinery.
    """
    from ktls_core.net import tcp

    row = tx.conn.execute(
        "SELECT c.state, s.mode FROM conns c LEFT JOIN sessions s ON s.conn_id = c.id"
        " WHERE c.laddr = ? AND c.lport = ? AND c.faddr = ? AND c.fport = ?",
        (ep.laddr, ep.lport, ep.faddr, ep.fport),
    ).fetchone()
    if row is None:
        return Errno.ESRCH
    state, current = row
    if state != tcp.LISTEN and mode in (TCP_TLS_MODE_SW, TCP_TLS_MODE_IFNET):
        ealready = mode == TCP_TLS_MODE_IFNET and tx.profile.feature("ifnet_switch_ealready")
        # ktls_set_tx_mode()'s "return (0)" cases (the EALREADY check comes first).
        if current is None or (current == mode and not ealready):
            return 0
    conn = tcp.lookup(tx, ep)
    assert conn is not None
    try:
        set_tx_mode(tx, conn, mode)
    except KtlsError as exc:
        return exc.errno
    return 0


_ALL_SQL = (
    "SELECT c.id, c.family, c.laddr, c.lport, c.faddr, c.fport, c.flowid, c.nic_xmit_dis,"
    " s.mode, s.cipher, s.vminor, s.auth, length(s.cipher_key)"
    " FROM conns c LEFT JOIN sessions s ON s.conn_id = c.id"
    " WHERE c.state != 'LISTEN' ORDER BY c.id"
)


def connection_names(tx: Tx, *, stack: str | None = None) -> list[str]:
    """`lhost lport fhost fport` of every non-listening connection on `stack` (pcb order)."""
    if stack is not None and stack != DEFAULT_STACK:
        return []
    rows = tx.conn.execute(
        "SELECT laddr, lport, faddr, fport FROM conns WHERE state != 'LISTEN' ORDER BY id"
    )
    return [f"{la} {lp} {fa} {fp}" for la, lp, fa, fp in rows]


class _Scaled:
    """A CounterSink that applies every update `n` times: one decision for a group."""

    def __init__(self, tx: Tx, n: int) -> None:
        self.tx = tx
        self.n = n

    def count(self, name: str, delta: int = 1) -> None:
        self.tx.count(name, delta * self.n)

    def gauge(self, name: str, delta: int) -> None:
        self.tx.gauge(name, delta * self.n)


def hash_modulus(net: Network) -> int:
    """A number every lagg's port choice divides: egress(faddr, h) == egress(faddr, h % it).

    lacp, loadbalance and roundrobin pick `ports[h % n]` with n the lagg's port
    count or its count of ports up (1..n), so lcm(1..n) over the largest lagg
    covers them all, and one route lookup serves every flow of a foreign address.
    """
    import math

    largest = max(
        (len(i.lagg.ports) for i in net.interfaces.values() if i.lagg is not None), default=1
    )
    return math.lcm(*range(1, largest + 1))


def switch_all(tx: Tx, mode: int, *, stack: str | None = None) -> list[tuple[str, int]]:
    """switch_tls -a / -S: every non-listening connection, in pcb order: (name, errno)."""
    if stack is not None and stack != DEFAULT_STACK:
        return []
    if mode not in (TCP_TLS_MODE_SW, TCP_TLS_MODE_IFNET):
        raise KtlsError(Errno.EINVAL, f"TLS mode {mode}")
    rows = tx.conn.execute(_ALL_SQL).fetchall()
    names = [f"{r[2]} {r[3]} {r[4]} {r[5]}" for r in rows]
    errnos = [0] * len(rows)
    ealready = bool(tx.profile.feature("ifnet_switch_ealready"))
    # Group the rows whose outcome is not a plain "no session / same mode" 0.
    groups: dict[tuple[Any, ...], list[int]] = {}
    net: Network | None = None
    modulus = 1
    egress_cache: dict[tuple[int, str, int], Egress | None] = {}
    for i, r in enumerate(rows):
        current = r[8]
        if current is None:
            continue  # no KTLS session: ktls_set_tx_mode() returns 0
        if current == mode and not (ealready and mode == TCP_TLS_MODE_IFNET):
            continue
        key: tuple[Any, ...] = (current, r[9], r[10], r[11], r[12], bool(r[7]))
        if mode == TCP_TLS_MODE_IFNET and current != mode:
            if net is None:
                net = load_net(tx)
                modulus = hash_modulus(net)
            ekey = (r[1], r[4], r[6] % modulus)
            if ekey not in egress_cache:
                egress_cache[ekey] = tls_egress(net, r[1], r[4], r[6])
            key += (r[1], egress_cache[ekey])
        groups.setdefault(key, []).append(i)
    for key, members in groups.items():
        errno = _switch_group(tx, mode, key, [rows[i][0] for i in members], ealready)
        if errno:
            for i in members:
                errnos[i] = errno
    return list(zip(names, errnos, strict=True))


def _switch_group(
    tx: Tx, mode: int, key: tuple[Any, ...], conn_ids: list[int], ealready: bool
) -> int:
    """ktls_set_tx_mode() once for sessions that all get the same answer; their errno."""
    from ktls_core.tls import ifnet_tls
    from ktls_core.tls import session as sessions

    current, cipher, _vminor, _auth, _key_len, nic_dis = key[:6]
    # Every session of the group has this suite and key size: one speaks for all.
    first = sessions.get(tx, conn_ids[0])
    assert first is not None
    try_sw = _SwTry(tx, first)
    egress: Egress | None = key[7] if len(key) > 6 else None
    family = key[6] if len(key) > 6 else 4

    def try_ifnet_tag() -> SendTag:
        return ifnet_tls.alloc_snd_tag(
            egress,
            ipv6=family == 6,
            force=True,
            permitted=True,
            driver=None if egress is None else egress.port_driver,
            suite=first.suite,
        )

    try:
        change = ifnet_tls.set_tx_mode(
            _Scaled(tx, len(conn_ids)),
            mode,
            current=current,
            gauge=gauge_name(cipher),
            ealready=ealready,
            nic_xmit_disabled=nic_dis,
            try_ifnet_tag=try_ifnet_tag,
            try_sw=try_sw,
        )
    except KtlsError as exc:
        return exc.errno
    if change.changed:
        _store_mode(tx, conn_ids, mode, try_sw.backend, change.tag)
    return 0


# -- the transmit path's tasks: ktls_output_eagain(), ktls_reset_send_tag(), ------------
# -- tcp_account_for_send() and ktls_disable_ifnet() ---------------------------------


def session_tag(s: Session) -> SendTag | None:
    """The session's send tag, or None (software, or a reset freed it)."""
    from ktls_core.tls.ifnet_tls import SendTag

    if s.tag_port is None or s.tag_ifname is None or s.tag_type is None:
        return None
    return SendTag(s.tag_type, s.tag_ifname, s.tag_port)


def output_eagain(tx: Tx, conn_id: int) -> bool:
    """ktls_output_eagain(): mark a reset pending; True if this call queued the task."""
    cur = tx.conn.execute(
        "UPDATE sessions SET reset_pending = 1 WHERE conn_id = ? AND reset_pending = 0",
        (conn_id,),
    )
    return cur.rowcount == 1


def reset_send_tag(tx: Tx, conn: Conn, *, net: Network | None = None) -> ResetOutcome:
    """The ktls_reset_send_tag() task, run before the command returns.

    A new tag on the connection's current egress port (kern.ipc.tls.ifnet.reset),
    or the connection is dropped with ECONNABORTED (reset_failed, reset_dropped)
    and its session freed with it. Each outcome leaves a line in the message
    buffer.
    """
    from ktls_core.net import tcp
    from ktls_core.tls import ifnet_tls
    from ktls_core.tls import session as sessions

    s = sessions.get(tx, conn.id)
    alive = s is not None and tcp.get(tx, conn.id) is not None
    egress = tls_egress(net or load_net(tx), conn.family, conn.faddr, conn.flowid)
    out = ifnet_tls.reset_send_tag(
        tx,
        conn=conn.name,
        old=None if s is None else session_tag(s),
        egress=egress,
        ipv6=conn.family == 6,
        dropped=not alive,
        driver=None if egress is None else egress.port_driver,
        suite=None if s is None else s.suite,
    )
    if out.tag is not None:
        tx.conn.execute(
            "UPDATE sessions SET tag_type = ?, tag_ifname = ?, tag_port = ?, reset_pending = 0"
            " WHERE conn_id = ?",
            (out.tag.type, out.tag.ifname, out.tag.port, conn.id),
        )
    elif alive:
        tcp.drop(tx, conn)  # tcp_drop(tp, ECONNABORTED)
    for event in out.events:
        dmesg = getattr(event, "dmesg", None)
        if dmesg is not None:
            tx.log(dmesg())
    return out


def max_rexmit_pct(tx: Tx) -> int | None:
    """kern.ipc.tls.ifnet_max_rexmit_pct, or None in a kernel without it (the seed)."""
    from ktls_core.tls.ifnet_tls import IFNET_MAX_REXMIT_PCT

    if IFNET_MAX_REXMIT_PCT not in tx.profile.by_name:
        return None
    return tx.sysctl(IFNET_MAX_REXMIT_PCT)


def account_retransmit(
    tx: Tx, conn: Conn, nbytes: int, unsent: int = 0
) -> IfnetDisabled | None:
    """tcp_account_for_send() for `nbytes` TCP resent on an ifnet session.

    t_sndbytes is conns.tx_bytes (the TCP bytes reserved for sending) less the
    `unsent` bytes of the caller's reservation tcp_output() has not sent yet, so
    the percentage does not depend on how much a send reserves at once;
    t_snd_rxt_bytes is conns.rxt_bytes. Above kern.ipc.tls.ifnet_max_rexmit_pct
    the ktls_disable_ifnet() task moves the session to software once per
    connection (t_nic_ktls_xmit_dis, never cleared): ifnet_disable_ok or
    ifnet_disable_failed.
    """
    from ktls_core.tls import ifnet_tls

    row = tx.conn.execute(
        "SELECT tx_bytes, rxt_bytes, nic_xmit_dis FROM conns WHERE id = ?", (conn.id,)
    ).fetchone()
    if row is None:
        return None
    acct = ifnet_tls.account_for_send(
        max(0, int(row[0]) - unsent),
        int(row[1]),
        nbytes,
        is_rxt=True,
        hw_tls=True,
        max_rexmit_pct=max_rexmit_pct(tx),
        disabled=bool(row[2]),
    )
    tx.conn.execute("UPDATE conns SET rxt_bytes = ? WHERE id = ?", (acct.rxt_bytes, conn.id))
    if not acct.disable:
        return None
    tx.conn.execute("UPDATE conns SET nic_xmit_dis = 1 WHERE id = ?", (conn.id,))
    _, event = ifnet_tls.disable_ifnet(
        tx,
        conn=conn.name,
        rexmit_pct=acct.rexmit_pct,
        switch=lambda: set_tx_mode(tx, conn, TCP_TLS_MODE_SW),
    )
    tx.log(event.dmesg())
    return event


# How stale the egress an ifnet send checks its tag against may get: a route change
# or failover by another process is seen within this time (as output.PROBE_SECONDS).
REFRESH_SECONDS = 0.05


class IfnetOutput:
    """ip_output_send() for the records of one send on an ifnet session.

    The check itself reads no state: the session's tag (as the send last saw
    it) against the egress (computed when the send starts, then again when it
    is older than REFRESH_SECONDS, `refresh()`). Only a mismatch opens a
    transaction: ktls_output_eagain(), the ktls_reset_send_tag() task, and, when
    a tag was had, tcp_account_for_send() for the record TCP resends.

    Model: one ip_output_send() call carries the first record the stale tag
    meets; it is dropped (ENOBUFS), the reset task runs before TCP's
    retransmission timer fires, and TCP resends that record through the new
    tag; the records after it go out on the new tag directly.
    """

    def __init__(self, kernel: Kernel, conn: Conn, emit: Callable[[object], None]) -> None:
        self.kernel = kernel
        self.conn = conn
        self.emit = emit
        self.egress: EgressView | None = None
        self.refreshed = 0.0  # time.monotonic() of the last look at the egress
        self.port: str | None = None  # where the last record went (its tag's port)

    def refresh(self, tx: Tx) -> None:
        """The egress now (a route change or a lagg failover may have moved it)."""
        self.egress = tls_egress(load_net(tx), self.conn.family, self.conn.faddr, self.conn.flowid)
        self.refreshed = time.monotonic()

    def output(self, s: Session, seq: int, wire_len: int, unsent: int = 0) -> Session:
        """Send the record `seq` of `wire_len` bytes through session `s`; `unsent`
        bytes of the send's reservation, after this record, are not sent yet.

        Returns the session the rest of the send uses (a new tag, or software
        after ktls_disable_ifnet()); raises KtlsError ECONNABORTED when the reset
        could not allocate a tag and the connection was dropped.
        """
        from ktls_core.net import tcp
        from ktls_core.tls import ifnet_tls
        from ktls_core.tls import session as sessions

        if self.egress is None or time.monotonic() - self.refreshed > REFRESH_SECONDS:
            with self.kernel.snapshot() as tx:
                self.refresh(tx)
        old = session_tag(s)
        verdict = ifnet_tls.output_check(old, self.egress, reset_pending=s.reset_pending)
        if verdict.sent:
            self.port = None if old is None else old.port
            return s
        name = self.conn.name
        self.emit(ifnet_tls.PacketDropped(name, seq, wire_len, verdict.reason))
        events: list[object] = []
        with self.kernel.transaction() as tx:
            conn = tcp.get(tx, self.conn.id)
            if conn is None or sessions.get(tx, conn.id) is None:
                raise KtlsError(Errno.ECONNABORTED, "the connection was dropped")
            if output_eagain(tx, conn.id):
                events.append(ifnet_tls.TagResetScheduled(name, old))
            self.refresh(tx)
            out = reset_send_tag(tx, conn)
            events.extend(out.events)
            new = None
            if out.tag is not None:
                # TCP resends the record through the new tag (tcp_account_for_send()).
                events.append(ifnet_tls.Retransmitted(name, seq, wire_len, out.tag))
                disabled = account_retransmit(tx, conn, wire_len, unsent)
                if disabled is not None:
                    events.append(disabled)
                new = sessions.get(tx, conn.id)
        for event in events:
            self.emit(event)
        if out.tag is None or new is None:
            reason = out.error.strerror if out.error is not None else "no send tag"
            raise KtlsError(Errno.ECONNABORTED, f"send tag reset failed: {reason}")
        self.port = out.tag.port
        return new
