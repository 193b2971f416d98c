"""``pvc sample``: the plugin's commands (entry point ``sample`` in ``pvc.cli``), written
with ``pvc_cli.sdk``; they talk only to the API."""

from __future__ import annotations

from typing import Any

import click

from pvc_cli.sdk import Painter, format_option, get_settings, render_table, show_list


@click.group()
def sample() -> None:
    """The sample plugin: node greetings and a note for administrators.

    \b
    Examples:
      pvc sample greetings
      pvc sample note "disk shelf 2 is being replaced"
    """


@sample.command()
@format_option
def greetings(fmt: str) -> None:
    """Show each node's greeting (plugins.sample.greeting in its pvcnoded.yaml).

    \b
    Examples:
      pvc sample greetings
      pvc sample greetings -f json
    """
    settings = get_settings()
    found = settings.client().get("/sample/greetings").data
    show_list(settings.painter, found, fmt, "No node has greeted yet.", _table)


def _table(p: Painter, found: list[dict[str, Any]]) -> str:
    return render_table(p, ["Node", "Greeting", "Keepalives"],
                        [[g["node"], g["greeting"], str(g["keepalives"])] for g in found],
                        right=(2,))


@sample.command()
@click.argument("text", required=False)
def note(text: str | None) -> None:
    """Show the note left for administrators, or replace it with TEXT (one line, at most
    plugins.sample.note_limit characters).

    \b
    Examples:
      pvc sample note
      pvc sample note "disk shelf 2 is being replaced"
    """
    client = get_settings().client()
    if text is None:
        click.echo(client.get("/sample/note").data.get("note") or "(no note)")
        return
    answer = client.request("PUT", "/sample/note", {"text": text})
    click.echo(answer.data.get("message", "Note saved."))
