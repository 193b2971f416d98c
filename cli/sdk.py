"""The plugin SDK, CLI side: what a plugin may use to add ``pvc`` commands (entry points
``pvc.commands``), and nothing else; the rest of ``pvc_cli`` is internal.

* ``get_settings()`` gives the connection (``.client()`` talks to the API; answers carry
  ``.status`` and ``.data``), ``api_message`` the message of an answer.
* ``PvcError`` ends a command with one clear line and an exit code (``EXIT_USAGE`` for
  misuse); ``wait_task``/``report_task``/``poll`` follow long work with progress.
* output: ``format_option`` (``-f pretty|json|json-pretty``), ``emit_json``, ``Painter``,
  ``render_table``/``render_pairs``/``show_list``, ``F`` (a table field), ``state_cell``,
  ``dig``, ``human_kib``/``human_mib``; ``complete_node`` completes node names.
"""

from __future__ import annotations

from pvc_cli.client import api_message
from pvc_cli.commands.node import complete_node
from pvc_cli.context import get_settings
from pvc_cli.errors import EXIT_USAGE, PvcError
from pvc_cli.output import (
    F,
    Painter,
    dig,
    emit_json,
    format_option,
    human_kib,
    human_mib,
    render_pairs,
    render_table,
    show_list,
    state_cell,
)
from pvc_cli.waiting import poll, report_task, wait_task

__all__ = ["EXIT_USAGE", "F", "Painter", "PvcError", "api_message", "complete_node", "dig",
           "emit_json", "format_option", "get_settings", "human_kib", "human_mib", "poll",
           "render_pairs", "render_table", "report_task", "show_list", "state_cell",
           "wait_task"]
