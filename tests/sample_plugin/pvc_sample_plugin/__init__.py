"""A third-party PVC plugin: reports a greeting and a counter in every keepalive."""

from __future__ import annotations

import itertools
from typing import Any

from pvc_kernel.sdk import hookimpl

_counter = itertools.count(1)


@hookimpl
def pvc_config_validate(config) -> list[str]:
    section = config.plugin_section("sample")
    greeting = section.get("greeting", "hello")
    if not isinstance(greeting, str):
        return [f"key 'plugins.sample.greeting': must be a string, not {type(greeting).__name__}"]
    return []


@hookimpl
def pvc_keepalive_stats(daemon) -> dict[str, Any]:
    greeting = daemon.config.plugin_section("sample").get("greeting", "hello")
    return {"sample": {"greeting": greeting, "keepalives": next(_counter)}}
