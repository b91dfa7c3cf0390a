"""BSD getopt(3) for the commands that read their arguments as FreeBSD tools do.

Options stop at the first operand or at `--`; flags group (`-la`); an option
with an argument takes the rest of its word or the next word. Errors are
getopt's own lines (`tcpdrop: illegal option -- x`), raised as GetoptError.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import click

    from ktls_cli.env import Env

# click context settings for a command that reads its own argv as a FreeBSD tool
# does: every word reaches the command untouched, only --help is click's.
FREEBSD_ARGV: dict[str, Any] = {
    "ignore_unknown_options": True,
    "allow_interspersed_args": False,
    "help_option_names": ["--help"],
}


class GetoptError(Exception):
    """getopt's complaint; the caller prints it, then its usage text."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def getopt(
    prog: str, argv: list[str], optstring: str
) -> tuple[list[tuple[str, str | None]], list[str]]:
    """(options in order, operands) for `optstring` (`:` after a letter takes an argument)."""
    takes_arg = {c for i, c in enumerate(optstring) if optstring[i + 1 : i + 2] == ":"}
    known = set(optstring.replace(":", ""))
    opts: list[tuple[str, str | None]] = []
    i = 0
    while i < len(argv):
        word = argv[i]
        if word == "--":
            i += 1
            break
        if not word.startswith("-") or word == "-":
            break
        j = 1
        while j < len(word):
            ch = word[j]
            if ch not in known:
                raise GetoptError(f"{prog}: illegal option -- {ch}")
            if ch in takes_arg:
                if j + 1 < len(word):
                    opts.append((ch, word[j + 1 :]))
                elif i + 1 < len(argv):
                    i += 1
                    opts.append((ch, argv[i]))
                else:
                    raise GetoptError(f"{prog}: option requires an argument -- {ch}")
                break
            opts.append((ch, None))
            j += 1
        i += 1
    return opts, argv[i:]


class UsageProblem(Exception):
    """Print the usage text; `message` (getopt's complaint, if any) goes first."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or "usage")
        self.message = message

    def report(self, env: Env, usage: str) -> int:
        """usage(): the complaint, then the usage text, on stderr; the exit status (2)."""
        if self.message:
            env.err(self.message)
        env.stderr.write(usage)
        return 2


def lazy_command(build: Callable[[], Any]) -> Callable[[str], Any]:
    """A module __getattr__ that builds the module's click command `cli` on first use.

    The FreeBSD-style commands run from main's fast path without click (importing it
    is ~10 ms); click declares them only for --help, completion and the group.
    """
    made: list[Any] = []

    def __getattr__(name: str) -> Any:
        if name != "cli":
            raise AttributeError(name)
        if not made:
            made.append(build())
        return made[0]

    return __getattr__


def fast_argv(run: Callable[[Env, list[str]], int]) -> Callable[[Env, list[str]], int | None]:
    """main's fast path for a command that reads its own argv (FREEBSD_ARGV): the same
    run(), except for the words click acts on itself: --help (and `--help=X`, which
    click refuses), and `--`, which click drops."""

    def run_fast(env: Env, words: list[str]) -> int | None:
        if any(word == "--" or word.startswith("--help") for word in words):
            return None
        return run(env, words)

    return run_fast


def tool_command(
    name: str,
    run: Callable[[Env, list[str]], int],
    help_text: str,
    *,
    usage: str | None = None,
    metavar: str | None = None,
    complete: Callable[..., Any] | None = None,
    context_settings: dict[str, Any] | None = None,
) -> click.Command:
    """The click declaration of a tool that reads its own argv (`lazy_command`'s
    builder): --help, completion, the group. Every word reaches `run` untouched;
    `usage` replaces click's usage line with the tool's own (ifconfig, route)."""
    import click

    from ktls_cli.outcome import ExitStatus

    class ToolCommand(click.Command):
        def format_usage(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
            if usage is None:
                super().format_usage(ctx, formatter)
            else:
                formatter.write(usage)

    def callback(argv: tuple[str, ...]) -> None:
        code = run(click.get_current_context().obj, list(argv))
        if code:
            raise ExitStatus(code)

    argument = click.Argument(
        ["argv"], nargs=-1, type=click.UNPROCESSED, metavar=metavar, shell_complete=complete
    )
    return ToolCommand(
        name,
        callback=callback,
        params=[argument],
        help=help_text,
        context_settings=FREEBSD_ARGV if context_settings is None else context_settings,
    )
