"""The pcap writer: valid checksums, MSS segmentation, reading a capture back."""

from __future__ import annotations

import ipaddress
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
    with pytest.raises(pcap.PcapError, match=r"bytes 10\.\.19"):
        pcap.reassemble(pcap.read_segments(bytes(holed)))


@pytest.mark.parametrize("cut", [3, 30, 50])
def test_truncated_captures_are_clean_errors(cut: int) -> None:
    out = bytearray()
    pcap.PcapWriter(out.extend).tcp_segments(_flow(), 0, b"q" * 100)
    with pytest.raises(pcap.PcapError):
        pcap.read_segments(bytes(out[:cut]))
    with pytest.raises(pcap.PcapError, match="magic"):
        pcap.read_segments(b"\0" * 40)
