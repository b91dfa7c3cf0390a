"""Baseline of figure 2: Python's ssl writing a file through a MemoryBIO, no ktls.

    python bench/_ssl_memorybio.py FILE CERT KEY 1.2|1.3 [--record N]

A client and a server SSLObject shake hands in memory (TLS 1.2
ECDHE-ECDSA-AES128-GCM-SHA256, or TLS 1.3 with the suite OpenSSL's configuration
allows: the benchmark sets OPENSSL_CONF to one that allows only
TLS_CHACHA20_POLY1305_SHA256); then the server writes FILE, read in 1 MiB chunks,
N bytes per SSLObject.write() (one record each, default 16384), and the records
are drained from the outgoing BIO to /dev/null after every chunk. The negotiated
suite is checked. Prints the loop's seconds on stdout.
"""

from __future__ import annotations

import os
import ssl
import sys
import time

CHUNK = 1 << 20
EXPECT = {"1.2": "ECDHE-ECDSA-AES128-GCM-SHA256", "1.3": "TLS_CHACHA20_POLY1305_SHA256"}


def handshake(cert: str, key: str, version: str) -> tuple[ssl.SSLObject, ssl.MemoryBIO]:
    tls = ssl.TLSVersion.TLSv1_2 if version == "1.2" else ssl.TLSVersion.TLSv1_3
    sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    sctx.load_cert_chain(cert, key)
    cctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    cctx.check_hostname = False
    cctx.verify_mode = ssl.CERT_NONE
    for ctx in (sctx, cctx):
        ctx.minimum_version = ctx.maximum_version = tls
        if version == "1.2":
            ctx.set_ciphers(EXPECT["1.2"])
    s_in, s_out, c_in, c_out = (ssl.MemoryBIO() for _ in range(4))
    server = sctx.wrap_bio(s_in, s_out, server_side=True)
    client = cctx.wrap_bio(c_in, c_out, server_side=False)
    done = {"s": False, "c": False}
    for _ in range(20):
        for name, obj in (("c", client), ("s", server)):
            if not done[name]:
                try:
                    obj.do_handshake()
                    done[name] = True
                except ssl.SSLWantReadError:
                    pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if all(done.values()):
            break
    suite = server.cipher()
    if suite is None or suite[0] != EXPECT[version]:
        sys.exit(f"ssl baseline: negotiated {suite}, expected {EXPECT[version]}")
    return server, s_out


def main(argv: list[str]) -> int:
    path, cert, key, version = argv[:4]
    size = int(argv[argv.index("--record") + 1]) if "--record" in argv else 16384
    server, outgoing = handshake(cert, key, version)
    write, drain = server.write, outgoing.read
    buf = bytearray(CHUNK)
    mv = memoryview(buf)
    sink = os.open(os.devnull, os.O_WRONLY)
    start = time.perf_counter()
    fd = os.open(path, os.O_RDONLY)
    while True:
        n = os.readv(fd, [buf])
        if n == 0:
            break
        for i in range(0, n, size):
            write(mv[i : min(i + size, n)])
        os.write(sink, drain())
    os.close(fd)
    print(f"{time.perf_counter() - start:.6f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
