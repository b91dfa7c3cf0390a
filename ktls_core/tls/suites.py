"""Constants and per-suite parameters of FreeBSD KTLS (sys/sys/ktls.h, cryptodev.h).

Everything here is plain data: no cryptography import, so the CLI's fast paths
(sysctl, netstat, wire-length arithmetic) can use it for free.
"""

from __future__ import annotations

import enum
from typing import NamedTuple

from ktls_core.errors import Errno, KtlsError

# --- versions (struct tls_enable.tls_vmajor / tls_vminor) ---------------------

TLS_MAJOR_VER_ONE = 3
TLS_MINOR_VER_ZERO = 1  # TLS 1.0
TLS_MINOR_VER_ONE = 2  # TLS 1.1
TLS_MINOR_VER_TWO = 3  # TLS 1.2
TLS_MINOR_VER_THREE = 4  # TLS 1.3

VERSION_NAMES: dict[int, str] = {
    TLS_MINOR_VER_ZERO: "1.0",
    TLS_MINOR_VER_ONE: "1.1",
    TLS_MINOR_VER_TWO: "1.2",
    TLS_MINOR_VER_THREE: "1.3",
}
VERSION_MINORS: dict[str, int] = {name: minor for minor, name in VERSION_NAMES.items()}

# --- limits -----------------------------------------------------------------

TLS_MAX_MSG_SIZE_V10_2 = 16384  # max plaintext per record
TLS_MAX_PARAM_SIZE = 1024  # max key / auth key length
TLS_MAX_IV_LEN = 16  # sizeof(tls->params.iv)
TLS_AEAD_GCM_LEN = 4  # TLS 1.2 GCM implicit salt
TLS_1_3_GCM_IV_LEN = 12
TLS_CHACHA20_IV_LEN = 12
TLS_CBC_IMPLICIT_IV_LEN = 16
TLS_HEADER_LEN = 5  # sizeof(struct tls_record_layer)
AES_BLOCK_LEN = 16
AEAD_TAG_LEN = 16  # AES_GMAC_HASH_LEN == POLY1305_HASH_LEN
GCM12_EXPLICIT_LEN = 8

# Largest record body a peer accepts (RFC 5246 §6.2.3, RFC 8446 §5.2).
TLS12_MAX_CIPHERTEXT = TLS_MAX_MSG_SIZE_V10_2 + 2048
TLS13_MAX_CIPHERTEXT = TLS_MAX_MSG_SIZE_V10_2 + 256

# 64-bit sequence numbers and GCM nonce counters: the value U64_MAX is never
# sealed because the next record would wrap to 0 (see record.py).
U64_MAX = (1 << 64) - 1


class CryptoAlg(enum.IntEnum):
    """opencrypto algorithm ids used by struct tls_enable."""

    SHA1_HMAC = 7
    AES_CBC = 11
    SHA2_256_HMAC = 18
    SHA2_384_HMAC = 19
    AES_NIST_GCM_16 = 25
    AES_128_NIST_GMAC = 26
    AES_192_NIST_GMAC = 27
    AES_256_NIST_GMAC = 28
    CHACHA20_POLY1305 = 41


AEAD_CIPHERS = frozenset({CryptoAlg.AES_NIST_GCM_16, CryptoAlg.CHACHA20_POLY1305})
HMAC_ALGS = frozenset({CryptoAlg.SHA1_HMAC, CryptoAlg.SHA2_256_HMAC, CryptoAlg.SHA2_384_HMAC})
# GCM sessions may name a GMAC "auth" algorithm for compatibility (ktls_create_session).
GMAC_ALGS = frozenset(
    {CryptoAlg.AES_128_NIST_GMAC, CryptoAlg.AES_192_NIST_GMAC, CryptoAlg.AES_256_NIST_GMAC}
)

MAC_LEN: dict[int, int] = {
    CryptoAlg.SHA1_HMAC: 20,
    CryptoAlg.SHA2_256_HMAC: 32,
    CryptoAlg.SHA2_384_HMAC: 48,
}

