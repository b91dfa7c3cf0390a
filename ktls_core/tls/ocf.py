"""The `ocf` software backend (sys/opencrypto/ktls_ocf.c) on `cryptography`.

2019 (ktls_ocf.ko, era 'seed'): AES-GCM only, 128/256-bit keys, TLS 1.2/1.3.
Modern (built in, era 'current'): adds AES-CBC with HMAC-SHA1/256/384 for
TLS 1.0-1.2 and ChaCha20-Poly1305 (256-bit key) for TLS 1.2/1.3. In both, a bad
key size is EINVAL and anything else unsupported EPROTONOSUPPORT, checked in
ktls_ocf_try()'s order (key size before version).

`cryptography` is imported only when a protector is built (record.py), so
importing this module stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ktls_core.errors import Errno, KtlsError
from ktls_core.tls.suites import (
    TLS_MAJOR_VER_ONE,
    TLS_MAX_MSG_SIZE_V10_2,
    TLS_MINOR_VER_ONE,
    TLS_MINOR_VER_THREE,
    TLS_MINOR_VER_TWO,
    TLS_MINOR_VER_ZERO,
    CryptoAlg,
)

if TYPE_CHECKING:
    from ktls_core.tls.enable import TlsEnable
    from ktls_core.tls.record import RecordProtector

OCF_NAME = "OCF"
OCF_PRIO = 5
REGISTER_MESSAGE = "KTLS: Registering crypto method OCF with prio 5"

# kern.ipc.tls.stats.ocf leaves, per era.
SEED_COUNTERS = ("tls12_gcm_crypts", "tls13_gcm_crypts", "retries")
CURRENT_COUNTERS = (
    "tls10_cbc_encrypts",
    "tls11_cbc_encrypts",
    "tls12_gcm_decrypts",
    "tls12_gcm_encrypts",
    "tls12_chacha20_decrypts",
    "tls12_chacha20_encrypts",
    "tls13_gcm_decrypts",
    "tls13_gcm_encrypts",
    "tls13_chacha20_decrypts",
    "tls13_chacha20_encrypts",
    "inplace",
    "separate_output",
    "retries",
)


def _version_in(params: TlsEnable, low: int, high: int) -> bool:
    return params.tls_vmajor == TLS_MAJOR_VER_ONE and low <= params.tls_vminor <= high


class OcfBackend:
    """ocf_backend: name "OCF", prio 5."""

    name = OCF_NAME
    prio = OCF_PRIO

    def try_session(self, params: TlsEnable, era: str) -> None:
        """ktls_ocf_try(): accept or raise EINVAL / EPROTONOSUPPORT."""
        cipher = params.cipher_algorithm
        keylen = params.cipher_key_len
        if cipher == CryptoAlg.AES_NIST_GCM_16:
            if keylen not in (16, 32):
                raise KtlsError(Errno.EINVAL, f"AES-GCM key of {keylen} bytes")
            if not _version_in(params, TLS_MINOR_VER_TWO, TLS_MINOR_VER_THREE):
                raise KtlsError(Errno.EPROTONOSUPPORT, "OCF does AES-GCM for TLS 1.2/1.3 only")
            return
        if era == "seed":
            raise KtlsError(Errno.EPROTONOSUPPORT, "the 2019 ktls_ocf does AES-GCM only")
        if cipher == CryptoAlg.AES_CBC:
            if keylen not in (16, 32):
                raise KtlsError(Errno.EINVAL, f"AES-CBC key of {keylen} bytes")
            if params.auth_algorithm not in (
                CryptoAlg.SHA1_HMAC,
                CryptoAlg.SHA2_256_HMAC,
                CryptoAlg.SHA2_384_HMAC,
            ):
                raise KtlsError(
                    Errno.EINVAL, f"AES-CBC with auth algorithm {params.auth_algorithm}"
                )
            if not _version_in(params, TLS_MINOR_VER_ZERO, TLS_MINOR_VER_TWO):
                raise KtlsError(Errno.EPROTONOSUPPORT, "OCF does AES-CBC for TLS 1.0-1.2 only")
            return
        if cipher == CryptoAlg.CHACHA20_POLY1305:
            if keylen != 32:
                raise KtlsError(Errno.EINVAL, f"ChaCha20 key of {keylen} bytes")
            if not _version_in(params, TLS_MINOR_VER_TWO, TLS_MINOR_VER_THREE):
                raise KtlsError(Errno.EPROTONOSUPPORT, "OCF does ChaCha20 for TLS 1.2/1.3 only")
            return
        raise KtlsError(Errno.EPROTONOSUPPORT, f"OCF does not do cipher {cipher}")

    def new_protector(
        self, params: TlsEnable, max_frame_len: int = TLS_MAX_MSG_SIZE_V10_2
    ) -> RecordProtector:
        from ktls_core.tls.record import SessionKeys, make_protector

        return make_protector(SessionKeys.from_enable(params), max_frame_len)

    def ocf_counter(self, params: TlsEnable, era: str) -> str | None:
        """The kern.ipc.tls.stats.ocf leaf one encryption increments.

        2019 counted 'crypts' per version (GCM only); modern counts CBC 1.1 and
        1.2 together in tls11_cbc_encrypts ("TLS 1.1/1.2 CBC encryption
        operations" in ktls_ocf.c).
        """
        cipher = params.cipher_algorithm
        vminor = params.tls_vminor
        if era == "seed":
            if cipher != CryptoAlg.AES_NIST_GCM_16:
                return None
            seed = {TLS_MINOR_VER_TWO: "tls12_gcm_crypts", TLS_MINOR_VER_THREE: "tls13_gcm_crypts"}
            return seed.get(vminor)
        if cipher == CryptoAlg.AES_CBC:
            if vminor == TLS_MINOR_VER_ZERO:
                return "tls10_cbc_encrypts"
            if vminor in (TLS_MINOR_VER_ONE, TLS_MINOR_VER_TWO):
                return "tls11_cbc_encrypts"
            return None
        if cipher == CryptoAlg.AES_NIST_GCM_16:
            name = "gcm"
        elif cipher == CryptoAlg.CHACHA20_POLY1305:
            name = "chacha20"
        else:
            return None
        version = {TLS_MINOR_VER_TWO: "tls12", TLS_MINOR_VER_THREE: "tls13"}.get(vminor)
        return f"{version}_{name}_encrypts" if version else None


if TYPE_CHECKING:
    from ktls_core.tls.backend import Backend

    _conforms: Backend = OcfBackend()  # mypy checks OcfBackend against the protocol
