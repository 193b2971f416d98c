"""The plugin class that the ``pvc.plugins`` entry point names; pvcnoded and pvcapid each
make one instance and register it, so its attributes are that daemon's plugin state."""

from __future__ import annotations

import itertools
from typing import Any

from pvc_kernel.sdk import Settings, hookimpl
from pvc_sample_plugin import config, keys


class SamplePlugin:
    def __init__(self) -> None:
        self.keepalives = itertools.count(1)
        self.greeting: str | None = None      # read once from the config, then kept

    @hookimpl
    def pvc_config_settings(self) -> Settings:
        return config.SETTINGS

    @hookimpl
    def pvc_schema_keys(self) -> list[Any]:
        return list(keys.KEYS)

    @hookimpl
    def pvc_keepalive_stats(self, daemon: Any) -> dict[str, dict[str, Any]]:
        if self.greeting is None:
            self.greeting = config.SETTINGS.values(daemon.config, config.NAME)["greeting"]
        return {"sample": {"greeting": self.greeting, "keepalives": next(self.keepalives)}}

    @hookimpl
    def pvc_health_checks(self, daemon: Any) -> list[Any]:
        from pvc_sample_plugin import health

        found: list[Any] = [health.SampleCheck()]
        if config.SETTINGS.values(daemon.config, config.NAME)["hang_check"]:
            found.append(health.HangingCheck())
        return found

    @hookimpl
    def pvc_api_routes(self, api: Any) -> None:
        from pvc_sample_plugin import api as routes

        for route in routes.ROUTES:
            api.add_route(route)
