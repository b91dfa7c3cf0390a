"""struct tls_enable and the checks of TCP_TXTLS_ENABLE, as one table.

`ENABLE_RULES` is ktls_enable_tx() followed by ktls_create_session(), in
FreeBSD's order (reference freebsd-ktls.md §2 steps 1-8). Each row says which
kernel ("era") has it:

- ``seed``: the August 2019 import (r351522);
- ``current``: today's FreeBSD.

`check_enable` walks the table and raises the first failing row as an
`EnableError`. Rows before the enable_calls counter (step 3) are not counted.

Modelling decisions (documented here because FreeBSD has no exact analogue):

- Step 0 ("copyin"): the 2019 struct has no rec_seq. A seed kernel would
  silently truncate a longer struct (sooptcopyin) and start at sequence 0; we
  refuse a non-zero rec_seq with EINVAL instead, before any counting, so a
  simulated peer never disagrees about the sequence without notice. A rec_seq
  outside 0..2**64-1 cannot be encoded in the 8-byte field: EINVAL in both eras.
- Step 2 (listening socket): the reference documents it for 2019/2021; modern
  kernels refuse a listening socket as well, so the row applies to both eras.
- The backend step (9) lives in backend.py (`Registry.select`), not here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, NamedTuple

from ktls_core.errors import Errno, KtlsError
from ktls_core.frozen import Frozen
from ktls_core.tls.suites import (
    GMAC_ALGS,
    TLS_1_3_GCM_IV_LEN,
    TLS_AEAD_GCM_LEN,
    TLS_CBC_IMPLICIT_IV_LEN,
    TLS_CHACHA20_IV_LEN,
    TLS_MAJOR_VER_ONE,
    TLS_MAX_IV_LEN,
    TLS_MAX_MSG_SIZE_V10_2,
    TLS_MAX_PARAM_SIZE,
    TLS_MINOR_VER_ONE,
    TLS_MINOR_VER_THREE,
    TLS_MINOR_VER_TWO,
    TLS_MINOR_VER_ZERO,
    U64_MAX,
    CryptoAlg,
    Suite,
    header_trailer_len,
)

Era = Literal["seed", "current"]
ERAS: tuple[Era, ...] = ("seed", "current")
BOTH: frozenset[str] = frozenset(ERAS)
SEED: frozenset[str] = frozenset({"seed"})
CURRENT: frozenset[str] = frozenset({"current"})


class TlsEnable(NamedTuple):
    """struct tls_enable; lengths are those of the byte strings.

    rec_seq None is the v0 struct of 2019 (no rec_seq field at all).
    Keys never appear in repr().
    """

    cipher_algorithm: int
    cipher_key: bytes
    iv: bytes
    auth_algorithm: int = 0
    auth_key: bytes = b""
    flags: int = 0
    tls_vmajor: int = TLS_MAJOR_VER_ONE
    tls_vminor: int = TLS_MINOR_VER_TWO
    rec_seq: int | None = None

    def __repr__(self) -> str:
        return (
            f"TlsEnable(cipher_algorithm={self.cipher_algorithm},"
            f" auth_algorithm={self.auth_algorithm}, flags={self.flags},"
            f" tls_vmajor={self.tls_vmajor}, tls_vminor={self.tls_vminor},"
            f" rec_seq={self.rec_seq})"
        )

    @property
    def cipher_key_len(self) -> int:
        return len(self.cipher_key)

    @property
    def iv_len(self) -> int:
        return len(self.iv)

    @property
    def auth_key_len(self) -> int:
        return len(self.auth_key)

    @property
    def start_seq(self) -> int:
        """First sequence number: rec_seq, or 0 for the v0 struct."""
        return self.rec_seq or 0

    @property
    def suite(self) -> Suite:
        return Suite(
            self.cipher_algorithm, len(self.cipher_key), self.tls_vminor, self.auth_algorithm
        )

    @property
    def effective_iv(self) -> bytes:
        """The IV the session keeps: CBC 1.1+ ignores any IV given (iv_len = 0)."""
        if self.cipher_algorithm == CryptoAlg.AES_CBC and self.tls_vminor != TLS_MINOR_VER_ZERO:
            return b""
        return self.iv


class EnableContext(Frozen):
    """The socket and sysctl state TCP_TXTLS_ENABLE looks at."""

    _fields = (
        "enable", "listening", "is_tcp", "has_session", "cbc_enable", "mb_use_ext_pgs", "era",
    )  # fmt: skip
    __slots__ = _fields
    enable: bool  # kern.ipc.tls.enable
    listening: bool  # SOLISTENING(so)
    is_tcp: bool  # so->so_proto->pr_protocol == IPPROTO_TCP
    has_session: bool  # so->so_snd.sb_tls_info != NULL
    cbc_enable: bool  # kern.ipc.tls.cbc_enable
    mb_use_ext_pgs: bool  # kern.ipc.mb_use_ext_pgs
    era: str  # 'seed' or 'current'

    def __init__(
        self,
        enable: bool,
        listening: bool,
        is_tcp: bool,
        has_session: bool,
        cbc_enable: bool,
        mb_use_ext_pgs: bool,
        era: str,
    ) -> None:
        self._init(locals())


Predicate = Callable[[EnableContext, TlsEnable], bool]

# Step 3 is the enable_calls counter: failures at later steps are counted.
COUNTED_FROM_STEP = 3


class EnableRule(NamedTuple):
    """One row: `rejects(ctx, params)` true means the call fails with `errno`."""

    step: int
    name: str
    errno: Errno
    description: str
    eras: frozenset[str]
    rejects: Predicate

    @property
    def counted(self) -> bool:
        return self.step >= COUNTED_FROM_STEP

    @property
    def strerror(self) -> str:
        return KtlsError(self.errno).strerror


class EnableError(KtlsError):
    """TCP_TXTLS_ENABLE failed at `rule`; `counted` says enable_calls was bumped."""

    def __init__(self, rule: EnableRule) -> None:
        super().__init__(rule.errno, rule.description)
        self.rule = rule
        self.counted = rule.counted


def _gcm(p: TlsEnable) -> bool:
    return p.cipher_algorithm == CryptoAlg.AES_NIST_GCM_16


def _cbc(p: TlsEnable) -> bool:
    return p.cipher_algorithm == CryptoAlg.AES_CBC


def _chacha(p: TlsEnable) -> bool:
    return p.cipher_algorithm == CryptoAlg.CHACHA20_POLY1305


_SHA2 = frozenset({CryptoAlg.SHA2_256_HMAC, CryptoAlg.SHA2_384_HMAC})
_CBC_AUTHS = frozenset({CryptoAlg.SHA1_HMAC, CryptoAlg.SHA2_256_HMAC, CryptoAlg.SHA2_384_HMAC})
_SEED_CIPHERS = frozenset({CryptoAlg.AES_NIST_GCM_16, CryptoAlg.AES_CBC})
_CURRENT_CIPHERS = _SEED_CIPHERS | {CryptoAlg.CHACHA20_POLY1305}


def _r(
    step: int, name: str, errno: Errno, description: str, eras: frozenset[str], rejects: Predicate
) -> EnableRule:
    return EnableRule(step, name, errno, description, eras, rejects)


E = Errno
# fmt: off
ENABLE_RULES: tuple[EnableRule, ...] = (
    # step 0: copying struct tls_enable in (tcp_default_ctloutput / ktls_copyin_tls_enable)
    _r(0, "rec_seq_range", E.EINVAL, "rec_seq does not fit in 8 bytes", BOTH,
       lambda c, p: p.rec_seq is not None and not 0 <= p.rec_seq <= U64_MAX),
    _r(0, "rec_seq_v0", E.EINVAL, "the 2019 struct tls_enable has no rec_seq", SEED,
       lambda c, p: bool(p.rec_seq)),
    # ktls_enable_tx()
    _r(1, "enable_off", E.EOPNOTSUPP, "kern.ipc.tls.enable is 0", BOTH,
       lambda c, p: not c.enable),
    _r(2, "listening", E.EINVAL, "socket is listening", BOTH,
       lambda c, p: c.listening),
    # step 3: counter_u64_add(ktls_offload_enable_calls, 1)
    _r(4, "not_tcp", E.EINVAL, "socket is not TCP", BOTH,
       lambda c, p: not c.is_tcp),
    _r(5, "session_exists", E.EALREADY, "a TX TLS session already exists (no rekeying)", BOTH,
       lambda c, p: c.has_session),
    _r(6, "cbc_disabled", E.EOPNOTSUPP, "AES-CBC with kern.ipc.tls.cbc_enable 0", BOTH,
       lambda c, p: _cbc(p) and not c.cbc_enable),
    _r(7, "no_ext_pgs", E.ENXIO, "kern.ipc.mb_use_ext_pgs is 0", BOTH,
       lambda c, p: not c.mb_use_ext_pgs),
    # ktls_create_session(): every failure is EINVAL
    _r(8, "vmajor", E.EINVAL, "tls_vmajor is not 3", BOTH,
       lambda c, p: p.tls_vmajor != TLS_MAJOR_VER_ONE),
    _r(8, "vminor", E.EINVAL, "tls_vminor is not 1..4 (TLS 1.0-1.3)", BOTH,
       lambda c, p: not TLS_MINOR_VER_ZERO <= p.tls_vminor <= TLS_MINOR_VER_THREE),
    _r(8, "auth_key_len", E.EINVAL, "auth_key_len above TLS_MAX_PARAM_SIZE", BOTH,
       lambda c, p: p.auth_key_len > TLS_MAX_PARAM_SIZE),
    _r(8, "cipher_key_len", E.EINVAL, "cipher_key_len above TLS_MAX_PARAM_SIZE", BOTH,
       lambda c, p: p.cipher_key_len > TLS_MAX_PARAM_SIZE),
    _r(8, "iv_len", E.EINVAL, "iv_len above sizeof(params.iv) (16)", BOTH,
       lambda c, p: p.iv_len > TLS_MAX_IV_LEN),
    _r(8, "no_cipher_key", E.EINVAL, "cipher_key_len is 0", BOTH,
       lambda c, p: p.cipher_key_len == 0),
    _r(8, "flags", E.EINVAL, "flags is not 0", BOTH,
       lambda c, p: p.flags != 0),
    _r(8, "cipher_seed", E.EINVAL, "cipher is neither AES-GCM nor AES-CBC", SEED,
       lambda c, p: p.cipher_algorithm not in _SEED_CIPHERS),
    _r(8, "cipher", E.EINVAL, "cipher is not AES-GCM, AES-CBC or ChaCha20-Poly1305", CURRENT,
       lambda c, p: p.cipher_algorithm not in _CURRENT_CIPHERS),
    # AES-GCM
    _r(8, "gcm_auth", E.EINVAL, "AES-GCM with an auth algorithm other than 0 or GMAC", BOTH,
       lambda c, p: _gcm(p) and p.auth_algorithm != 0 and p.auth_algorithm not in GMAC_ALGS),
    _r(8, "gcm_auth_key", E.EINVAL, "AES-GCM with an auth key", BOTH,
       lambda c, p: _gcm(p) and p.auth_key_len != 0),
    _r(8, "gcm_version", E.EINVAL, "AES-GCM needs TLS 1.2 or 1.3", CURRENT,
       lambda c, p: _gcm(p) and p.tls_vminor not in (TLS_MINOR_VER_TWO, TLS_MINOR_VER_THREE)),
    _r(8, "gcm12_iv_len", E.EINVAL, "AES-GCM TLS 1.2 needs a 4-byte IV (salt)", BOTH,
       lambda c, p: _gcm(p) and p.tls_vminor == TLS_MINOR_VER_TWO
       and p.iv_len != TLS_AEAD_GCM_LEN),
    _r(8, "gcm13_iv_len", E.EINVAL, "AES-GCM TLS 1.3 needs a 12-byte IV", BOTH,
       lambda c, p: _gcm(p) and p.tls_vminor == TLS_MINOR_VER_THREE
       and p.iv_len != TLS_1_3_GCM_IV_LEN),
    # AES-CBC
    _r(8, "cbc_auth", E.EINVAL, "AES-CBC needs HMAC-SHA1, -SHA256 or -SHA384", BOTH,
       lambda c, p: _cbc(p) and p.auth_algorithm not in _CBC_AUTHS),
    _r(8, "cbc_sha2_version", E.EINVAL, "HMAC-SHA256/384 only with TLS 1.2", CURRENT,
       lambda c, p: _cbc(p) and p.auth_algorithm in _SHA2 and p.tls_vminor != TLS_MINOR_VER_TWO),
    # 2019 checked the TLS 1.0 IV inside the SHA1 case, before the auth key.
    _r(8, "cbc10_iv_len_seed", E.EINVAL, "AES-CBC-SHA1 TLS 1.0 needs a 16-byte IV", SEED,
       lambda c, p: _cbc(p) and p.auth_algorithm == CryptoAlg.SHA1_HMAC
       and p.tls_vminor == TLS_MINOR_VER_ZERO and p.iv_len != TLS_CBC_IMPLICIT_IV_LEN),
    _r(8, "cbc_auth_key", E.EINVAL, "AES-CBC without an auth key", BOTH,
       lambda c, p: _cbc(p) and p.auth_key_len == 0),
    _r(8, "cbc10_iv_len", E.EINVAL, "AES-CBC TLS 1.0 needs a 16-byte IV", CURRENT,
       lambda c, p: _cbc(p) and p.tls_vminor == TLS_MINOR_VER_ZERO
       and p.iv_len != TLS_CBC_IMPLICIT_IV_LEN),
    _r(8, "cbc_version", E.EINVAL, "AES-CBC needs TLS 1.0, 1.1 or 1.2", CURRENT,
       lambda c, p: _cbc(p) and p.tls_vminor not in
       (TLS_MINOR_VER_ZERO, TLS_MINOR_VER_ONE, TLS_MINOR_VER_TWO)),
    # ChaCha20-Poly1305 (2020+; a seed kernel stops at cipher_seed above)
    _r(8, "chacha_auth", E.EINVAL, "ChaCha20-Poly1305 with an auth algorithm or key", CURRENT,
       lambda c, p: _chacha(p) and (p.auth_algorithm != 0 or p.auth_key_len != 0)),
    _r(8, "chacha_version", E.EINVAL, "ChaCha20-Poly1305 needs TLS 1.2 or 1.3", CURRENT,
       lambda c, p: _chacha(p) and p.tls_vminor not in (TLS_MINOR_VER_TWO, TLS_MINOR_VER_THREE)),
    _r(8, "chacha_iv_len", E.EINVAL, "ChaCha20-Poly1305 needs a 12-byte IV", CURRENT,
       lambda c, p: _chacha(p) and p.iv_len != TLS_CHACHA20_IV_LEN),
)
# fmt: on
del E


# Each era's rows, filtered once: the check runs per connection (connect --count).
_RULES_BY_ERA: dict[str, tuple[EnableRule, ...]] = {
    era: tuple(rule for rule in ENABLE_RULES if era in rule.eras) for era in ERAS
}


def rules_for(era: str) -> tuple[EnableRule, ...]:
    """The rows a kernel of `era` checks, in order."""
    try:
        return _RULES_BY_ERA[era]
    except KeyError:
        raise ValueError(f"unknown era {era!r}") from None


def first_failure(ctx: EnableContext, params: TlsEnable) -> EnableRule | None:
    for rule in rules_for(ctx.era):
        if rule.rejects(ctx, params):
            return rule
    return None


def check_enable(ctx: EnableContext, params: TlsEnable) -> None:
    """Steps 0-8 of TCP_TXTLS_ENABLE; raises EnableError at the first failing row."""
    rule = first_failure(ctx, params)
    if rule is not None:
        raise EnableError(rule)


def max_frame_len(maxlen: int) -> int:
    """tls->params.max_frame_len = min(TLS_MAX_MSG_SIZE_V10_2, kern.ipc.tls.maxlen)."""
    return min(TLS_MAX_MSG_SIZE_V10_2, maxlen)


def session_lengths(params: TlsEnable) -> tuple[int, int]:
    """(tls_hlen, tls_tlen) of a session created from validated params."""
    return header_trailer_len(params.cipher_algorithm, params.tls_vminor, params.auth_algorithm)
