"""Files and streams for the transmit path: the core reads a `Source` and writes a `Wire`.

The core (ktls_core.tls.output) never opens a file. These adapters give it the
data of a send (--data, --hex, --file, --stdin) and take its ready bytes to
--out (the TLS byte stream), --pcap (frames on the egress interface) or both.
A real socket (issue 7) is one more Wire: `transmit()` calls `sendall()`.
"""

from __future__ import annotations

import os
import stat
from typing import IO, TYPE_CHECKING

if TYPE_CHECKING:
    from ktls_core.tls.output import Link, Wire
    from ktls_core.wire.pcap import PcapWriter


class BytesSource:
    """--data / --hex: bytes already in memory (bounded by the argument length),
    `repeat` times over for send --repeat."""

    def __init__(self, data: bytes, repeat: int = 1) -> None:
        self._data = memoryview(data)
        self._total = len(data) * repeat
        self._pos = 0
        if repeat > 1 and data:
            # Copies come from a tile of whole copies of at least 64 KiB, so 100
            # bytes x 100,000 cost sixteen slice copies per MiB, not ten thousand.
            self._data = memoryview(data * max(1, -(-65536 // len(data))))
        self._period = len(data)

    def size(self) -> int:
        return self._total

    def fill(self, buf: memoryview) -> int:
        want = min(len(buf), self._total - self._pos)
        done = 0
        while done < want:
            start = self._pos % self._period if self._period else 0
            n = min(want - done, len(self._data) - start)
            buf[done : done + n] = self._data[start : start + n]
            done += n
            self._pos += n
        return done


class FdSource:
    """--file (a regular file: its size is known, so the send is reserved whole) or
    --stdin (a stream: reserved batch by batch). Reads go straight into the core's
    preallocated buffers; nothing is held beyond one batch."""

    def __init__(
        self, fd: int, *, regular: bool, size: int | None, owned: bool = False, repeat: int = 1
    ) -> None:
        self.fd = fd
        self.regular = regular
        self._size = size
        self._owned = owned  # opened here (--file), not inherited (stdin)
        # send --repeat: a regular file read again from its start for every call.
        self._repeat = repeat
        self._pos = 0

    @classmethod
    def open(cls, path: str, repeat: int = 1) -> FdSource:
        fd = os.open(path, os.O_RDONLY)
        try:
            st = os.fstat(fd)
            if stat.S_ISDIR(st.st_mode):
                raise IsADirectoryError(21, "Is a directory", path)
        except BaseException:
            os.close(fd)
            raise
        regular = stat.S_ISREG(st.st_mode)
        if repeat > 1 and not regular:
            os.close(fd)
            raise OSError(29, "Illegal seek (--repeat reads a regular file again)", path)
        size = st.st_size if regular else None
        return cls(fd, regular=regular, size=size, owned=True, repeat=repeat)

    def size(self) -> int | None:
        return None if self._size is None else self._size * self._repeat

    def fill(self, buf: memoryview) -> int:
        if self._repeat > 1:
            return self._fill_again(buf)
        total = 0
        want = len(buf)
        while total < want:
            n = os.readv(self.fd, [buf[total:]])
            if n == 0:
                break
            total += n
        return total

    def fill_views(self, views: list[memoryview]) -> int:
        """fill() into several buffers in order, by readv(2): a TLS 1.3 send reads each
        record's payload straight into its slot (ktls_core.tls.output._fill_slots)."""
        if self._repeat > 1:
            from ktls_core.tls.output import fill_each

            return fill_each(self._fill_again, views)
        total = 0
        views = list(views)
        while views:
            n = os.readv(self.fd, views)
            if n == 0:
                break
            total += n
            while views and n >= len(views[0]):
                n -= len(views[0])
                views.pop(0)
            if n:
                views[0] = views[0][n:]
        return total

    def _fill_again(self, buf: memoryview) -> int:
        """pread(2) from the file's start again at every call (send --repeat)."""
        assert self._size is not None
        end = self._size * self._repeat
        total = 0
        while total < len(buf) and self._pos < end and self._size:
            offset = self._pos % self._size
            want = min(len(buf) - total, self._size - offset, end - self._pos)
            n = os.preadv(self.fd, [buf[total : total + want]], offset)
            if n == 0:
                break  # the file shrank: a short send, as a short read makes one
            total += n
            self._pos += n
        return total

    def close(self) -> None:
        if self._owned:
            self._owned = False
            os.close(self.fd)


class StreamSource:
    """A binary stream without a file descriptor (a test's BytesIO for stdin)."""

    def __init__(self, stream: IO[bytes]) -> None:
        self.stream = stream

    def size(self) -> None:
        return None

    def fill(self, buf: memoryview) -> int:
        total = 0
        while total < len(buf):
            n = self.stream.readinto(buf[total:])  # type: ignore[attr-defined]
            if not n:
                break
            total += n
        return total


class OutWire:
    """--out FILE: the TLS byte stream in order (what the peer's TCP delivers)."""

    def __init__(self, fd: int, *, close: bool) -> None:
        self.fd = fd
        self._close = close

    @classmethod
    def open(cls, path: str) -> OutWire:
        if path == "-":
            return cls(1, close=False)
        return cls(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), close=True)

    def transmit(self, data: memoryview, tcp_seq: int, link: Link) -> None:
        view = data
        while len(view):
            n = os.write(self.fd, view)
            view = view[n:]

    def close(self) -> None:
        if self._close:
            os.close(self.fd)


class StreamWire:
    """--out - when stdout is not a file descriptor (tests): write to a binary stream."""

    def __init__(self, stream: IO[bytes]) -> None:
        self.stream = stream

    def transmit(self, data: memoryview, tcp_seq: int, link: Link) -> None:
        self.stream.write(data)

    def close(self) -> None:
        self.stream.flush()


class PcapWire:
    """--pcap FILE: Ethernet (or lo0's DLT_NULL) frames, cut at the egress MSS."""

    def __init__(self, path: str) -> None:
        self.path = path
        # Opened now, so a bad path fails before the send reserves anything; the
        # file header waits for the first frame, which tells the link type.
        self._fh: IO[bytes] = open(path, "wb")  # noqa: SIM115 - closed in close()
        self._writer: PcapWriter | None = None
        self.frames = 0

    def _open(self, link: Link) -> PcapWriter:
        from ktls_core.wire.pcap import PcapWriter

        self._writer = PcapWriter(self._fh.write, link.flow.linktype)
        return self._writer

    def transmit(self, data: memoryview, tcp_seq: int, link: Link) -> None:
        writer = self._writer or self._open(link)
        self.frames += writer.tcp_segments(link.flow, tcp_seq, data)

    def close(self) -> None:
        """Close the file; a send without frames still leaves a valid (empty) capture."""
        if self._writer is None:
            from ktls_core.wire.pcap import LINKTYPE_ETHERNET, PcapWriter

            PcapWriter(self._fh.write, LINKTYPE_ETHERNET).start()
        self._fh.close()


class TeeWire:
    """Several wires at once (--out and --pcap)."""

    def __init__(self, wires: list[Wire]) -> None:
        self.wires = wires
        # The smallest batch any of them asks for (output.Wire).
        sizes = [getattr(w, "batch_bytes", None) for w in wires]
        if any(size is not None for size in sizes):
            self.batch_bytes = min(size for size in sizes if size is not None)

    def transmit(self, data: memoryview, tcp_seq: int, link: Link) -> None:
        for wire in self.wires:
            wire.transmit(data, tcp_seq, link)
