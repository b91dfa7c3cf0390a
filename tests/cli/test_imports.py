"""Startup: `ktls sysctl -n kern.ipc.tls.enable` imports only the stdlib, click and ktls.

rich, cryptography and yaml cost tens of milliseconds each; DESIGN section 5 keeps them
inside the functions that use them. The hook records every module imported while the
command runs, in a fresh interpreter, on a state that is already booted.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

CHILD = r"""
import builtins, json, sys
before = set(sys.modules)
seen = []
real_import = builtins.__import__

def hook(name, globals=None, locals=None, fromlist=(), level=0):
    module = real_import(name, globals, locals, fromlist, level)
    seen.append(module.__name__)
    return module

builtins.__import__ = hook
from ktls_cli.main import main
code = main(sys.argv[1:])
builtins.__import__ = real_import
new = sorted((set(sys.modules) - before) | set(seen))
sys.stdout.flush()
print(json.dumps({"exit": code, "modules": new}), file=sys.stderr)
"""

ALLOWED_TOP = set(sys.stdlib_module_names) | {"click", "ktls_cli", "ktls_core"}
FORBIDDEN = {"rich", "cryptography", "yaml"}
# Standard modules that cost about a millisecond each and that sysctl has no use for:
# hashlib loads OpenSSL, difflib comes with click's NoSuchOption (getopt avoids it),
# dataclasses generates code per class (issue 8, bench/cli_latency.py).
SLOW_STDLIB = {"hashlib", "_hashlib", "secrets", "difflib", "dataclasses"}


def _imports(state: str, *args: str) -> tuple[str, int, list[str]]:
    result = subprocess.run(
        [sys.executable, "-c", CHILD, "--state", state, *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    report = json.loads(result.stderr.strip().splitlines()[-1])
    return result.stdout, report["exit"], report["modules"]


def test_sysctl_n_imports_only_the_allow_list(state: str, init_state: Any) -> None:
    init_state(state)
    stdout, code, modules = _imports(state, "sysctl", "-n", "kern.ipc.tls.enable")
    assert (stdout, code) == ("0\n", 0)
    assert "ktls_cli.commands.sysctl" in modules  # the hook did see the command run
    outside = sorted({m for m in modules if m.split(".")[0] not in ALLOWED_TOP})
    assert outside == []
    assert not {m.split(".")[0] for m in modules} & FORBIDDEN
    assert not set(modules) & SLOW_STDLIB
    assert "click" not in modules  # main's fast path: sysctl reads its words with getopt


def test_sysctl_errors_and_help_are_the_same_on_both_paths(state: str, init_state: Any) -> None:
    """The fast path prints getopt's complaint and the usage itself; --help is click's."""
    init_state(state)
    stdout, code, modules = _imports(state, "sysctl", "-z", "kern.ipc.tls.enable")
    assert (stdout, code, "click" in modules) == ("", 2, False)
    stdout, code, modules = _imports(state, "sysctl", "--help")
    assert code == 0 and "click" in modules
    assert stdout.startswith("usage: ktls sysctl [-bdehiNnoqTtWx] [-f filename] name[=value]")


def test_the_freebsd_tools_run_without_click(state: str, init_state: Any) -> None:
    """main's fast path: ifconfig and switch_tls read their own words (issue 8);
    `--help` and `--` (which click drops) are still click's."""
    init_state(state)
    for args in (["ifconfig", "cc0"], ["switch_tls", "-l", "-a"], ["ifconfig", "-z"],
                 ["--format", "json", "netstat", "-an"]):  # fmt: skip
        _, code, modules = _imports(state, *args)
        assert code in (0, 2) and "click" not in modules, args
    for args in (["ifconfig", "--help"], ["switch_tls", "--", "-a"], ["ifconfig", "--help=x"]):
        _, _code, modules = _imports(state, *args)
        assert "click" in modules, args


def test_the_check_sees_a_heavy_import(state: str, init_state: Any) -> None:
    """The same probe on a command that needs yaml reports it (the check can fail)."""
    init_state(state)
    _, code, modules = _imports(state, "--format", "yaml", "sysctl", "kern.ipc.tls.enable")
    assert code == 0 and "yaml" in modules


def test_a_gcm_send_loads_no_openssl_hash(state: str, init_state: Any, ktls: Any) -> None:
    """A software AES-GCM send needs cryptography, never hashlib's libcrypto (issue 8)."""
    init_state(state)
    assert ktls("sysctl", "kern.ipc.tls.enable=1", "kern.ipc.mb_use_ext_pgs=1").exit == 0
    assert ktls("kldload", "ktls_ocf").exit == 0
    conn = ["198.51.100.10:443", "203.0.113.7:50000"]
    assert ktls("connect", *conn, "--random-keys", "--tls-version", "1.2").exit == 0
    stdout, code, modules = _imports(state, "send", *conn, "--data", "x")
    assert code == 0 and "1 record" in stdout
    assert "cryptography.hazmat.primitives.ciphers.aead" in modules
    assert not set(modules) & {"hashlib", "_hashlib", "hmac", "rich", "yaml"}
    # main's fast path and the Frozen records: no click, no dataclass machinery.
    assert not set(modules) & {"click", "dataclasses", "inspect"}


