"""Errors the CLI reports as ONE line on stderr ("pvc: ...") with a meaningful exit code."""

from __future__ import annotations

from typing import IO, Any

import click

EXIT_API = 1  # the API answered with an error (4xx/5xx, invalid JSON, failed task)
EXIT_USAGE = 2  # click's own code for bad command lines
EXIT_UNREACHABLE = 3  # no address of the cluster answered
EXIT_CONFIG = 4  # no usable connection / unreadable config file
EXIT_INTERRUPTED = 130


def one_line(text: str) -> str:
    """Collapse newlines and runs of blanks so that an error stays on one line."""
    return " ".join(str(text).split())


class PvcError(click.ClickException):
    """A user-facing error: printed as `pvc: <message>` on stderr, never a traceback."""

    exit_code = EXIT_API

    def __init__(self, message: str, exit_code: int | None = None, transient: bool = False):
        super().__init__(one_line(message))
        if exit_code is not None:
            self.exit_code = exit_code
        # transient = worth retrying while polling (cluster unreachable, 5xx during a handover)
        self.transient = transient

    def show(self, file: IO[Any] | None = None) -> None:
        click.echo(f"pvc: {self.format_message()}", err=True, file=file)


class UnreachableError(PvcError):
    """No address of the connection answered (refused, timed out, 502/503...)."""

    def __init__(self, failures: list[tuple[str, str]]):
        reasons = {reason for _, reason in failures}
        if len(reasons) == 1:
            where = ", ".join(label for label, _ in failures)
            text = f"cannot reach the cluster at {where}: {reasons.pop()}"
        else:
            where = ", ".join(f"{label} ({reason})" for label, reason in failures)
            text = f"cannot reach the cluster at {where}"
        super().__init__(text, exit_code=EXIT_UNREACHABLE, transient=True)
        self.failures = failures
