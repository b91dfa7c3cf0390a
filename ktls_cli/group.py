"""The `ktls` click group: lazy subcommands, global options, help.

Imported only when a command needs click (ktls_cli.main runs some commands
without it). Subcommand modules are imported only when a command is resolved.
"""

from __future__ import annotations

import importlib

import click

from ktls_cli.main import COMMANDS, FORMATS, libxo_ok, make_env
from ktls_cli.outcome import click_outcomes


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        entry = COMMANDS.get(cmd_name)
        if entry is None:
            return None
        module_name, attr = entry[0].split(":")
        command: click.Command = getattr(importlib.import_module(module_name), attr)
        if command.callback is not None and not getattr(command, "_ktls_outcomes", False):
            # Command bodies shared with the fast path raise outcome exceptions.
            command.callback = click_outcomes(command.callback)
            command._ktls_outcomes = True  # type: ignore[attr-defined]
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # Short help straight from COMMANDS: `ktls --help` imports no subcommand.
        rows = [(name, COMMANDS[name][1]) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


def _libxo_callback(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is None:
        return None
    if not libxo_ok(value):
        raise click.BadParameter(f"unsupported libxo options '{value}' (use json[,pretty])")
    return value


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["--help"]})
@click.option(
    "--state",
    "state_path",
    metavar="PATH",
    help="State database (default: $KTLS_STATE, else $XDG_STATE_HOME/ktls/kernel.db).",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(FORMATS),
    default="text",
    show_default=True,
    help="Output format.",
)
@click.option(
    "--libxo", metavar="json[,pretty]", callback=_libxo_callback, help="libxo-style JSON output."
)
@click.pass_context
def cli(ctx: click.Context, state_path: str | None, fmt: str, libxo: str | None) -> None:
    """ktls: FreeBSD kernel TLS (KTLS) transmit offload, simulated.

    A persistent simulated kernel (sysctls, interfaces, routes, connections and TLS
    sessions) driven by FreeBSD-shaped tools. Exit status: 0 success, 1 failure,
    2 usage error.
    """
    env = make_env(state_path, fmt, libxo)
    ctx.obj = env
    ctx.call_on_close(env.close)
