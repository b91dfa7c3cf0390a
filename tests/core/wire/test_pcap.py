"""The pcap writer: valid checksums, MSS segmentation, reading a capture back."""

from __future__ import annotations

import ipaddress
import itertools
import os
import struct

import pytest

from ktls_core.wire import pcap


def _flow(family: int = 4, mss: int = 1460, loopback: bool = False) -> pcap.TcpFlow:
    if family == 4:
        src, dst = "192.0.2.10", "198.51.100.7"
    else:
        src, dst = "2001:db8:1::10", "2001:db8:1::77"
    return pcap.TcpFlow(
        family=family,
        src=ipaddress.ip_address(src).packed,
        dst=ipaddress.ip_address(dst).packed,
        sport=443,
        dport=51514,
        ack=12345,
        mss=mss,
        src_mac=None if loopback else bytes.fromhex("0007433a1bf0"),
        dst_mac=None if loopback else bytes.fromhex("02e183220b69"),
    )


def _sum16(data: bytes) -> int:
    """A plain word-by-word one's complement sum, the RFC 1071 loop."""
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total


@pytest.mark.parametrize("n", [0, 1, 2, 3, 1459, 4000])
def test_checksum_matches_the_word_loop(n: int) -> None:
    data = os.urandom(n)
    assert pcap.checksum(data) == (~_sum16(data)) & 0xFFFF
    # A packet carrying its checksum sums to 0xffff.
    assert (
        _sum16(data + (b"\0" if n % 2 else b"") + pcap.checksum(data).to_bytes(2, "big")) == 0xFFFF
    )


def _frames(buf: bytes) -> list[bytes]:
    frames, pos = [], 24
    while pos < len(buf):
        _s, _u, caplen, _l = struct.unpack_from("<IIII", buf, pos)
        frames.append(buf[pos + 16 : pos + 16 + caplen])
        pos += 16 + caplen
    return frames


@pytest.mark.parametrize("family", [4, 6])
def test_segments_have_valid_checksums_and_mss(family: int) -> None:
    out = bytearray()
    w = pcap.PcapWriter(out.extend, pcap.LINKTYPE_ETHERNET)
    payload = os.urandom(5000)
    flow = _flow(family, pcap.mss_for_mtu(1500, family))
    assert w.tcp_segments(flow, 0xFFFFFF00, payload) == 4
    frames = _frames(bytes(out))
    iphl = 20 if family == 4 else 40
    seqs = []
    for i, f in enumerate(frames):
        ip = f[14:]
        tcp_part = ip[iphl:]
        assert len(ip) <= 1500
        if family == 4:
            assert _sum16(ip[:20]) == 0xFFFF
            pseudo = ip[12:20] + struct.pack("!xBH", 6, len(tcp_part))
        else:
            pseudo = ip[8:40] + struct.pack("!IxxxB", len(tcp_part), 6)
        assert _sum16(pseudo + tcp_part + (b"\0" if len(tcp_part) % 2 else b"")) == 0xFFFF
        seqs.append(struct.unpack_from("!I", tcp_part, 4)[0])
        flags = tcp_part[13]
        assert flags & pcap.TH_PUSH == (pcap.TH_PUSH if i == len(frames) - 1 else 0)
    mss = flow.mss
    assert seqs == [(0xFFFFFF00 + i * mss) & 0xFFFFFFFF for i in range(4)]  # wraps at 2**32
    segs = pcap.read_segments(bytes(out))
    stream, key = pcap.reassemble(segs)
    assert stream == payload and key[1] == 443


def test_loopback_uses_dlt_null_and_reads_back() -> None:
    out = bytearray()
    w = pcap.PcapWriter(out.extend, pcap.LINKTYPE_NULL)
    w.tcp_segments(_flow(6, 16324, loopback=True), 7, b"abc" * 10000)
    assert struct.unpack_from("<I", out, 20)[0] == pcap.LINKTYPE_NULL
    assert struct.unpack_from("<I", out, 24 + 16)[0] == pcap.BSD_AF_INET6
    stream, _key = pcap.reassemble(pcap.read_segments(bytes(out)))
    assert stream == b"abc" * 10000


def test_reassembly_keeps_retransmissions_once_and_reports_holes() -> None:
    out = bytearray()
    w = pcap.PcapWriter(out.extend)
    flow = _flow(mss=100)
    w.tcp_segments(flow, 1000, b"a" * 250)
    w.tcp_segments(flow, 1100, b"a" * 150)  # a retransmission of the tail
    w.tcp_segments(flow, 1250, b"b" * 10)
    stream, _ = pcap.reassemble(pcap.read_segments(bytes(out)))
    assert stream == b"a" * 250 + b"b" * 10
    holed = bytearray()
    w2 = pcap.PcapWriter(holed.extend)
    w2.tcp_segments(flow, 0, b"x" * 10)
    w2.tcp_segments(flow, 20, b"y" * 10)
    with pytest.raises(pcap.PcapError, match=r"bytes 10\.\.19") as info:
        pcap.reassemble(pcap.read_segments(bytes(holed)))
    assert not isinstance(info.value, pcap.NoPayloadError)  # a cut must not hide a hole
    with pytest.raises(pcap.NoPayloadError):
        pcap.reassemble(pcap.read_segments(bytes(holed)), sport=444)


