"""TCP_TXTLS_ENABLE (ktls_enable_tx()) in FreeBSD's order, and the counters of reference §7."""

from __future__ import annotations

from pathlib import Path

import pytest
from ktls_sw import CONN, boot, connect, counters, enable, params, sw_ready

from ktls_core import kld
from ktls_core.errors import Errno, KtlsError
from ktls_core.net import tcp
from ktls_core.tls import session

STATS = "kern.ipc.tls.stats."


def _enable_errno(kernel, p) -> int:  # type: ignore[no-untyped-def]
    with pytest.raises(KtlsError) as info:
        enable(kernel, p)
    return int(info.value.errno)


def test_seed_gates_in_order_and_what_is_counted(tmp_path: Path) -> None:
    kernel = boot(tmp_path, "seed")
    connect(kernel)
    p = params()
    # 1: kern.ipc.tls.enable=0 -> ENOTSUP, before enable_calls is counted.
    assert _enable_errno(kernel, p) == Errno.EOPNOTSUPP
    assert counters(kernel)[STATS + "enable_calls"] == 0
    with kernel.transaction() as tx:
        tx.set_sysctl("kern.ipc.tls.enable", 1)
    # 7: kern.ipc.mb_use_ext_pgs=0 -> ENXIO, counted.
    assert _enable_errno(kernel, p) == Errno.ENXIO
    assert counters(kernel)[STATS + "enable_calls"] == 1
    with kernel.transaction() as tx:
        tx.set_sysctl("kern.ipc.mb_use_ext_pgs", 1)
    # 9: no backend registered -> EOPNOTSUPP; the session existed for a moment.
    assert _enable_errno(kernel, p) == Errno.EOPNOTSUPP
    c = counters(kernel)
    assert (c[STATS + "enable_calls"], c[STATS + "active"], c[STATS + "offload_total"]) == (2, 0, 0)
    with kernel.transaction() as tx:
        kld.kldload(tx, "ktls_ocf")
    s = enable(kernel, p)
    assert (s.mode, s.backend, s.next_seq, s.start_seq) == (session.TCP_TLS_MODE_SW, "OCF", 0, 0)
    c = counters(kernel)
    assert c[STATS + "enable_calls"] == 3
    assert c[STATS + "active"] == 1
    assert c[STATS + "offload_total"] == 1
    assert c["kern.ipc.tls.sw.gcm"] == 1
    # 5: a second enable on the connection: EALREADY (no rekeying), counted.
    assert _enable_errno(kernel, params()) == Errno.EALREADY
    c = counters(kernel)
    assert (c[STATS + "enable_calls"], c[STATS + "active"], c[STATS + "offload_total"]) == (4, 1, 1)


def test_seed_ocf_refuses_cbc_and_bad_key_sizes_as_eopnotsupp(tmp_path: Path) -> None:
    kernel = boot(tmp_path, "seed")
    sw_ready(kernel)
    connect(kernel)
    # 2019: every backend refusal becomes EOPNOTSUPP, and active goes up and down again.
    assert _enable_errno(kernel, params("1.2", "aes-cbc", 16, 0, "hmac-sha1")) == Errno.EOPNOTSUPP
    assert _enable_errno(kernel, params("1.2", "aes-gcm", 24, 4)) == Errno.EOPNOTSUPP
    # ktls_create_session(): EINVAL before any backend (GCM 1.2 needs a 4-byte salt).
    assert _enable_errno(kernel, params("1.2", "aes-gcm", 16, 12)) == Errno.EINVAL
    c = counters(kernel)
    assert (c[STATS + "enable_calls"], c[STATS + "active"], c["kern.ipc.tls.sw.cbc"]) == (3, 0, 0)


def test_seed_refuses_rec_seq_before_counting(tmp_path: Path) -> None:
    kernel = boot(tmp_path, "seed")
    sw_ready(kernel)
    connect(kernel)
    assert _enable_errno(kernel, params(rec_seq=5)) == Errno.EINVAL
    assert counters(kernel)[STATS + "enable_calls"] == 0