# CLI spellings (DESIGN.md §4 TLS options).
CIPHER_NAMES: dict[str, CryptoAlg] = {
    "aes-gcm": CryptoAlg.AES_NIST_GCM_16,
    "aes-cbc": CryptoAlg.AES_CBC,
    "chacha20-poly1305": CryptoAlg.CHACHA20_POLY1305,
}
AUTH_NAMES: dict[str, CryptoAlg] = {
    "hmac-sha1": CryptoAlg.SHA1_HMAC,
    "hmac-sha256": CryptoAlg.SHA2_256_HMAC,
    "hmac-sha384": CryptoAlg.SHA2_384_HMAC,
}

# kern.ipc.tls.{sw,ifnet,toe}.<gauge>
GAUGE_NAMES: dict[int, str] = {
    CryptoAlg.AES_NIST_GCM_16: "gcm",
    CryptoAlg.AES_CBC: "cbc",
    CryptoAlg.CHACHA20_POLY1305: "chacha20",
}


class RecordType(enum.IntEnum):
    """TLS ContentType values KTLS users send (any byte is allowed on the wire)."""

    CHANGE_CIPHER_SPEC = 20
    ALERT = 21
    HANDSHAKE = 22
    APPLICATION_DATA = 23


TLS_RLTYPE_APP = RecordType.APPLICATION_DATA


def parse_record_type(text: str | int) -> int:
    """A record type from a name ('alert', 'application-data') or a number 0..255."""
    if isinstance(text, int):
        value = text
    else:
        word = text.strip().lower().replace("-", "_")
        for member in RecordType:
            if member.name.lower() == word:
                return int(member)
        try:
            value = int(word, 0)
        except ValueError:
            raise KtlsError(Errno.EINVAL, f"unknown record type {text!r}") from None
    if not 0 <= value <= 255:
        raise KtlsError(Errno.EINVAL, f"record type {value} is not a byte")
    return value


def record_type_name(value: int) -> str:
    """'application_data' for 23, the number as text for a type without a name."""
    try:
        return RecordType(value).name.lower()
    except ValueError:
        return str(value)


def parse_version(text: str) -> int:
    """'1.2' -> vminor 3."""
    try:
        return VERSION_MINORS[text.strip()]
    except KeyError:
        raise KtlsError(Errno.EINVAL, f"unknown TLS version {text!r}") from None


def version_name(vminor: int) -> str:
    """vminor 3 -> '1.2'; unknown minors print as '3.<minor>' so they stay visible."""
    return VERSION_NAMES.get(vminor, f"3.{vminor}")


def parse_cipher(text: str) -> CryptoAlg:
    try:
        return CIPHER_NAMES[text.strip().lower()]
    except KeyError:
        raise KtlsError(Errno.EINVAL, f"unknown cipher {text!r}") from None


def parse_auth(text: str | None) -> int:
    """'hmac-sha1' -> 7; None or '' or 'none' -> 0 (AEAD suites have no auth)."""
    if text is None or text.strip().lower() in ("", "none"):
        return 0
    try:
        return AUTH_NAMES[text.strip().lower()]
    except KeyError:
        raise KtlsError(Errno.EINVAL, f"unknown auth algorithm {text!r}") from None


def cipher_cli_name(cipher: int) -> str:
    for name, alg in CIPHER_NAMES.items():
        if alg == cipher:
            return name
    return str(cipher)


def auth_cli_name(auth: int) -> str | None:
    for name, alg in AUTH_NAMES.items():
        if alg == auth:
            return name
    return None


def mac_len(auth: int) -> int:
    """HMAC output length; 0 for AEAD suites (no separate MAC)."""
    return MAC_LEN.get(auth, 0)


