"""The sources of `ktls send --repeat N`: the same data N times, in any buffer sizes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ktls_cli.adapters import BytesSource, FdSource


def _drain(source: BytesSource | FdSource, size: int) -> bytes:
    out = bytearray()
    buf = memoryview(bytearray(size))
    while n := source.fill(buf):
        out += buf[:n]
    return bytes(out)


@pytest.mark.parametrize("bufsize", [1, 7, 100, 4096, 1 << 20])
def test_bytes_repeated(bufsize: int) -> None:
    data = os.urandom(100)
    source = BytesSource(data, repeat=1000)
    assert source.size() == 100_000
    assert _drain(source, bufsize) == data * 1000


def test_bytes_once_and_empty() -> None:
    assert _drain(BytesSource(b"hello"), 3) == b"hello"
    source = BytesSource(b"", repeat=5)
    assert source.size() == 0 and _drain(source, 10) == b""


@pytest.mark.parametrize("bufsize", [3, 1000, 1 << 20])
def test_a_regular_file_read_again_for_every_call(tmp_path: Path, bufsize: int) -> None:
    path = tmp_path / "f"
    data = os.urandom(1234)
    path.write_bytes(data)
    source = FdSource.open(str(path), repeat=7)
    try:
        assert source.size() == 7 * 1234
        assert _drain(source, bufsize) == data * 7
    finally:
        source.close()


def test_repeat_needs_a_regular_file(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    # Both ends open first, so the blocking open() inside FdSource.open returns at once.
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    writer = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
    try:
        with pytest.raises(OSError) as info:
            FdSource.open(str(fifo), repeat=2)
        assert info.value.errno == 29
    finally:
        os.close(writer)
        os.close(reader)