def test_route_and_the_kld_tools_run_without_click(state: str, init_state: Any) -> None:
    """main's fast path: route, kldload, kldunload and kldstat read their own words
    (issue 8), usage errors included; `--help` (and `--help=VALUE`, `--`) are click's,
    with click's help text."""
    init_state(state)
    runs = [
        (["route", "get", "198.51.100.7"], 0),
        (["route", "-z", "get", "x"], 2),
        (["kldstat", "-v"], 0),
        (["kldstat", "-x"], 2),
        (["kldload", "-v", "ktls_ocf"], 0),
        (["kldload"], 2),
        (["kldunload", "nope"], 1),
        (["kldunload", "-x"], 2),
    ]
    for args, expected in runs:
        _, code, modules = _imports(state, *args)
        assert code == expected and "click" not in modules, args
        assert f"ktls_cli.commands.{args[0]}" in modules, args  # the hook saw it run
        assert not set(modules) & {"dataclasses", "inspect"}, args
    helps = {
        "route": "usage: ktls route [-46nq] command [[modifiers] args]\n",
        "kldload": "Usage: ktls kldload [OPTIONS] [ARGV]...\n",
        "kldunload": "Usage: ktls kldunload [OPTIONS] [ARGV]...\n",
        "kldstat": "Usage: ktls kldstat [OPTIONS] [ARGV]...\n",
    }
    for command, usage in helps.items():
        stdout, code, modules = _imports(state, command, "--help")
        assert code == 0 and "click" in modules and stdout.startswith(usage), command
        assert "Exit status: 0 success" in stdout, command
    for args in (["route", "--help=x"], ["kldstat", "--", "-v"]):
        _, code, modules = _imports(state, *args)
        assert "click" in modules, args


def test_tcpdrop_netstat_and_dmesg_run_without_click(
    state: str, init_state: Any, ktls: Any
) -> None:
    """main's fast path: tcpdrop, netstat and dmesg read their own words with getopt
    (issue 8), usage errors and JSON included; `--help` and `--` are still click's,
    with click's help text."""
    init_state(state)
    assert ktls("connect", "192.0.2.10:443", "198.51.100.7:51514").exit == 0
    conn = ["192.0.2.10:443", "198.51.100.7:51514"]
    runs = [
        (["netstat", "-an"], 0),
        (["netstat", "-z"], 2),
        (["netstat", "-f", "atalk"], 1),
        (["netstat", "-rn"], 0),  # route's renderer, click-free too
        (["dmesg"], 0),
        (["--format", "json", "dmesg"], 0),
        (["dmesg", "-M", "core"], 2),
        (["tcpdrop", "-l", "-a"], 0),
        (["--format", "json", "tcpdrop", "-l", "-a"], 0),
        (["tcpdrop", "-x"], 2),
        (["tcpdrop", *conn], 0),
        (["tcpdrop", *conn], 1),  # dropped already: ESRCH
    ]
    for args, expected in runs:
        stdout, code, modules = _imports(state, *args)
        assert code == expected and "click" not in modules, args
        command = next(a for a in args if a in ("netstat", "dmesg", "tcpdrop"))
        assert f"ktls_cli.commands.{command}" in modules, args  # the hook saw it run
        assert not set(modules) & {"dataclasses", "inspect"}, args
        if args == ["netstat", "-an"]:
            assert "192.0.2.10.443         198.51.100.7.51514     ESTABLISHED" in stdout
    helps = {
        "tcpdrop": "Drop TCP connections (tcpdrop(8)).",
        "netstat": "Show TCP connections and their KTLS sessions (netstat -an), or routes (-r).",
        "dmesg": "Print the kernel message buffer (dmesg(8)).",
    }
    for command, summary in helps.items():
        stdout, code, modules = _imports(state, command, "--help")
        assert code == 0 and "click" in modules, command
        assert stdout.startswith(f"Usage: ktls {command} [OPTIONS] [ARGV]...\n\n  {summary}\n")
        assert stdout.endswith("Options:\n  --help  Show this message and exit.\n"), command
    for args in (["dmesg", "--", "-a"], ["netstat", "-a", "--"]):
        _, code, modules = _imports(state, *args)
        assert code == 0 and "click" in modules, args
