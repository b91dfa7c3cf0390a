"""An independent TLS record decryptor for tests, written from the RFC text.

Deliberately simple and separate: it imports nothing from ktls_core, only
`cryptography` primitives, hmac and hashlib, so a shared misunderstanding
cannot hide in both the record layer and its check.

    decrypt_stream(data, suite, first_seq=0) -> list[tuple[int, bytes]]

returns (content type, plaintext) per record, in order, and raises ValueError
(naming the record index) on anything wrong: bad header, version, length, tag,
MAC or padding, or a truncated record. `suite` is a plain dict:

    version   '1.0' | '1.1' | '1.2' | '1.3'
    cipher    'aes-gcm' | 'aes-cbc' | 'chacha20-poly1305'
    key       bytes
    iv        bytes: GCM 1.2 the 4-byte salt; TLS 1.3 and ChaCha20 the 12-byte
              IV; CBC 1.0 the first record's 16-byte IV; ignored for CBC 1.1/1.2
    auth      None | 'hmac-sha1' | 'hmac-sha256' | 'hmac-sha384' (CBC only)
    auth_key  bytes (CBC only)

Sources: RFC 5246 §6.2 (records, MAC-then-encrypt CBC, AEAD additional data),
RFC 2246 §6.2.3.2 (TLS 1.0 chained IV), RFC 5288 §3 (GCM nonce = salt |
nonce_explicit), RFC 7905 §2 (ChaCha20 nonce = IV XOR padded seq), RFC 8446
§5.2-5.4 (TLS 1.3 inner plaintext, nonce, AAD, zero padding).
"""

from __future__ import annotations

import hashlib
import hmac

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

MINOR = {"1.0": 1, "1.1": 2, "1.2": 3, "1.3": 4}
HASHES = {"hmac-sha1": hashlib.sha1, "hmac-sha256": hashlib.sha256, "hmac-sha384": hashlib.sha384}
MAX_PLAINTEXT = 2**14


def _xor_seq(iv: bytes, seq: int) -> bytes:
    """The 64-bit sequence number, left-padded to the IV length, XORed into the IV."""
    padded = seq.to_bytes(len(iv), "big")
    return bytes(a ^ b for a, b in zip(iv, padded, strict=True))


def _aead(suite: dict) -> AESGCM | ChaCha20Poly1305:
    if suite["cipher"] == "aes-gcm":
        return AESGCM(suite["key"])
    if suite["cipher"] == "chacha20-poly1305":
        return ChaCha20Poly1305(suite["key"])
    raise ValueError(f"not an AEAD cipher: {suite['cipher']}")


def decrypt_stream(data: bytes, suite: dict, first_seq: int = 0) -> list[tuple[int, bytes]]:
    version = suite["version"]
    minor = MINOR[version]
    expected_version = bytes([3, 3 if minor == 4 else minor])  # 1.3 says 1.2 on the wire
    chain_iv = suite.get("iv", b"")  # TLS 1.0 CBC only
    data = bytes(data)
    records = []
    pos = 0
    seq = first_seq
    index = 0
    while pos < len(data):
        if len(data) - pos < 5:
            raise ValueError(f"record {index}: truncated header")
        header = data[pos : pos + 5]
        ctype = header[0]
        length = int.from_bytes(header[3:5], "big")
        if header[1:3] != expected_version:
            raise ValueError(f"record {index}: version {header[1:3].hex()}")
        if length > MAX_PLAINTEXT + 2048:
            raise ValueError(f"record {index}: length {length} too large")
        fragment = data[pos + 5 : pos + 5 + length]
        if len(fragment) != length:
            raise ValueError(f"record {index}: truncated record")
        try:
            if version == "1.3":
                ctype, plaintext = _open_tls13(suite, header, fragment, seq)
            elif suite["cipher"] == "aes-cbc":
                plaintext, chain_iv = _open_cbc(suite, version, ctype, fragment, seq, chain_iv)
            else:
                plaintext = _open_aead12(suite, ctype, fragment, seq)
        except (InvalidTag, ValueError) as exc:
            raise ValueError(f"record {index} (seq {seq}): {exc or 'bad tag'}") from exc
        if len(plaintext) > MAX_PLAINTEXT:
            raise ValueError(f"record {index}: plaintext of {len(plaintext)} bytes")
        records.append((ctype, plaintext))
        pos += 5 + length
        seq += 1
        index += 1
    return records


