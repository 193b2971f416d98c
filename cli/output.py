"""Output: -f pretty|json|json-pretty, aligned tables and coloured states."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import click

FORMATS = ("pretty", "json", "json-pretty")

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")

GREEN = {"fg": "green"}
RED = {"fg": "red"}
YELLOW = {"fg": "yellow"}
CYAN = {"fg": "cyan"}
BOLD = {"bold": True}

# One map for every kind of state; the names do not clash in meaning.
STATE_STYLES: dict[str, dict[str, Any]] = {
    # daemon_state
    "run": GREEN,
    "init": YELLOW,
    "shutdown": YELLOW,
    "stop": RED,
    "dead": RED,
    "fenced": RED,
    # coordinator_state
    "primary": {"bold": True, "fg": "green"},
    "takeover": YELLOW,
    "relinquish": YELLOW,
    # domain_state
    "ready": GREEN,
    "flush": YELLOW,
    "flushed": YELLOW,
    "unflush": YELLOW,
    "fence-flush": RED,
    # tasks
    "SUCCESS": GREEN,
    "FAILURE": RED,
    "REVOKED": RED,
    "RUNNING": CYAN,
    "STARTED": CYAN,
    "PENDING": YELLOW,
    "SCHEDULED": YELLOW,
    # VMs (for plugins' tables)
    "start": GREEN,
    "fail": RED,
    "disable": YELLOW,
    "migrate": CYAN,
    "unmigrate": CYAN,
    "restart": YELLOW,
    "provision": CYAN,
}


def format_option(func: F) -> F:
    """The -f/--format option of every read command."""
    return click.option(
        "-f",
        "--format",
        "fmt",
        type=click.Choice(FORMATS),
        default="pretty",
        show_default=True,
        help="Output format: pretty tables, or the API's JSON (compact or indented).",
    )(func)


def colour_default() -> bool:
    """Colour only on a terminal, and never when NO_COLOR is set (https://no-color.org)."""
    if os.environ.get("NO_COLOR"):
        return False
    try:
        return sys.stdout.isatty()
    except (AttributeError, ValueError):
        return False


class Painter:
    """Applies styles only when colour is on."""

    def __init__(self, colour: bool):
        self.colour = colour

    def style(self, text: str, style: dict[str, Any] | None) -> str:
        if not self.colour or not style or not text:
            return text
        return click.style(text, **style)

    def state(self, value: Any) -> str:
        text = "" if value is None else str(value)
        return self.style(text, STATE_STYLES.get(text))

    def bold(self, text: str) -> str:
        return self.style(text, BOLD)

    def health(self, value: Any) -> str:
        return self.style(fmt_health(value), health_style(value))

    def echo(self, text: str = "", err: bool = False) -> None:
        click.echo(text, err=err, color=self.colour)


def health_style(value: Any) -> dict[str, Any] | None:
    if not isinstance(value, int | float):
        return None
    if value > 90:
        return GREEN
    if value > 50:
        return YELLOW
    return RED


def fmt_health(value: Any) -> str:
    if isinstance(value, int | float):
        return f"{value:g}%"
    return "N/A" if value in (None, "") else str(value)


def fmt_delta(value: Any) -> str:
    """A health delta as the penalty it is: 20 -> "-20", 0 -> "0"."""
    if isinstance(value, int | float) and value:
        return f"-{value:g}"
    return "0" if value in (None, "", 0) else str(value)


def emit_json(data: Any, fmt: str) -> None:
    if fmt == "json-pretty":
        click.echo(json.dumps(data, indent=2))
    else:
        click.echo(json.dumps(data, separators=(",", ":")))


def show_list(
    painter: Painter,
    items: list[T],
    fmt: str,
    empty_message: str,
    render: Callable[[Painter, list[T]], str],
) -> None:
    """Print a list command's answer.

    JSON of the items unless fmt is pretty; else empty_message when there are none, else the
    table text that render(painter, items) returns.
    """
    if fmt != "pretty":
        emit_json(items, fmt)
    elif not items:
        click.echo(empty_message)
    else:
        painter.echo(render(painter, items))


Cell = str | tuple[str, dict[str, Any] | None]


def render_table(
    painter: Painter,
    headers: Sequence[str],
    rows: Sequence[Sequence[Cell]],
    right: Sequence[int] = (),
) -> str:
    """Aligned columns; widths are computed on the plain text, colour is added afterwards.

    A cell is a string or (text, style) where style is a click.style() keyword dict.
    """
    plain = [[c if isinstance(c, str) else c[0] for c in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in plain:
        for i, text in enumerate(row):
            widths[i] = max(widths[i], len(text))
    last = len(headers) - 1

    def cell(i: int, text: str, styled: str) -> str:
        fill = " " * (widths[i] - len(text))
        if i in right:
            return fill + styled
        return styled if i == last else styled + fill  # no trailing blanks

    lines = ["  ".join(cell(i, h, painter.bold(h)) for i, h in enumerate(headers))]
    for row, texts in zip(rows, plain, strict=True):
        out = []
        for i, (c, text) in enumerate(zip(row, texts, strict=True)):
            # style the text only, not the padding
            out.append(cell(i, text, painter.style(text, None if isinstance(c, str) else c[1])))
        lines.append("  ".join(out).rstrip())
    return "\n".join(lines)


def render_pairs(painter: Painter, pairs: Sequence[tuple[str, str]], indent: int = 0) -> str:
    """`Key:  value` lines with aligned values (values may already carry colour)."""
    width = max((len(k) for k, _ in pairs), default=0) + 1
    pad = " " * indent
    return "\n".join(f"{pad}{painter.bold((k + ':').ljust(width))}  {v}" for k, v in pairs)


def state_cell(value: Any) -> Cell:
    text = "" if value is None else str(value)
    return (text, STATE_STYLES.get(text))


def human_mib(value: Any) -> str:
    """MiB (the API's unit for node/VM memory) as a short human string."""
    try:
        mib = float(value)
    except (TypeError, ValueError):
        return "-" if value in (None, "") else str(value)
    for unit, size in (("T", 1024 * 1024), ("G", 1024)):
        if abs(mib) >= size:
            return f"{mib / size:.1f}{unit}"
    return f"{mib:.0f}M"


def human_kib(value: Any) -> str:
    try:
        return human_mib(float(value) / 1024)
    except (TypeError, ValueError):
        return "-" if value in (None, "") else str(value)


def fmt_time(value: Any) -> str:
    """A unix time (number or numeric string) as local time; other strings unchanged."""
    if value in (None, ""):
        return "-"
    try:
        stamp = float(value)
    except (TypeError, ValueError):
        return str(value)
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(stamp))


def dig(data: Any, path: str, default: Any = None) -> Any:
    """dig(d, "a.b.c") = d["a"]["b"]["c"], or default when any level is missing."""
    cur = data
    for part in path.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return default
        cur = cur[part]
    return default if cur is None else cur
