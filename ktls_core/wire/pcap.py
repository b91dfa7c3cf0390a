"""A pcap(5) writer for the frames a connection puts on its egress interface.

What `ktls send --pcap FILE` writes: the TLS byte stream cut into TCP segments of
at most the MSS of the egress interface's MTU (tcp_maxseg(): MTU minus the IP and
TCP headers, no options), each in an IPv4 or IPv6 packet in an Ethernet frame
(DLT_EN10MB), or behind the 4-byte address-family word of DLT_NULL on lo0 as
`tcpdump -i lo0` records it on FreeBSD. Checksums are real, so tshark and
Wireshark accept every frame; sequence numbers are those the connection reserved
(tcp.py), so the captures of successive sends on one connection join up.

Sans-IO: the writer gets a `write(bytes)` callable; it never opens a file.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable
from typing import Any, NamedTuple

# pcap(5) file header: magic, version 2.4, thiszone, sigfigs, snaplen, linktype.
PCAP_MAGIC = 0xA1B2C3D4
LINKTYPE_NULL = 0  # BSD loopback: a host-order u32 address family, then the packet
LINKTYPE_ETHERNET = 1
SNAPLEN = 262144

# DLT_NULL address families as FreeBSD's lo0 writes them (sys/sys/socket.h).
BSD_AF_INET = 2
BSD_AF_INET6 = 28

ETHERTYPE_IP = 0x0800
ETHERTYPE_IPV6 = 0x86DD
IPPROTO_TCP = 6
IPV4_HLEN = 20
IPV6_HLEN = 40
TCP_HLEN = 20
TH_FIN, TH_SYN, TH_RST, TH_PUSH, TH_ACK = 0x01, 0x02, 0x04, 0x08, 0x10
TCP_WINDOW = 65535
IP_DF = 0x4000
IP_TTL = 64

_FILE_HDR = struct.Struct("<IHHiIII")
_REC_HDR = struct.Struct("<IIII")
_ETHER = struct.Struct("!6s6sH")
_IPV4 = struct.Struct("!BBHHHBBH4s4s")
_IPV6 = struct.Struct("!IHBB16s16s")
_TCP = struct.Struct("!HHIIBBHHH")


def mss_for_mtu(mtu: int, family: int) -> int:
    """tcp_maxseg() of a connection without TCP options: MTU minus IP and TCP headers."""
    return mtu - (IPV4_HLEN if family == 4 else IPV6_HLEN) - TCP_HLEN


def checksum(data: bytes | bytearray | memoryview, initial: int = 0) -> int:
    """The Internet checksum (RFC 1071) of data, folded with `initial` (a partial sum).

    Because 2**16 == 1 (mod 0xffff), a big-endian integer is congruent to the sum of
    its 16-bit words: one int.from_bytes and one modulo replace the word loop.
    """
    value = int.from_bytes(data, "big")
    if len(data) % 2:
        value <<= 8  # an odd tail is padded with a zero byte
    total = (value + initial) % 0xFFFF
    if total == 0 and (value or initial):
        total = 0xFFFF  # one's complement: a non-zero sum is never +0
    return (~total) & 0xFFFF


def partial_sum(data: bytes | bytearray | memoryview) -> int:
    """The unfolded sum of data's words (mod 0xffff), to be passed as `initial`."""
    value = int.from_bytes(data, "big")
    if len(data) % 2:
        value <<= 8
    return value % 0xFFFF


class TcpFlow(NamedTuple):
    """One direction of a connection as it appears on the wire of its egress interface.

    `src_mac`/`dst_mac` None means a loopback interface (DLT_NULL framing).
    `src`/`dst` are packed addresses (4 or 16 bytes).
    """

    family: int
    src: bytes
    dst: bytes
    sport: int
    dport: int
    ack: int
    mss: int
    src_mac: bytes | None = None
    dst_mac: bytes | None = None

    @property
    def linktype(self) -> int:
        return LINKTYPE_NULL if self.src_mac is None else LINKTYPE_ETHERNET


