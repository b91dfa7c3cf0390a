"""Baseline of figures 2 and 3: a bare AEAD loop in one Python process, no ktls.

    python bench/_bare_aead.py records FILE aes-128-gcm|chacha20-poly1305 [--record N]
        Read FILE in 1 MiB chunks and seal every N-byte slice (default 16384) with
        encrypt_into into one reused output buffer: the fastest plain Python loop
        over the same file (figure 2).
    python bench/_bare_aead.py small COUNT SIZE
        COUNT calls of AESGCM.encrypt on SIZE bytes (figure 3).

Prints the seconds spent in the loop itself on stdout (start-up excluded), so the
benchmark can show both the whole process and the loop.
"""

from __future__ import annotations

import os
import sys
import time

from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

CHUNK = 1 << 20


def records(path: str, cipher: str, size: int) -> float:
    key = os.urandom(16 if cipher == "aes-128-gcm" else 32)
    aead = AESGCM(key) if cipher == "aes-128-gcm" else ChaCha20Poly1305(key)
    encrypt_into = aead.encrypt_into
    nonce, aad = bytearray(12), bytearray(13)
    buf = bytearray(CHUNK)
    mv = memoryview(buf)
    out = memoryview(bytearray(size + 16))
    start = time.perf_counter()
    fd = os.open(path, os.O_RDONLY)
    while True:
        n = os.readv(fd, [buf])
        if n == 0:
            break
        for i in range(0, n, size):
            piece = mv[i : min(i + size, n)]
            encrypt_into(nonce, piece, aad, out[: len(piece) + 16])
    os.close(fd)
    return time.perf_counter() - start


def small(count: int, size: int) -> float:
    aead = AESGCM(os.urandom(16))
    encrypt = aead.encrypt
    nonce, aad, data = os.urandom(12), os.urandom(13), os.urandom(size)
    start = time.perf_counter()
    for _ in range(count):
        encrypt(nonce, data, aad)
    return time.perf_counter() - start


def main(argv: list[str]) -> int:
    if argv[0] == "records":
        size = int(argv[argv.index("--record") + 1]) if "--record" in argv else 16384
        print(f"{records(argv[1], argv[2], size):.6f}")
    elif argv[0] == "small":
        print(f"{small(int(argv[1]), int(argv[2])):.6f}")
    else:
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