def _open_tls13(suite: dict, header: bytes, fragment: bytes, seq: int) -> tuple[int, bytes]:
    # RFC 8446 §5.2: opaque_type is always application_data; AAD is the header.
    if header[0] != 23:
        raise ValueError(f"TLS 1.3 outer type {header[0]}")
    if len(fragment) < 17:
        raise ValueError("TLS 1.3 record too short")
    inner = _aead(suite).decrypt(_xor_seq(suite["iv"], seq), fragment, header)
    # §5.4: zeros after the content type are padding; the type is the last non-zero byte.
    end = len(inner)
    while end > 0 and inner[end - 1] == 0:
        end -= 1
    if end == 0:
        raise ValueError("TLS 1.3 record has no content type")
    return inner[end - 1], inner[: end - 1]


def _open_aead12(suite: dict, ctype: int, fragment: bytes, seq: int) -> bytes:
    version = bytes([3, 3])
    if suite["cipher"] == "aes-gcm":
        # RFC 5288 §3: nonce = salt (4) | nonce_explicit (8, sent first in the record)
        if len(fragment) < 8 + 16:
            raise ValueError("GCM record too short")
        nonce = suite["iv"] + fragment[:8]
        ciphertext = fragment[8:]
    else:
        # RFC 7905 §2: nonce = IV XOR (0^32 | seq), no explicit part
        if len(fragment) < 16:
            raise ValueError("ChaCha20 record too short")
        nonce = _xor_seq(suite["iv"], seq)
        ciphertext = fragment
    plain_len = len(ciphertext) - 16
    aad = seq.to_bytes(8, "big") + bytes([ctype]) + version + plain_len.to_bytes(2, "big")
    return _aead(suite).decrypt(nonce, ciphertext, aad)


def _open_cbc(
    suite: dict, version: str, ctype: int, fragment: bytes, seq: int, chain_iv: bytes
) -> tuple[bytes, bytes]:
    """Returns (content, IV for the next record when the IV is chained)."""
    if version == "1.0":
        iv, ciphertext = chain_iv, fragment  # RFC 2246: last block of the previous record
    else:
        iv, ciphertext = fragment[:16], fragment[16:]  # RFC 4346/5246: explicit IV
    if not ciphertext or len(ciphertext) % 16:
        raise ValueError("CBC ciphertext is not a whole number of blocks")
    decryptor = Cipher(algorithms.AES(suite["key"]), modes.CBC(iv)).decryptor()
    block = decryptor.update(ciphertext) + decryptor.finalize()
    # GenericBlockCipher: content | MAC | padding | padding_length, padding bytes = padding_length
    pad = block[-1]
    mac_len = HASHES[suite["auth"]]().digest_size
    if pad + 1 + mac_len > len(block):
        raise ValueError("padding longer than the record")
    if any(b != pad for b in block[len(block) - pad - 1 :]):
        raise ValueError("bad padding")
    content = block[: len(block) - pad - 1 - mac_len]
    mac = block[len(content) : len(content) + mac_len]
    minor = MINOR[version]
    mac_input = (
        seq.to_bytes(8, "big")
        + bytes([ctype, 3, minor])
        + len(content).to_bytes(2, "big")
        + content
    )
    expected = hmac.new(suite["auth_key"], mac_input, HASHES[suite["auth"]]).digest()
    if not hmac.compare_digest(mac, expected):
        raise ValueError("bad MAC")
    return content, ciphertext[-16:]
