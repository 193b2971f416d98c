"""The plugin's REST routes, declared with ``pvc_api.sdk``."""

from __future__ import annotations

from typing import Any

from pvc_api.sdk import ApiError, Call, Param, Route, zk
from pvc_sample_plugin import config

TAG = "sample"


def greetings(call: Call) -> list[dict[str, Any]]:
    """Each node's greeting, from its last keepalive."""
    api = call.api
    (nodes,) = zk.fetch(api.store, [zk.children("nodes")], api.zk_timeout)
    texts = zk.fetch(api.store, [zk.get("node.stats", node=n) for n in nodes], api.zk_timeout)
    out = []
    for node, text in zip(nodes, texts, strict=True):
        sample = zk.load_json(text, {}).get("sample")
        if isinstance(sample, dict):
            out.append({"node": node, "greeting": str(sample.get("greeting", "")),
                        "keepalives": int(sample.get("keepalives") or 0)})
    return out


def get_note(call: Call) -> dict[str, str]:
    """The note ("" when nobody left one)."""
    (text,) = zk.fetch(call.api.store, [zk.get("sample.note")], call.api.zk_timeout)
    return {"note": text or ""}


def set_note(call: Call) -> dict[str, str]:
    """Replace the note; 400 when it is longer than ``plugins.sample.note_limit``."""
    text = call.args["text"]
    limit = config.SETTINGS.values(call.api.config, config.NAME)["note_limit"]
    if len(text) > limit:
        raise ApiError(400, f"Parameter 'text' must be at most {limit} characters long.")
    if any(not c.isprintable() for c in text):
        raise ApiError(400, "Parameter 'text' must be one line of printable characters.")
    call.api.store.set("sample.note", text)
    return {"message": "Note saved."}


GREETING = {"type": "object", "properties": {"node": {"type": "string"},
                                             "greeting": {"type": "string"},
                                             "keepalives": {"type": "integer"}}}
NOTE = {"type": "object", "properties": {"note": {"type": "string"}}}
MESSAGE = {"type": "object", "properties": {"message": {"type": "string"}}}

ROUTES = [
    Route("GET", "/sample/greetings", greetings, "Each node's greeting", tag=TAG,
          responses={200: ("The greetings", {"type": "array", "items": GREETING})}),
    Route("GET", "/sample/note", get_note, "The note left for administrators", tag=TAG,
          responses={200: ("The note", NOTE)}),
    Route("PUT", "/sample/note", set_note, "Leave a note for administrators", tag=TAG,
          params=(Param("text", required=True, description="One line of text"),),
          responses={200: ("Saved", MESSAGE), 400: ("Bad text", MESSAGE)}),
]
