"""`ktls state`: create, inspect, export, import and reset the simulated kernel's state."""

from __future__ import annotations

import os
import sys
from typing import IO

import click

from ktls_cli.env import Env
from ktls_cli.render import emit

pass_env = click.make_pass_decorator(Env)


def _state_path(env: Env) -> str:
    from ktls_core.store import default_path

    return os.path.abspath(env.state_path or default_path())


@click.group("state")
def cli() -> None:
    """Create, inspect, export and reset the simulated kernel's state."""


@cli.command("path")
@pass_env
def path_cmd(env: Env) -> None:
    """Print the path of the state database."""
    path = _state_path(env)
    emit(env, "state", {"path": path}, lambda: env.out(path))


@cli.command("init")
@click.option(
    "--profile",
    type=click.Choice(["seed", "current"]),
    default="seed",
    show_default=True,
    help="FreeBSD era: seed (r351522, 2019) or current.",
)
@click.option("--topology", type=click.Path(dir_okay=False), help="Host topology YAML.")
@click.option("--seed", type=click.IntRange(min=0), help="Make keys, nonces and IVs reproducible.")
@click.option(
    "--tunable",
    "tunables",
    multiple=True,
    metavar="NAME=VALUE",
    help="A loader tunable (loader.conf), e.g. kern.ipc.tls.bind_threads=1.",
)
@click.option("--force", is_flag=True, help="Replace an existing state.")
@pass_env
def init_cmd(
    env: Env,
    profile: str,
    topology: str | None,
    seed: int | None,
    tunables: tuple[str, ...],
    force: bool,
) -> None:
    """Boot a fresh simulated kernel with PROFILE and TOPOLOGY."""
    from ktls_core.state import init_state

    path = _state_path(env)
    try:
        result = init_state(
            path,
            profile=profile,
            topology=topology,
            seed=seed,
            tunables=list(tunables),
            force=force,
        )
    except ValueError as exc:
        hint = "--tunable" if tunables else "--topology"
        raise click.BadParameter(str(exc), param_hint=f"'{hint}'") from None
    emit(env, "state", result, lambda: env.out(f"{path}: booted profile {profile}"))


@cli.command("show")
@pass_env
def show_cmd(env: Env) -> None:
    """Summarise the state: profile, modules, interfaces, connections."""
    from ktls_core.state import summary

    info = summary(env.kernel())

    def text() -> None:
        for key, value in info.items():
            if isinstance(value, list):
                value = " ".join(str(v) for v in value) or "none"
            elif value is None:
                value = "none"
            env.out(f"{key}: {value}")

    emit(env, "state", info, text)


@cli.command("export")
@click.option(
    "--include-keys", is_flag=True, help="Include session keys and IVs (secret columns)."
)
@pass_env
def export_cmd(env: Env, include_keys: bool) -> None:
    """Write the whole state as YAML on stdout (keys left out by default)."""
    from ktls_core.state import export_state

    env.stdout.write(export_state(env.kernel(), include_keys=include_keys))


@cli.command("import")
@click.argument("file", type=click.Path(dir_okay=False, allow_dash=True))
@pass_env
def import_cmd(env: Env, file: str) -> None:
    """Replace the state with an export (atomically); FILE - reads stdin."""
    from ktls_core.state import import_state

    path = _state_path(env)
    try:
        if file == "-":
            text = _read_text(sys.stdin)
        else:
            with open(file, encoding="utf-8") as fh:
                text = _read_text(fh)
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        if isinstance(exc, OSError):
            reason = exc.strerror
        elif isinstance(exc, UnicodeDecodeError):
            reason = "not UTF-8 text"
        else:
            reason = "not a ktls state export (binary data)"
        env.err(f"ktls: {file}: {reason}")
        raise click.exceptions.Exit(1) from None
    try:
        result = import_state(path, text, source=file)
    except ValueError as exc:
        env.err(f"ktls: {exc}")
        raise click.exceptions.Exit(1) from None
    emit(env, "state", result, lambda: env.out(f"{path}: imported {file}"))


def _read_text(fh: IO[str]) -> str:
    """An export, read in chunks: a NUL is no YAML, so `/dev/zero` ends at once (ValueError)
    instead of filling memory."""
    parts = []
    while chunk := fh.read(1 << 20):
        if "\x00" in chunk:
            raise ValueError("binary data")
        parts.append(chunk)
    return "".join(parts)


@cli.command("reset")
@pass_env
def reset_cmd(env: Env) -> None:
    """Delete the state; the next command boots the default profile afresh."""
    from ktls_core.store import remove_state

    path = _state_path(env)
    remove_state(path)
    emit(env, "state", {"path": path, "reset": True}, lambda: env.out(f"{path}: removed"))