class PcapWriter:
    """Writes pcap(5) records through `write`; the file header goes out with the first frame."""

    def __init__(
        self,
        write: Callable[[bytes], object],
        linktype: int = LINKTYPE_ETHERNET,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.write = write
        self.linktype = linktype
        self.clock = clock
        self.frames = 0
        self._started = False
        self._ip_id = 0

    def start(self) -> None:
        if not self._started:
            self._started = True
            self.write(_FILE_HDR.pack(PCAP_MAGIC, 2, 4, 0, 0, SNAPLEN, self.linktype))

    def frame(self, packet: bytes) -> None:
        """One captured frame, timestamped now (microsecond resolution)."""
        self.start()
        now = self.clock()
        sec = int(now)
        usec = int((now - sec) * 1_000_000)
        length = len(packet)
        self.write(_REC_HDR.pack(sec, usec, min(length, SNAPLEN), length) + packet[:SNAPLEN])
        self.frames += 1

    def tcp_segments(
        self, flow: TcpFlow, seq: int, payload: bytes | bytearray | memoryview, *, push: bool = True
    ) -> int:
        """Cut `payload` into MSS-sized segments starting at TCP sequence `seq`.

        The last segment carries PSH when `push` (tcp_output() sets it when the
        send buffer empties). Returns the number of frames written.
        """
        view = memoryview(payload).cast("B")
        total = len(view)
        mss = max(1, flow.mss)
        count = 0
        off = 0
        while off < total or (total == 0 and count == 0):
            chunk = view[off : off + mss]
            last = off + len(chunk) >= total
            flags = TH_ACK | (TH_PUSH if push and last else 0)
            self.frame(self._packet(flow, (seq + off) & 0xFFFFFFFF, flags, chunk))
            off += len(chunk)
            count += 1
            if total == 0:
                break
        return count

    def _packet(self, flow: TcpFlow, seq: int, flags: int, chunk: memoryview) -> bytes:
        tcp_len = TCP_HLEN + len(chunk)
        pseudo = flow.src + flow.dst + struct.pack("!IxxxB", tcp_len, IPPROTO_TCP)
        header = _TCP.pack(
            flow.sport,
            flow.dport,
            seq,
            flow.ack & 0xFFFFFFFF,
            (TCP_HLEN // 4) << 4,
            flags,
            TCP_WINDOW,
            0,
            0,
        )
        csum = checksum(chunk, partial_sum(pseudo) + partial_sum(header))
        tcp = header[:16] + struct.pack("!H", csum) + header[18:]
        if flow.family == 4:
            self._ip_id = (self._ip_id + 1) & 0xFFFF
            ip = _IPV4.pack(
                0x45,
                0,
                IPV4_HLEN + tcp_len,
                self._ip_id,
                IP_DF,
                IP_TTL,
                IPPROTO_TCP,
                0,
                flow.src,
                flow.dst,
            )
            ip = ip[:10] + struct.pack("!H", checksum(ip)) + ip[12:]
            ethertype, bsd_af = ETHERTYPE_IP, BSD_AF_INET
        else:
            ip = _IPV6.pack(6 << 28, tcp_len, IPPROTO_TCP, IP_TTL, flow.src, flow.dst)
            ethertype, bsd_af = ETHERTYPE_IPV6, BSD_AF_INET6
        if flow.src_mac is None:
            link = struct.pack("<I", bsd_af)
        else:
            link = _ETHER.pack(flow.dst_mac or b"\xff" * 6, flow.src_mac, ethertype)
        return b"".join((link, ip, tcp, chunk))


# -- reading a capture back (`ktls decode --pcap`) ---------------------------------------


class PcapError(ValueError):
    """The capture cannot be read; the message says where and why."""


class NoPayloadError(PcapError):
    """The capture holds no TCP payload of the connection asked for."""


_ETHERTYPE_VLAN = 0x8100
_ETHERTYPE_QINQ = 0x88A8


class Segment(NamedTuple):
    """One TCP segment's payload as captured."""

    src: str
    sport: int
    dst: str
    dport: int
    seq: int
    payload: bytes


class PcapCut(NamedTuple):
    """Where a capture ends in the middle of a frame: what a writer killed mid-write
    leaves (tshark: "appears to have been cut short in the middle of a packet")."""

    frame: int  # 1-based, as tshark numbers frames
    offset: int  # file offset of the frame's record header
    wanted: int  # the record header's 16 bytes, or the captured length it announced
    present: int  # bytes of that in the file
    in_header: bool  # the cut fell inside the 16-byte record header

    def __str__(self) -> str:
        if self.in_header:
            what = f"a {self.wanted}-byte record header, only {self.present} bytes in the file"
        else:
            what = f"{self.wanted} captured bytes announced, only {self.present} in the file"
        return f"capture cut short in the middle of frame {self.frame} ({what})"


class Capture(NamedTuple):
    """What read_capture() found: the complete frames' TCP segments, and the cut if any."""

    segments: list[Segment]
    frames: int  # complete frames read
    cut: PcapCut | None


def read_segments(data: bytes | bytearray | memoryview) -> list[Segment]:
    """The TCP segments with payload in a whole pcap(5) capture; a cut last frame is
    a PcapError too (read_capture() takes the frames before it)."""
    capture = read_capture(data)
    if capture.cut is not None:
        raise PcapError(str(capture.cut))
    return capture.segments


def read_capture(data: bytes | bytearray | memoryview) -> Capture:
    """The TCP segments with payload in a pcap(5) capture (Ethernet, with or without
    802.1Q tags, or DLT_NULL); other frames are skipped.

    A file that ends inside its last frame (record header or data) gives the frames
    before it and `cut`, as libpcap and tshark read such a file. A bad file header,
    or a captured length no capture can have, is a PcapError wherever it is: past
    it nothing says where the next frame starts.
    """
    import ipaddress

    mv = memoryview(data).cast("B")
    magics = (PCAP_MAGIC.to_bytes(4, "little"), PCAP_MAGIC.to_bytes(4, "big"))
    if len(mv) < _FILE_HDR.size:
        head = bytes(mv[:4])
        if not head:
            raise PcapError("not a pcap file (empty)")
        if not any(m.startswith(head) for m in magics):
            raise PcapError("not a pcap file (bad magic number)")
        raise PcapError(f"capture cut short in its file header ({len(mv)} of 24 bytes)")
    if bytes(mv[:4]) == magics[0]:
        order = "<"
    elif bytes(mv[:4]) == magics[1]:
        order = ">"
    else:
        raise PcapError("not a pcap file (bad magic number)")
    snaplen, linktype = struct.unpack_from(order + "II", mv, 16)
    linktype &= 0xFFFF
    if linktype not in (LINKTYPE_NULL, LINKTYPE_ETHERNET):
        raise PcapError(f"link type {linktype} is neither Ethernet nor BSD loopback")
    # libpcap's ceiling; a small snaplen still allows 64 KiB, as some writers exceed it.
    limit = min(SNAPLEN, max(snaplen, 0xFFFF))
    rec = struct.Struct(order + "IIII")
    segments: list[Segment] = []
    pos = _FILE_HDR.size
    frame = 0
    while pos < len(mv):
        frame += 1
        left = len(mv) - pos
        if left >= 12:  # the captured length is there, even in a cut record header
            caplen = struct.unpack_from(order + "I", mv, pos + 8)[0]
            if caplen > limit:
                raise PcapError(f"frame {frame}: bogus captured length {caplen} (over {limit})")
        if left < rec.size:
            return Capture(segments, frame - 1, PcapCut(frame, pos, rec.size, left, True))
        if rec.size + caplen > left:
            cut = PcapCut(frame, pos, caplen, left - rec.size, False)
            return Capture(segments, frame - 1, cut)
        pos += rec.size
        seg = _parse_frame(bytes(mv[pos : pos + caplen]), linktype, ipaddress)
        pos += caplen
        if seg is not None:
            segments.append(seg)
    return Capture(segments, frame, None)


def _parse_frame(pkt: bytes, linktype: int, ipaddress: Any) -> Segment | None:
    if linktype == LINKTYPE_NULL:
        if len(pkt) < 4:
            return None
        af = int.from_bytes(pkt[:4], "little")
        off = 4
        ethertype = (
            ETHERTYPE_IP if af == BSD_AF_INET else ETHERTYPE_IPV6 if af in (24, 28, 30) else 0
        )
    else:
        if len(pkt) < 14:
            return None
        ethertype = int.from_bytes(pkt[12:14], "big")
        off = 14
        while ethertype in (_ETHERTYPE_VLAN, _ETHERTYPE_QINQ) and len(pkt) >= off + 4:
            ethertype = int.from_bytes(pkt[off + 2 : off + 4], "big")
            off += 4
    if ethertype == ETHERTYPE_IP:
        if len(pkt) < off + IPV4_HLEN or pkt[off] >> 4 != 4:
            return None
        ihl = (pkt[off] & 0x0F) * 4
        total = int.from_bytes(pkt[off + 2 : off + 4], "big")
        if pkt[off + 9] != IPPROTO_TCP or ihl < IPV4_HLEN:
            return None
        src = ipaddress.ip_address(pkt[off + 12 : off + 16]).compressed
        dst = ipaddress.ip_address(pkt[off + 16 : off + 20]).compressed
        end = min(len(pkt), off + total)
        off += ihl
    elif ethertype == ETHERTYPE_IPV6:
        if len(pkt) < off + IPV6_HLEN or pkt[off + 6] != IPPROTO_TCP:
            return None
        plen = int.from_bytes(pkt[off + 4 : off + 6], "big")
        src = ipaddress.ip_address(pkt[off + 8 : off + 24]).compressed
        dst = ipaddress.ip_address(pkt[off + 24 : off + 40]).compressed
        end = min(len(pkt), off + IPV6_HLEN + plen)
        off += IPV6_HLEN
    else:
        return None
    if end < off + TCP_HLEN:
        return None
    sport, dport, seq = struct.unpack_from("!HHI", pkt, off)
    doff = (pkt[off + 12] >> 4) * 4
    payload = pkt[off + doff : end]
    if not payload:
        return None
    return Segment(src, sport, dst, dport, seq, payload)


def reassemble(
    segments: list[Segment], *, src: str | None = None, sport: int | None = None
) -> tuple[bytes, tuple[str, int, str, int]]:
    """The byte stream of one direction of one connection, in TCP sequence order.

    The flow is the one sending from `src`:`sport` (or the first flow seen);
    retransmitted bytes are kept once; a hole is a PcapError naming the offset.
    """
    flows = [
        s for s in segments if (src is None or s.src == src) and (sport is None or s.sport == sport)
    ]
    if not flows:
        raise NoPayloadError("no TCP payload from the connection in the capture")
    first = flows[0]
    key = (first.src, first.sport, first.dst, first.dport)
    mine = [s for s in flows if (s.src, s.sport, s.dst, s.dport) == key]
    base = min(mine, key=lambda s: (s.seq - first.seq) & 0xFFFFFFFF).seq
    pieces = sorted(((s.seq - base) & 0xFFFFFFFF, s.payload) for s in mine)
    out = bytearray()
    for off, payload in pieces:
        if off > len(out):
            raise PcapError(f"bytes {len(out)}..{off - 1} of the stream are missing")
        out += payload[len(out) - off :]
    return bytes(out), key
