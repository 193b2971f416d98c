"""The plugin's section of pvcnoded.yaml, ``plugins.sample``."""

from __future__ import annotations

from pvc_kernel.sdk import Setting, Settings

NAME = "sample"

SETTINGS = Settings(
    about="The sample third-party plugin (tests/sample_plugin, docs/plugins.md).",
    keys=(
        Setting("greeting", str, "hello", "what this node says in every keepalive"),
        Setting("note_limit", int, 200, "the longest note PUT /sample/note accepts, in "
                "characters", minimum=1, maximum=10000),
        Setting("hang_check", bool, False, "also add the health check sample_hang, which "
                "never returns (to show how a hung check is reported)"),
    ))
