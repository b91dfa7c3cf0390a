"""How a command ends when it does not simply return: usage errors and exit statuses.

Command bodies that also run without click (main's fast path) raise these instead
of click's exceptions, so that importing them costs nothing. Under click,
`click_outcomes` turns them into click's own (the usage text, `Error: ...`,
exit 2); the fast path gives the whole command to click instead, which says it
the same way.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])


class UsageFailure(Exception):
    """A usage error (exit 2), raised before the command changed anything.

    `param_hint` names the option for click's `Invalid value for '--x': ...`.
    """

    def __init__(self, message: str, param_hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param_hint = param_hint


class ExitStatus(Exception):
    """End with this status; the command already printed why."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


def click_outcomes(func: F) -> F:
    """Decorate a click command's callback: UsageFailure/ExitStatus become click's."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        import click

        try:
            return func(*args, **kwargs)
        except UsageFailure as exc:
            if exc.param_hint is not None:
                raise click.BadParameter(exc.message, param_hint=exc.param_hint) from None
            raise click.UsageError(exc.message) from None
        except ExitStatus as exc:
            raise click.exceptions.Exit(exc.code) from None

    return wrapper  # type: ignore[return-value]
