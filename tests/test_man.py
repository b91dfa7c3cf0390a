"""Man pages: mandoc finds nothing to say about them, and they document every option.

mandoc runs with `-T lint -W style`: every style, warning and error message fails the
test. (`-W base` adds conventions of the OpenBSD/NetBSD base systems and limits the
cross-reference lookup to /usr/share/man; `-W style` looks along `-M` instead.) The
lookup path is an empty directory, so each `.Xr` reference is checked here, the same
on every host: it must name a page in man/, the page of a planned ktls command, or a
page in EXTERNAL_PAGES.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import pytest

from ktls_cli.main import COMMANDS, cli

REPO = Path(__file__).resolve().parent.parent
MAN = REPO / "man"
PAGES = sorted(p.name for p in MAN.glob("*.8"))

# Pages outside this repository that ours cite: FreeBSD base pages and the programs
# the tests drive. Add to it when a page cites another one.
EXTERNAL_PAGES = {
    ("netstat", "1"), ("openssl", "1"), ("tcpdump", "1"), ("tshark", "1"), ("curl", "1"),
    ("chmod", "1"), ("ps", "1"),
    ("aio_write", "2"), ("connect", "2"), ("getsockopt", "2"), ("sendfile", "2"),
    ("readv", "2"), ("sendmsg", "2"), ("setsockopt", "2"), ("socket", "2"), ("write", "2"),
    ("err", "3"), ("getaddrinfo", "3"), ("getopt", "3"), ("libxo", "3"), ("strtol", "3"),
    ("strtoul", "3"), ("sysexits", "3"), ("crypto", "7"), ("xo_options", "7"),
    ("cxgbe", "4"), ("inet", "4"), ("inet6", "4"), ("ip", "4"), ("ip6", "4"), ("ktls", "4"),
    ("lagg", "4"), ("mlx5en", "4"), ("tcp", "4"), ("vlan", "4"),
    ("loader.conf", "5"), ("rc.conf", "5"), ("sysctl.conf", "5"),
    ("dmesg", "8"), ("ifconfig", "8"), ("kldload", "8"), ("kldstat", "8"), ("kldunload", "8"),
    ("route", "8"), ("sysctl", "8"), ("tcpdrop", "8"),
    ("counter", "9"), ("crypto", "9"), ("ifnet", "9"), ("mbuf", "9"), ("sysctl", "9"),
}  # fmt: skip
# DESIGN.md section 4: every command gets man/ktls-<command>.8.
PLANNED = {
    "connect", "decode", "dmesg", "getsockopt", "ifconfig", "kldload", "kldstat", "kldunload",
    "netstat", "route", "send", "serve", "setsockopt", "state", "switch_tls", "sysctl", "tcpdrop",
}  # fmt: skip
XR_MISSING = re.compile(r"STYLE: referenced manual not found: Xr (\S+) (\S+)( \(\d+ times\))?$")


def _known(name: str, section: str) -> bool:
    if (name, section) in EXTERNAL_PAGES:
        return True
    if section == "8" and (MAN / f"{name}.8").exists():
        return True
    return section == "8" and name.startswith("ktls-") and name[5:] in PLANNED


@pytest.mark.parametrize("page", PAGES)
def test_mandoc_lint_has_nothing_to_say(page: str, require_tool: Any, tmp_path: Path) -> None:
    mandoc = require_tool("mandoc")
    result = subprocess.run(
        [mandoc, "-T", "lint", "-W", "style", "-M", str(tmp_path), str(MAN / page)],
        capture_output=True,
        text=True,
    )
    problems = []
    for line in (result.stdout + result.stderr).splitlines():
        match = XR_MISSING.search(line)
        if match and _known(match.group(1), match.group(2)):
            continue
        problems.append(line)
    assert problems == []


def _rendered(page: Path, mandoc: str) -> str:
    """The page as text, one paragraph per line (no wrapping), overstrike removed."""
    out = subprocess.run(
        [mandoc, "-T", "ascii", "-O", "width=1000", str(page)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return re.sub(r".\x08", "", out)


def _options(command: click.Command, path: str) -> Iterator[tuple[str, str]]:
    """(where, option) for every option --help shows, subcommands included."""
    for param in command.params:
        if isinstance(param, click.Option) and not param.hidden:
            for opt in param.opts + param.secondary_opts:
                if opt != "--help":  # every command has it; ktls(8) says so once
                    yield path, opt
    if isinstance(command, click.Group):
        ctx = click.Context(command)
        for name in command.list_commands(ctx):
            sub = command.get_command(ctx, name)
            if sub is not None and not sub.hidden:
                yield from _options(sub, f"{path} {name}")


def _mentions(text: str, word: str) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(word)}(?![\w-])", text) is not None


DOCUMENTED = sorted(name for name in COMMANDS if (MAN / f"ktls-{name}.8").exists())


@pytest.mark.parametrize("name", DOCUMENTED)
def test_every_option_is_in_the_page(name: str, require_tool: Any) -> None:
    text = _rendered(MAN / f"ktls-{name}.8", require_tool("mandoc"))
    command = cli.get_command(click.Context(cli), name)
    assert command is not None
    options = _options(command, name)
    missing = [f"{where} {opt}" for where, opt in options if not _mentions(text, opt)]
    assert missing == []


def test_sysctl_options_are_all_documented(require_tool: Any) -> None:
    """The list above really covers sysctl: its flags are not hidden from the check."""
    command = cli.get_command(click.Context(cli), "sysctl")
    assert command is not None
    opts = {opt for _, opt in _options(command, "sysctl")}
    assert opts == {f"-{c}" for c in "abdefhiNnoqTtWx"}


def test_ktls8_covers_the_group_and_every_command(require_tool: Any) -> None:
    text = _rendered(MAN / "ktls.8", require_tool("mandoc"))
    missing = [opt for _, opt in _options(_group_only(), "ktls") if not _mentions(text, opt)]
    missing += [name for name in sorted(set(COMMANDS) | PLANNED) if not _mentions(text, name)]
    missing += [
        f"ktls-{name}(8)" for name in sorted(PLANNED) if f"ktls-{name}(8)" not in text
    ]
    for variable in ("KTLS_STATE", "XDG_STATE_HOME", "NO_COLOR", "KTLS_DEBUG"):
        if not _mentions(text, variable):
            missing.append(variable)
    for section in ("ENVIRONMENT", "FILES", "EXIT STATUS", "SEE ALSO"):
        if f"\n{section}\n" not in text:
            missing.append(section)
    assert missing == []


def _group_only() -> click.Command:
    """The `ktls` group's own options, without walking into every subcommand."""
    return click.Command("ktls", params=cli.params)
