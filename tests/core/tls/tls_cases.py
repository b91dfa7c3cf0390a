"""Shared helpers for the record-layer tests: the suite matrix, keys, explicit inputs.

The matrix is FreeBSD's ktls_test.c one: AES-GCM 128/256 x TLS 1.2/1.3,
ChaCha20-Poly1305 x TLS 1.2/1.3, AES-CBC 128/256 x TLS 1.0/1.1/1.2 x HMAC-SHA1
plus TLS 1.2 x HMAC-SHA256/384.
"""

from __future__ import annotations

import hmac
import random
from dataclasses import dataclass
from typing import Any

from ktls_core.tls.record import RecordProtector, SessionKeys, make_protector


@dataclass(frozen=True)
class Spec:
    id: str
    version: str
    cipher: str
    key_len: int
    auth: str | None = None

    @property
    def iv_len(self) -> int:
        if self.cipher == "aes-cbc":
            return 16 if self.version == "1.0" else 0
        if self.cipher == "aes-gcm" and self.version == "1.2":
            return 4
        return 12

    @property
    def mac_key_len(self) -> int:
        return {"hmac-sha1": 20, "hmac-sha256": 32, "hmac-sha384": 48}.get(self.auth or "", 0)


SPECS: list[Spec] = [
    Spec("tls12-aes128-gcm", "1.2", "aes-gcm", 16),
    Spec("tls12-aes256-gcm", "1.2", "aes-gcm", 32),
    Spec("tls13-aes128-gcm", "1.3", "aes-gcm", 16),
    Spec("tls13-aes256-gcm", "1.3", "aes-gcm", 32),
    Spec("tls12-chacha20", "1.2", "chacha20-poly1305", 32),
    Spec("tls13-chacha20", "1.3", "chacha20-poly1305", 32),
]
for _bits in (128, 256):
    for _ver in ("1.0", "1.1", "1.2"):
        SPECS.append(
            Spec(
                f"tls{_ver.replace('.', '')}-aes{_bits}-cbc-sha1",
                _ver,
                "aes-cbc",
                _bits // 8,
                "hmac-sha1",
            )
        )
    for _mac in ("sha256", "sha384"):
        SPECS.append(
            Spec(f"tls12-aes{_bits}-cbc-{_mac}", "1.2", "aes-cbc", _bits // 8, f"hmac-{_mac}")
        )
SPEC_IDS = [s.id for s in SPECS]
assert len(SPECS) == 16


@dataclass
class Case:
    """One session: the core's keys, the oracle's dict, and the stream explicit input."""

    spec: Spec
    keys: SessionKeys
    oracle: dict[str, Any]
    explicit: Any  # GCM 1.2 counter, CBC 1.0 chain IV, CBC 1.1+ IV source, else None

    def protector(self, max_frame_len: int = 16384) -> RecordProtector:
        return make_protector(self.keys, max_frame_len)

    def record_explicit(self, index: int = 0) -> Any:
        """The explicit input seal_into wants for record `index` of a fresh stream."""
        if isinstance(self.explicit, int):
            return self.explicit + index
        if callable(self.explicit):
            return self.explicit(16)
        return self.explicit


def make_case(spec: Spec, rng: random.Random, counter: int | None = None) -> Case:
    key = rng.randbytes(spec.key_len)
    iv = rng.randbytes(spec.iv_len)
    auth_key = rng.randbytes(spec.mac_key_len)
    keys = SessionKeys.from_names(spec.version, spec.cipher, key, iv, spec.auth, auth_key)
    oracle = {
        "version": spec.version,
        "cipher": spec.cipher,
        "key": key,
        "iv": iv,
        "auth": spec.auth,
        "auth_key": auth_key,
    }
    explicit: Any = None
    if spec.cipher == "aes-gcm" and spec.version == "1.2":
        explicit = rng.getrandbits(63) if counter is None else counter
    elif spec.cipher == "aes-cbc":
        explicit = iv if spec.version == "1.0" else rng.randbytes
    return Case(spec, keys, oracle, explicit)


def seal_all(
    case: Case, rtype: int, data: bytes, first_seq: int, max_frame_len: int = 16384
) -> bytes:
    prot = case.protector(max_frame_len)
    return b"".join(
        bytes(chunk) for chunk in prot.seal_stream(rtype, data, first_seq, case.explicit)
    )


def expected_lengths(total: int, max_frame_len: int = 16384) -> list[int]:
    if total == 0:
        return [0]
    return [max_frame_len] * (total // max_frame_len) + (
        [total % max_frame_len] if total % max_frame_len else []
    )


def hkdf_expand_label(
    secret: bytes, label: str, context: bytes, length: int, hash_name: str = "sha256"
) -> bytes:
    """RFC 8446 §7.1 HKDF-Expand-Label (test-side only; the core never derives keys)."""
    full = b"tls13 " + label.encode()
    info = length.to_bytes(2, "big") + bytes([len(full)]) + full + bytes([len(context)]) + context
    out = b""
    block = b""
    counter = 1
    while len(out) < length:
        block = hmac.new(secret, block + info + bytes([counter]), hash_name).digest()
        out += block
        counter += 1
    return out[:length]


def tls12_prf(secret: bytes, label: bytes, seed: bytes, length: int) -> bytes:
    """RFC 5246 §5 PRF with SHA-256 (test-side only)."""
    out = b""
    a = label + seed
    while len(out) < length:
        a = hmac.digest(secret, a, "sha256")
        out += hmac.digest(secret, a + label + seed, "sha256")
    return out[:length]