def header_trailer_len(cipher: int, vminor: int, auth: int) -> tuple[int, int]:
    """(tls_hlen, tls_tlen) as ktls_create_session() sets them.

    tlen is the *maximum* trailer; CBC's real trailer depends on the payload
    length (see Suite.trailer_len).
    """
    hlen = TLS_HEADER_LEN
    if cipher == CryptoAlg.AES_NIST_GCM_16:
        if vminor < TLS_MINOR_VER_THREE:
            hlen += GCM12_EXPLICIT_LEN
        tlen = AEAD_TAG_LEN
    elif cipher == CryptoAlg.CHACHA20_POLY1305:
        tlen = AEAD_TAG_LEN
    elif cipher == CryptoAlg.AES_CBC:
        if auth not in MAC_LEN:
            raise KtlsError(Errno.EINVAL, "AES-CBC needs an HMAC auth algorithm")
        # Only SHA1 with TLS 1.0 uses the implicit (chained) IV; the 2019 kernel
        # gave every other CBC combination an explicit IV, whatever the version.
        if not (auth == CryptoAlg.SHA1_HMAC and vminor == TLS_MINOR_VER_ZERO):
            hlen += AES_BLOCK_LEN
        return hlen, AES_BLOCK_LEN + MAC_LEN[auth]
    else:
        raise KtlsError(Errno.EINVAL, f"unknown cipher algorithm {cipher}")
    if vminor == TLS_MINOR_VER_THREE:
        tlen += 1  # the inner content type byte
    return hlen, tlen


def gauge_name(cipher: int) -> str:
    """The kern.ipc.tls.{sw,ifnet,toe}.* leaf a session of this cipher counts in."""
    try:
        return GAUGE_NAMES[cipher]
    except KeyError:
        raise KtlsError(Errno.EINVAL, f"unknown cipher algorithm {cipher}") from None


class Suite(NamedTuple):
    """A cipher suite as KTLS sees it: cipher, key size, version, MAC."""

    cipher: int
    key_len: int
    vminor: int
    auth: int = 0

    @classmethod
    def from_names(cls, version: str, cipher: str, key_len: int, auth: str | None = None) -> Suite:
        return cls(parse_cipher(cipher), key_len, parse_version(version), parse_auth(auth))

    @property
    def version(self) -> str:
        return version_name(self.vminor)

    @property
    def is_aead(self) -> bool:
        return self.cipher in AEAD_CIPHERS

    @property
    def is_tls13(self) -> bool:
        return self.vminor == TLS_MINOR_VER_THREE

    @property
    def hlen(self) -> int:
        return header_trailer_len(self.cipher, self.vminor, self.auth)[0]

    @property
    def tlen(self) -> int:
        return header_trailer_len(self.cipher, self.vminor, self.auth)[1]

    @property
    def mac_len(self) -> int:
        return mac_len(self.auth)

    @property
    def gauge(self) -> str:
        return gauge_name(self.cipher)

    @property
    def allows_empty(self) -> bool:
        """Empty fragments: only TLS 1.0 CBC (ktls_permit_empty_frames)."""
        return self.cipher == CryptoAlg.AES_CBC and self.vminor == TLS_MINOR_VER_ZERO

    @property
    def name(self) -> str:
        """'TLS1.2 AES-128-GCM', 'TLS1.3 CHACHA20-POLY1305', 'TLS1.0 AES-256-CBC-SHA1'."""
        ver = f"TLS{self.version}"
        if self.cipher == CryptoAlg.AES_NIST_GCM_16:
            return f"{ver} AES-{self.key_len * 8}-GCM"
        if self.cipher == CryptoAlg.CHACHA20_POLY1305:
            return f"{ver} CHACHA20-POLY1305"
        if self.cipher == CryptoAlg.AES_CBC:
            mac = {7: "SHA1", 18: "SHA256", 19: "SHA384"}.get(self.auth, f"AUTH{self.auth}")
            return f"{ver} AES-{self.key_len * 8}-CBC-{mac}"
        return f"{ver} CIPHER{self.cipher}"

    def trailer_len(self, payload_len: int) -> int:
        """Actual trailer: tag (+type byte for 1.3), or CBC MAC + 1..16 padding."""
        tlen = self.tlen
        if self.cipher == CryptoAlg.AES_CBC:
            # ktls_frame(): tlen - ((payload + tlen) mod block size)
            return tlen - ((payload_len + tlen) % AES_BLOCK_LEN)
        return tlen

    def wire_length(self, payload_len: int) -> int:
        """Bytes on the wire for one record carrying payload_len plaintext bytes."""
        return self.hlen + payload_len + self.trailer_len(payload_len)
