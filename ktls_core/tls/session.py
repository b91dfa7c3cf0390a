"""KTLS transmit sessions: TCP_TXTLS_ENABLE, TCP_TXTLS_MODE (get), create/free/clone.

A session is a row of the `sessions` table keyed by its connection's id. It keeps
what `struct ktls_session` and the socket buffer keep for transmit: the suite and
keys, the mode (software or ifnet) and send tag, the next record sequence number
(sb_tls_seqno), the TLS 1.2 GCM explicit-nonce counter, the TLS 1.0 chained CBC
IV, max_frame_len, and what was sent. Every gauge of reference §7 moves in the
same transaction as the row, so `active` always equals the number of rows.

`enable_tx()` is ktls_enable_tx() + ktls_create_session() + the backend choice
(TOE, then ifnet, then software), in FreeBSD's order (reference §2).
`enable_many()` makes the same calls for `connect --count` with one Enabler, which
reads the sysctls once and writes the rows and counters once.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from ktls_core.errors import Errno, KtlsError
from ktls_core.frozen import Frozen
from ktls_core.store import from_db, to_db
from ktls_core.tls.suites import (
    TLS_MINOR_VER_THREE,
    TLS_MINOR_VER_TWO,
    TLS_MINOR_VER_ZERO,
    CryptoAlg,
    Suite,
    gauge_name,
)

if TYPE_CHECKING:
    from ktls_core.kernel import Kernel, Tx
    from ktls_core.net.ifnet import Network
    from ktls_core.net.tcp import Conn, Endpoints
    from ktls_core.tls.backend import Registry
    from ktls_core.tls.enable import EnableContext, TlsEnable
    from ktls_core.tls.ifnet_tls import Egress, SendTag
    from ktls_core.tls.record import RecordProtector

# netinet/tcp.h: TCP_TXTLS_MODE values.
TCP_TLS_MODE_NONE = 0
TCP_TLS_MODE_SW = 1
TCP_TLS_MODE_IFNET = 2
TCP_TLS_MODE_TOE = 3
MODE_NAMES = {TCP_TLS_MODE_NONE: "none", TCP_TLS_MODE_SW: "sw", TCP_TLS_MODE_IFNET: "ifnet",
              TCP_TLS_MODE_TOE: "toe"}  # fmt: skip
# The gauge node of each mode: kern.ipc.tls.<node>.<cipher>.
MODE_NODES = {TCP_TLS_MODE_SW: "sw", TCP_TLS_MODE_IFNET: "ifnet", TCP_TLS_MODE_TOE: "toe"}

ACTIVE = "kern.ipc.tls.stats.active"
ENABLE_CALLS = "kern.ipc.tls.stats.enable_calls"
OFFLOAD_TOTAL = "kern.ipc.tls.stats.offload_total"
THREADS = "kern.ipc.tls.stats.threads"

_COLUMNS = (
    "conn_id, mode, vminor, cipher, auth, cipher_key, iv, auth_key, start_seq, next_seq,"
    " nonce_ctr, cbc_iv, max_frame_len, backend, tag_type, tag_ifname, tag_port,"
    " reset_pending, records, bytes, worker"
)


def mode_name(mode: int) -> str:
    return MODE_NAMES.get(mode, str(mode))


def mode_gauge(mode: int, cipher: int) -> str:
    """'kern.ipc.tls.sw.gcm' for a software AES-GCM session."""
    return f"kern.ipc.tls.{MODE_NODES[mode]}.{gauge_name(cipher)}"


_Bytes = bytes  # Session has a field named `bytes`


class Session(Frozen):
    """A KTLS transmit session (struct ktls_session + so_snd's sb_tls_seqno)."""

    _fields = (
        "conn_id", "mode", "vminor", "cipher", "auth", "cipher_key", "iv", "auth_key",
        "start_seq", "next_seq", "nonce_ctr", "cbc_iv", "max_frame_len", "backend",
        "tag_type", "tag_ifname", "tag_port", "reset_pending", "records", "bytes", "worker",
    )  # fmt: skip
    __slots__ = _fields
    _secret = frozenset({"cipher_key", "iv", "auth_key", "cbc_iv"})
    conn_id: int
    mode: int
    vminor: int
    cipher: int
    auth: int
    cipher_key: bytes
    iv: bytes
    auth_key: bytes
    start_seq: int
    next_seq: int  # the sequence number the next framed record gets
    nonce_ctr: int | None  # TLS 1.2 AES-GCM: explicit nonce of the next record
    cbc_iv: bytes | None  # TLS 1.0 AES-CBC: IV of the next record
    max_frame_len: int
    backend: str | None  # the software backend ("OCF") or None for ifnet
    tag_type: int | None
    tag_ifname: str | None
    tag_port: str | None
    reset_pending: bool
    records: int  # records sent
    bytes: int  # plaintext bytes sent in records
    worker: int  # the worker thread index this connection is pinned to

    def __init__(
        self,
        conn_id: int,
        mode: int,
        vminor: int,
        cipher: int,
        auth: int,
        cipher_key: _Bytes,
        iv: _Bytes,
        auth_key: _Bytes,
        start_seq: int,
        next_seq: int,
        nonce_ctr: int | None,
        cbc_iv: _Bytes | None,
        max_frame_len: int,
        backend: str | None,
        tag_type: int | None = None,
        tag_ifname: str | None = None,
        tag_port: str | None = None,
        reset_pending: bool = False,
        records: int = 0,
        bytes: int = 0,
        worker: int = 0,
    ) -> None:
        self._init(locals())

    @property
    def suite(self) -> Suite:
        return Suite(self.cipher, len(self.cipher_key), self.vminor, self.auth)

    @property
    def mode_name(self) -> str:
        return mode_name(self.mode)

    @property
    def gauge(self) -> str:
        return mode_gauge(self.mode, self.cipher)

    @property
    def chained_iv(self) -> bool:
        """TLS 1.0 CBC: each record's IV is the last block of the previous one."""
        return self.cipher == CryptoAlg.AES_CBC and self.vminor == TLS_MINOR_VER_ZERO


def _from_row(r: Sequence[Any]) -> Session:
    return Session(
        conn_id=int(r[0]), mode=int(r[1]), vminor=int(r[2]), cipher=int(r[3]), auth=int(r[4]),
        cipher_key=bytes(r[5]), iv=bytes(r[6]), auth_key=bytes(r[7]),
        start_seq=from_db(int(r[8])), next_seq=from_db(int(r[9])),
        nonce_ctr=None if r[10] is None else from_db(int(r[10])),
        cbc_iv=None if r[11] is None else bytes(r[11]), max_frame_len=int(r[12]),
        backend=None if r[13] is None else str(r[13]),
        tag_type=None if r[14] is None else int(r[14]),
        tag_ifname=None if r[15] is None else str(r[15]),
        tag_port=None if r[16] is None else str(r[16]),
        reset_pending=bool(r[17]), records=int(r[18]), bytes=int(r[19]), worker=int(r[20]),
    )  # fmt: skip


def get(tx: Tx, conn_id: int) -> Session | None:
    row = tx.conn.execute(
        f"SELECT {_COLUMNS} FROM sessions WHERE conn_id = ?", (conn_id,)
    ).fetchone()
    return None if row is None else _from_row(row)


def all_sessions(tx: Tx) -> dict[int, Session]:
    """Every session by connection id (netstat)."""
    return {int(r[0]): _from_row(r) for r in tx.conn.execute(f"SELECT {_COLUMNS} FROM sessions")}


def _db_row(s: Session) -> tuple[Any, ...]:
    return (
        s.conn_id, s.mode, s.vminor, s.cipher, s.auth, s.cipher_key, s.iv, s.auth_key,
        to_db(s.start_seq), to_db(s.next_seq),
        None if s.nonce_ctr is None else to_db(s.nonce_ctr), s.cbc_iv, s.max_frame_len,
        s.backend, s.tag_type, s.tag_ifname, s.tag_port, int(s.reset_pending), s.records,
        s.bytes, s.worker,
    )  # fmt: skip


_INSERT = f"INSERT INTO sessions ({_COLUMNS}) VALUES ({', '.join('?' * 21)})"


def _insert(tx: Tx, s: Session) -> None:
    tx.conn.execute(_INSERT, _db_row(s))


def store(tx: Tx, s: Session) -> None:
    """Write a session back whole (a mode switch or tag reset replaced it)."""
    tx.conn.execute("DELETE FROM sessions WHERE conn_id = ?", (s.conn_id,))
    _insert(tx, s)


# -- ktls_enable_tx() -------------------------------------------------------------


def _threads(tx: Tx) -> int:
    """The pool size; a modern kernel starts its threads with the first session."""
    n = tx.sysctl(THREADS)
    if n == 0 and tx.profile.feature("threads_lazy"):
        n = tx.profile.by_name[THREADS].default or (os.cpu_count() or 1)
        tx.set_sysctl(THREADS, n)
        tx.log(f"KTLS: Initialized {n} threads")
    return max(1, n)


def enable_context(tx: Tx, conn: Conn) -> Any:
    from ktls_core.net.tcp import LISTEN
    from ktls_core.tls.enable import EnableContext

    return EnableContext(
        enable=bool(tx.sysctl("kern.ipc.tls.enable")),
        listening=conn.state == LISTEN,
        is_tcp=True,
        has_session=get(tx, conn.id) is not None,
        cbc_enable=bool(tx.sysctl("kern.ipc.tls.cbc_enable")),
        mb_use_ext_pgs=bool(tx.sysctl("kern.ipc.mb_use_ext_pgs")),
        era=tx.era,
    )


class Enabler:
    """ktls_enable_tx() on one or many connections of one transaction.

    Every call takes FreeBSD's steps in order (reference §2) as one setsockopt()
    would, but what the calls read (sysctls, the network, the backends) is read
    once, counters move in a counters.Batch and the rows and counters are written
    by `flush()`: N calls leave what N enable_tx() calls leave, with a handful of
    SQL statements instead of ~20 per call (connect --count).
    """

    def __init__(self, tx: Tx) -> None:
        from ktls_core.counters import Batch
        from ktls_core.net.tcp import LISTEN
        from ktls_core.tls import enable

        self._steps = enable  # imported once: _create() runs per connection
        self._listen = LISTEN
        self.tx = tx
        self.counters = Batch(tx.conn)
        self.random = tx.random_stream()  # arc4rand() for keys and nonces
        self._rows: list[tuple[Any, ...]] = []
        self._enabled: set[int] = set()  # sessions this Enabler made (not yet stored)
        self._sysctls: dict[str, int] = {}
        self._contexts: dict[tuple[bool, bool], EnableContext] = {}
        self._pool: int | None = None
        self._net: Network | None = None
        self._modulus = 1
        self._egress: dict[tuple[int, str, int], Egress | None] = {}
        self._registry: Registry | None = None

    def _sysctl(self, name: str) -> int:
        value = self._sysctls.get(name)
        if value is None:
            value = self._sysctls[name] = self.tx.sysctl(name)
        return value

    def _context(self, listening: bool, has_session: bool) -> EnableContext:
        ctx = self._contexts.get((listening, has_session))
        if ctx is None:
            ctx = self._contexts[listening, has_session] = self._steps.EnableContext(
                enable=bool(self._sysctl("kern.ipc.tls.enable")),
                listening=listening,
                is_tcp=True,
                has_session=has_session,
                cbc_enable=bool(self._sysctl("kern.ipc.tls.cbc_enable")),
                mb_use_ext_pgs=bool(self._sysctl("kern.ipc.mb_use_ext_pgs")),
                era=self.tx.era,
            )
        return ctx

    def sessions_among(self, conns: Sequence[Conn]) -> set[int]:
        """The ids of `conns` that already have a session (one query)."""
        if not conns:
            return set()
        ids = {c.id for c in conns}
        rows = self.tx.conn.execute(
            "SELECT conn_id FROM sessions WHERE conn_id BETWEEN ? AND ?", (min(ids), max(ids))
        )
        return {int(r[0]) for r in rows} & ids

    def enable(self, conn: Conn, params: TlsEnable, *, has_session: bool | None = None) -> Session:
        """setsockopt(TCP_TXTLS_ENABLE): the session, or KtlsError (see enable_tx)."""
        return _from_row(self._create(conn, params, has_session))

    def _create(self, conn: Conn, params: TlsEnable, has_session: bool | None) -> tuple[Any, ...]:
        """The session's row (enable_many() builds no Session: 0.2 s per 100,000)."""
        steps = self._steps
        sink = self.counters
        if has_session is None:
            has_session = (
                self.tx.conn.execute(
                    "SELECT 1 FROM sessions WHERE conn_id = ?", (conn.id,)
                ).fetchone()
                is not None
            )
        ctx = self._context(conn.state == self._listen, has_session or conn.id in self._enabled)
        try:
            steps.check_enable(ctx, params)
        except steps.EnableError as exc:
            if exc.counted:
                sink.count(ENABLE_CALLS)
            raise
        sink.count(ENABLE_CALLS)

        # ktls_create_session(): the session exists from here (active + 1).
        suite = params.suite
        sink.gauge(ACTIVE, 1)
        if self._pool is None:
            self._pool = _threads(self.tx)  # may start the pool (current): once
        iv = params.effective_iv
        nonce_ctr = None
        cbc_iv = None
        if suite.cipher == CryptoAlg.AES_NIST_GCM_16 and suite.vminor == TLS_MINOR_VER_TWO:
            # arc4rand() fills iv[8..15]: the explicit nonce counter starts anywhere.
            nonce_ctr = to_db(int.from_bytes(self.random(8), "big"))
        if suite.cipher == CryptoAlg.AES_CBC and suite.vminor == TLS_MINOR_VER_ZERO:
            cbc_iv = iv

        # TOE, then ifnet, then software; errors of the first two are thrown away.
        mode, backend = TCP_TLS_MODE_IFNET, None
        try:
            tag = self._try_ifnet(conn, suite)
        except KtlsError:
            tag = None
            mode = TCP_TLS_MODE_SW
            try:
                backend = self._try_sw(params)
            except KtlsError:
                sink.gauge(ACTIVE, -1)  # ktls_free(): the session never got a mode
                raise
        start = to_db(params.start_seq)
        row = (
            conn.id, mode, suite.vminor, suite.cipher, suite.auth, params.cipher_key, iv,
            params.auth_key, start, start, nonce_ctr, cbc_iv,
            steps.max_frame_len(self._sysctl("kern.ipc.tls.maxlen")), backend,
            None if tag is None else tag.type, None if tag is None else tag.ifname,
            None if tag is None else tag.port, 0, 0, 0, conn.id % self._pool,
        )  # fmt: skip
        self._rows.append(row)
        self._enabled.add(conn.id)
        sink.count(OFFLOAD_TOTAL)
        return row

    def _try_sw(self, params: TlsEnable) -> str:
        """ktls_try_sw(): the first software backend (by priority) that takes the session."""
        from ktls_core import kld

        if self._registry is None:
            self._registry = kld.registry(self.tx)
        backend = self._registry.select(params, self.tx.era)
        self.counters.gauge(mode_gauge(TCP_TLS_MODE_SW, params.cipher_algorithm), 1)
        return backend.name

    def _try_ifnet(self, conn: Conn, suite: Suite) -> SendTag:
        """ktls_try_ifnet(): a NIC send tag on the route's interface (ifnet_tls, txmode).

        kern.ipc.tls.ifnet.permitted is 0 by default, so without it this fails
        with ENXIO before the route is looked at. The port's driver may refuse
        suites its NIC cannot do (ifnet_tls.driver_check()).
        """
        from ktls_core.tls import ifnet_tls, txmode

        permitted = bool(self._sysctl(ifnet_tls.IFNET_PERMITTED))
        if not permitted:
            raise KtlsError(Errno.ENXIO, "kern.ipc.tls.ifnet.permitted is 0")
        if self._net is None:
            self._net = txmode.load_net(self.tx)
            self._modulus = txmode.hash_modulus(self._net)
        # One route lookup per foreign address and lagg hash class (as switch_all()).
        key = (conn.family, conn.faddr, conn.flowid % self._modulus)
        if key not in self._egress:
            self._egress[key] = txmode.tls_egress(self._net, conn.family, conn.faddr, conn.flowid)
        egress = self._egress[key]
        return ifnet_tls.try_ifnet(
            self.counters, egress, gauge=gauge_name(suite.cipher), ipv6=conn.family == 6,
            force=False, permitted=permitted,
            driver=None if egress is None else egress.port_driver, suite=suite,
        )  # fmt: skip

    def flush(self) -> None:
        """Insert the new sessions and store the counters and the random state."""
        if self._rows:
            self.tx.conn.executemany(_INSERT, self._rows)
            self._rows.clear()
        self.counters.flush()
        self.random.save()


def enable_tx(tx: Tx, conn: Conn, params: TlsEnable) -> Session:
    """setsockopt(TCP_TXTLS_ENABLE): create the session or raise KtlsError.

    Counters move as FreeBSD moves them even when the call fails (enable_calls
    from step 3 on; active up and down again when no backend takes the session),
    so the caller commits the transaction before re-raising (see `syscall`).
    """
    enabler = Enabler(tx)
    try:
        session = enabler.enable(conn, params)
    except KtlsError:
        enabler.flush()
        raise
    enabler.flush()
    return session


def enable_many(
    tx: Tx, conns: Sequence[Conn], make_params: Callable[[Callable[[int], bytes]], TlsEnable]
) -> KtlsError | None:
    """TCP_TXTLS_ENABLE on each connection in turn, as one setsockopt() each would
    (connect --count): `make_params(arc4rand)` builds each struct tls_enable, failures
    are counted as FreeBSD counts them and the others go on. The first failure or None.
    """
    enabler = Enabler(tx)
    existing = enabler.sessions_among(conns)
    first: KtlsError | None = None
    for conn in conns:
        try:
            enabler._create(conn, make_params(enabler.random), conn.id in existing)
        except KtlsError as exc:
            first = first or exc
    enabler.flush()
    return first


# -- free, clone, get ---------------------------------------------------------------


def free(tx: Tx, conn_id: int) -> Session | None:
    """ktls_destroy(): active - 1 and the mode's gauge - 1; the row goes."""
    s = get(tx, conn_id)
    if s is None:
        return None
    tx.conn.execute("DELETE FROM sessions WHERE conn_id = ?", (conn_id,))
    tx.gauge(ACTIVE, -1)
    if s.mode in MODE_NODES:
        tx.gauge(s.gauge, -1)
    return s


def clone(tx: Tx, s: Session) -> Session:
    """ktls_clone_session(): same keys and sequence state, no mode yet (active + 1).

    The caller tries the new mode and then either `replace_with()` (the old one is
    freed) or frees the clone with `tx.gauge(ACTIVE, -1)`.
    """
    tx.gauge(ACTIVE, 1)
    return s.replace(mode=TCP_TLS_MODE_NONE, backend=None, tag_type=None, tag_ifname=None,
                     tag_port=None, reset_pending=False)  # fmt: skip


def replace_with(tx: Tx, old: Session, new: Session) -> Session:
    """The clone takes over: the old session is freed and the clone's mode gauge + 1.

    The clone continues the old session's sequence state as stored now: a
    concurrent sender's reservations committed meanwhile are kept.
    """
    current = get(tx, old.conn_id) or old
    merged = new.replace(
        next_seq=current.next_seq, nonce_ctr=current.nonce_ctr, cbc_iv=current.cbc_iv,
        records=current.records, bytes=current.bytes,
    )  # fmt: skip
    tx.gauge(ACTIVE, -1)
    if old.mode in MODE_NODES:
        tx.gauge(old.gauge, -1)
    if merged.mode in MODE_NODES:
        tx.gauge(merged.gauge, 1)
    store(tx, merged)
    return merged


def get_mode(tx: Tx, conn: Conn) -> int:
    """getsockopt(TCP_TXTLS_MODE): the session's mode, 0 without one; EINVAL if listening."""
    from ktls_core.net.tcp import LISTEN

    if conn.state == LISTEN:
        raise KtlsError(Errno.EINVAL, "socket is listening")
    s = get(tx, conn.id)
    return TCP_TLS_MODE_NONE if s is None else s.mode


def uses_backend(tx: Tx, backend: str) -> int:
    """How many sessions a software backend serves (kldunload refuses while > 0)."""
    row = tx.conn.execute("SELECT count(*) FROM sessions WHERE backend = ?", (backend,)).fetchone()
    return int(row[0])


def is_tls13(s: Session) -> bool:
    return s.vminor == TLS_MINOR_VER_THREE


def tls_enable(s: Session) -> TlsEnable:
    """The struct tls_enable this session was made from (keys for the record layer)."""
    from ktls_core.tls.enable import TlsEnable

    return TlsEnable(
        cipher_algorithm=s.cipher, cipher_key=s.cipher_key, iv=s.iv, auth_algorithm=s.auth,
        auth_key=s.auth_key, tls_vminor=s.vminor, rec_seq=s.start_seq,
    )  # fmt: skip


def protector(tx: Tx, s: Session, frame_len: int | None = None) -> RecordProtector:
    """The record protector that seals this session's records.

    Software mode asks the session's backend (ktls_ocf); ifnet mode gets the
    record layer itself, the NIC model (same bytes as software). Records are cut
    at max_frame_len, or at `frame_len` when a send's calls are all shorter.
    """
    from ktls_core import kld
    from ktls_core.tls.record import SessionKeys, make_protector

    params = tls_enable(s)
    mfl = min(frame_len or s.max_frame_len, s.max_frame_len)
    b = kld.backend(tx, s.backend) if s.backend else None
    if b is not None:
        return b.new_protector(params, mfl)
    return make_protector(SessionKeys.from_enable(params), mfl)


def txtls_enable(kernel: Kernel, ep: Endpoints, make_params: Callable[[Tx], TlsEnable]) -> Session:
    """setsockopt(TCP_TXTLS_ENABLE) as one kernel call.

    `make_params` builds struct tls_enable inside the transaction (so random keys
    come from the kernel's arc4rand()). A failure still commits what FreeBSD
    counts for it (enable_calls, active up and down), then raises.
    """
    from ktls_core.net import tcp

    failure: KtlsError | None = None
    with kernel.transaction() as tx:
        conn = tcp.find(tx, ep)
        params = make_params(tx)
        try:
            return enable_tx(tx, conn, params)
        except KtlsError as exc:
            failure = exc
    raise failure