@pytest.mark.parametrize(
    ("args", "gauge"),
    [
        (("1.2", "aes-gcm", 32, 4, None), "gcm"),
        (("1.3", "chacha20-poly1305", 32, 12, None), "chacha20"),
        (("1.0", "aes-cbc", 16, 16, "hmac-sha1"), "cbc"),
    ],
)
def test_current_gauges_per_cipher_and_rec_seq(tmp_path: Path, args: tuple, gauge: str) -> None:  # type: ignore[type-arg]
    kernel = boot(tmp_path, "current")
    connect(kernel)
    with kernel.transaction() as tx:
        tx.set_sysctl("kern.ipc.tls.enable", 1)
    s = enable(kernel, params(*args, rec_seq=1000))
    assert (s.start_seq, s.next_seq) == (1000, 1000)
    c = counters(kernel)
    assert c[f"kern.ipc.tls.sw.{gauge}"] == 1
    # Modern kernels start their threads with the first session.
    assert c[STATS + "active"] == 1
    with kernel.snapshot() as tx:
        assert tx.sysctl(STATS + "threads") >= 1


def test_current_returns_the_backend_error(tmp_path: Path) -> None:
    kernel = boot(tmp_path, "current")
    connect(kernel)
    with kernel.transaction() as tx:
        tx.set_sysctl("kern.ipc.tls.enable", 1)
    # ktls_ocf_try(): a 24-byte AES key is EINVAL in the current profile.
    assert _enable_errno(kernel, params("1.2", "aes-gcm", 24, 4)) == Errno.EINVAL
    # CBC with kern.ipc.tls.cbc_enable=0: ENOTSUP (step 6, counted).
    with kernel.transaction() as tx:
        tx.set_sysctl("kern.ipc.tls.cbc_enable", 0)
    assert _enable_errno(kernel, params("1.1", "aes-cbc", 16, 0, "hmac-sha1")) == Errno.EOPNOTSUPP
    c = counters(kernel)
    assert (c[STATS + "enable_calls"], c[STATS + "active"]) == (2, 0)


def test_drop_frees_the_session_and_the_gauges_follow(tmp_path: Path) -> None:
    kernel = boot(tmp_path, "seed")
    sw_ready(kernel)
    conn = connect(kernel)
    enable(kernel, params())
    with kernel.transaction() as tx:
        tcp.drop(tx, conn)
        assert session.get(tx, conn.id) is None
    c = counters(kernel)
    assert (c[STATS + "active"], c["kern.ipc.tls.sw.gcm"]) == (0, 0)


def test_mode_get(tmp_path: Path) -> None:
    kernel = boot(tmp_path, "seed")
    sw_ready(kernel)
    conn = connect(kernel)
    with kernel.snapshot() as tx:
        assert session.get_mode(tx, conn) == session.TCP_TLS_MODE_NONE
    enable(kernel, params())
    with kernel.snapshot() as tx:
        assert session.get_mode(tx, conn) == session.TCP_TLS_MODE_SW


def test_unknown_connection_is_esrch(tmp_path: Path) -> None:
    kernel = boot(tmp_path, "seed")
    sw_ready(kernel)
    with pytest.raises(KtlsError) as info:
        enable(kernel, params(), ("192.0.2.10:443", "198.51.100.7:9"))
    assert info.value.errno == Errno.ESRCH
    assert CONN  # the default connection was never made
    assert counters(kernel)[STATS + "enable_calls"] == 0


def test_kldunload_rules(tmp_path: Path) -> None:
    kernel = boot(tmp_path, "seed", seed=None)
    sw_ready(kernel)
    connect(kernel)
    enable(kernel, params())
    with kernel.transaction() as tx:
        f = kld.find_file(tx, "ktls_ocf")
        assert f is not None and f.name == "ktls_ocf.ko"
    # allow_unload=0: refused, with the kernel's message (kept: the caller commits).
    with kernel.transaction() as tx, pytest.raises(KtlsError) as info:
        kld.kldunload(tx, f)
    assert info.value.errno == Errno.EBUSY
    with kernel.snapshot() as tx:
        assert tx.dmesg()[-1] == "KTLS: Deregistering crypto method OCF is not supported"
    # allow_unload=1 (a loader tunable): still refused while a session uses OCF.
    with kernel.transaction() as tx:
        tx.set_sysctl("kern.ipc.tls.allow_unload", 1)
    with pytest.raises(KtlsError), kernel.transaction() as tx:
        kld.kldunload(tx, f)
    with kernel.transaction() as tx:
        for conn in list(tcp.iter_conns(tx)):
            tcp.drop(tx, conn)
        kld.kldunload(tx, f)
        assert kld.loaded_modules(tx) == []