def _capture(sizes: tuple[int, ...] = (100, 250, 7)) -> tuple[bytes, list[int], bytes]:
    """A capture of one segment per size (MSS 1000), the offsets of its record
    headers (and the file's end), and the stream it carries."""
    out = bytearray()
    w = pcap.PcapWriter(out.extend)
    stream = b""
    for i, size in enumerate(sizes):
        payload = bytes([65 + i]) * size
        w.tcp_segments(_flow(mss=1000), len(stream), payload)
        stream += payload
    bounds, pos = [], 24
    while pos < len(out):
        bounds.append(pos)
        pos += 16 + struct.unpack_from("<I", out, pos + 8)[0]
    return bytes(out), [*bounds, len(out)], stream


def test_a_capture_cut_anywhere_gives_its_complete_frames_and_the_cut() -> None:
    data, bounds, stream = _capture()
    sizes = [100, 250, 7]
    for cut in range(24, len(data) + 1):
        capture = pcap.read_capture(data[:cut])
        whole = sum(1 for b in bounds[1:] if b <= cut)  # frames wholly in the file
        assert capture.frames == whole
        assert b"".join(s.payload for s in capture.segments) == stream[: sum(sizes[:whole])]
        if cut in bounds:
            assert capture.cut is None
            if whole:
                assert pcap.read_segments(data[:cut]) == capture.segments
            continue
        at = bounds[whole]
        c = capture.cut
        assert c is not None and (c.frame, c.offset, c.present) == (
            whole + 1,
            at,
            cut - at if cut - at < 16 else cut - at - 16,
        )
        assert c.in_header == (cut - at < 16)
        assert c.wanted == (16 if c.in_header else 54 + sizes[whole])
        if c.in_header:
            assert str(c) == (
                f"capture cut short in the middle of frame {whole + 1}"
                f" (a 16-byte record header, only {cut - at} bytes in the file)"
            )
        else:
            assert str(c) == (
                f"capture cut short in the middle of frame {whole + 1}"
                f" ({c.wanted} captured bytes announced, only {c.present} in the file)"
            )
        # read_segments() wants a whole capture: the cut is its error.
        with pytest.raises(pcap.PcapError, match=f"frame {whole + 1} "):
            pcap.read_segments(data[:cut])


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "not a pcap file (empty)"),
        (b"\xd4\xc3", "capture cut short in its file header (2 of 24 bytes)"),
        (b"\xa1\xb2\xc3\xd4" + bytes(6), "capture cut short in its file header (10 of 24"),
        (b"\xd4\xc3\xb2\xa1" + bytes(19), "capture cut short in its file header (23 of 24"),
        (b"\xd4\xc4", "not a pcap file (bad magic number)"),
        (b"\0" * 40, "not a pcap file (bad magic number)"),
    ],
)
def test_a_cut_or_bad_file_header_is_an_error(data: bytes, message: str) -> None:
    with pytest.raises(pcap.PcapError) as info:
        pcap.read_capture(data)
    assert str(info.value).startswith(message)


def test_a_bogus_captured_length_is_an_error_even_at_the_end() -> None:
    """Not a cut: past a length no frame has, nothing says where the next frame starts."""
    data, bounds, _stream = _capture()
    for frame, at in enumerate(bounds[:-1], start=1):
        bad = bytearray(data)
        bad[at + 8 : at + 12] = (pcap.SNAPLEN + 1).to_bytes(4, "little")
        for end in (at + 12, at + 15, at + 16, at + 100, len(bad)):
            with pytest.raises(pcap.PcapError, match=f"frame {frame}: bogus captured length"):
                pcap.read_capture(bytes(bad[:end]))
    # A small snaplen in the file header still allows 64 KiB frames (some writers
    # exceed theirs); more than 64 KiB then is bogus.
    small = bytearray(data)
    small[16:20] = (96).to_bytes(4, "little")
    assert pcap.read_capture(bytes(small)).frames == 3
    small[bounds[1] + 8 : bounds[1] + 12] = (0x10000).to_bytes(4, "little")
    with pytest.raises(pcap.PcapError, match=r"frame 2: bogus captured length 65536 \(over 65535"):
        pcap.read_capture(bytes(small))


def test_big_endian_captures_are_cut_the_same_way() -> None:
    data, bounds, stream = _capture()
    swapped = bytearray(data[:24])
    for a, b, c in ((0, 4, "I"), (4, 6, "H"), (6, 8, "H"), (8, 12, "i"), (12, 24, "III")):
        swapped[a:b] = struct.pack(">" + c, *struct.unpack("<" + c, data[a:b]))
    for at, end in itertools.pairwise(bounds):
        swapped += struct.pack(">IIII", *struct.unpack_from("<IIII", data, at))
        swapped += data[at + 16 : end]
    capture = pcap.read_capture(bytes(swapped[: bounds[2] + 20]))
    assert capture.frames == 2 and b"".join(s.payload for s in capture.segments) == stream[:350]
    assert capture.cut is not None and (capture.cut.frame, capture.cut.present) == (3, 4)
