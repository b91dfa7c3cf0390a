"""Shell completion of connection names: local ends first, then the foreign ends."""

from __future__ import annotations

from typing import Any

from click.shell_completion import ShellComplete

from ktls_cli.main import cli


def _complete(state: str, args: list[str], incomplete: str) -> list[str]:
    comp = ShellComplete(cli, {}, "ktls", "_KTLS_COMPLETE")
    return [c.value for c in comp.get_completions(["--state", state, *args], incomplete)]


def test_connection_names_complete(ktls: Any, state: str) -> None:
    assert ktls("connect", "192.0.2.10:443", "198.51.100.7:1000", "--count", "3").exit == 0
    assert ktls("connect", "2001:db8:1::10.443", "2001:db8:1::77.5").exit == 0
    assert _complete(state, ["send"], "") == ["192.0.2.10:443", "2001:db8:1::10.443"]
    assert _complete(state, ["send"], "2001") == ["2001:db8:1::10.443"]
    assert _complete(state, ["send", "192.0.2.10:443"], "") == [
        "198.51.100.7:1000", "198.51.100.7:1001", "198.51.100.7:1002",
    ]  # fmt: skip
    assert _complete(state, ["setsockopt", "2001:db8:1::10.443"], "") == ["2001:db8:1::77.5"]
    assert _complete(state, ["send", "192.0.2.10:443", "198.51.100.7:1000"], "") == []


def test_completion_never_raises(tmp_path: Any) -> None:
    missing = str(tmp_path / "none" / "kernel.db")
    assert _complete(missing, ["send"], "") == []
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"garbage" * 100)
    assert _complete(str(bad), ["decode", "f"], "") == []
    assert _complete(str(bad), ["send", "not-an-endpoint"], "") == []
