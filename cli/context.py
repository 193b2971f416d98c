"""Per-invocation settings shared by all commands (global options, the lazily built client)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import click

from pvc_cli.output import Painter

if TYPE_CHECKING:
    from pvc_cli.client import ApiClient


@dataclass
class Settings:
    connection: str | None = None
    colour: bool = False
    timeout: float = 30.0
    _client: Any = field(default=None, repr=False)

    @property
    def painter(self) -> Painter:
        return Painter(self.colour)

    def client(self) -> ApiClient:
        """The API client of the selected connection, built on first use (one per command)."""
        if self._client is None:
            from pvc_cli.client import ApiClient
            from pvc_cli.connections import resolve

            self._client = ApiClient(resolve(self.connection), timeout=self.timeout)
        return self._client


def get_settings() -> Settings:
    ctx = click.get_current_context()
    root = ctx.find_root()
    if not isinstance(root.obj, Settings):
        root.obj = Settings()
    return root.obj
