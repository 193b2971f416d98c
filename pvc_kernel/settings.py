"""Declared plugin settings: a plugin lists the keys of its ``plugins.<name>`` section of
``pvcnoded.yaml`` (``pvc_config_settings``) and the kernel checks every section the same
way, lists the keys in ``pvcnoded --help-config`` and generates docs/config.md from them.

A key is a dotted name inside the section (``bmc.host`` is ``plugins.<name>.bmc.host``);
the part before the last dot is a group (a nested mapping). Every problem names its key
the same way as the kernel's own settings: ``key 'plugins.x.y': must be ...``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

Values = dict[str, Any]
"""Validated settings by dotted key, defaults filled in; a group present in the file
also appears as its own key with True (absent groups: False)."""


@dataclass(frozen=True)
class Setting:
    """One key of a plugin's section.

    ``kind``: str, int, float (an int is accepted and converted), bool, list or dict, or a
    tuple of them.
    ``check(value)`` returns a problem text (or None) for anything the other fields cannot
    say. ``required``: must be given whenever its group is (top level: always). ``secret``:
    its value never appears in a problem or in the help.
    """

    key: str
    kind: type | tuple[type, ...]
    default: Any = None
    help: str = ""
    choices: tuple[Any, ...] = ()
    minimum: float | None = None
    maximum: float | None = None
    check: Callable[[Any], str | None] | None = None
    required: bool = False
    secret: bool = False

    @property
    def group(self) -> str:
        return self.key.rpartition(".")[0]

    def describe(self) -> str:
        """Type and limits in a few words, for help and docs."""
        text = _kind_name(self.kind)
        if self.choices:
            text = " | ".join(map(str, self.choices))
        elif self.minimum is not None and self.maximum is not None:
            text += f", {_num(self.minimum)}-{_num(self.maximum)}"
        elif self.minimum is not None:
            text += f", ≥ {_num(self.minimum)}"
        elif self.maximum is not None:
            text += f", ≤ {_num(self.maximum)}"
        return text + (", required" if self.required else "")


@dataclass(frozen=True)
class Settings:
    """A plugin's declaration: its keys, checks across keys (``check(values)`` returns
    problems as ``(key, text)``; bad values are at their defaults by then), and a
    paragraph about the section for help and docs."""

    keys: tuple[Setting, ...]
    check: Callable[[Values], Iterable[tuple[str, str]]] | None = None
    about: str = ""
    groups: dict[str, str] = field(default_factory=dict)
    """Help text of each group (e.g. ``{"bmc": "this node's BMC"}``)."""

    def defaults(self) -> Values:
        values: Values = {s.key: s.default for s in self.keys}
        values.update({g: False for g in self._group_names()})
        return values

    def _group_names(self) -> list[str]:
        names: list[str] = []
        for s in self.keys:
            parts = s.key.split(".")[:-1]
            for i in range(1, len(parts) + 1):
                name = ".".join(parts[:i])
                if name not in names:
                    names.append(name)
        return names

    def validate(self, section: Any, prefix: str) -> tuple[Values, list[str]]:
        """The section's values (defaults for missing or bad ones) and every problem, each
        naming its full key (``prefix`` is e.g. ``plugins.<name>``)."""
        values = self.defaults()
        problems: list[str] = []

        def where(key: str) -> str:
            return f"key '{prefix}.{key}'" if key else f"key '{prefix}'"

        groups = set(self._group_names())
        by_key = {s.key: s for s in self.keys}

        def walk(mapping: Any, group: str) -> None:
            if not isinstance(mapping, dict):
                problems.append(f"{where(group)}: must be a mapping, not "
                                f"{type(mapping).__name__}")
                return
            if group:
                values[group] = True
            for name, value in mapping.items():
                key = f"{group}.{name}" if group else str(name)
                if key in groups:
                    if value is not None:
                        walk(value, key)
                elif key in by_key:
                    found = _one(by_key[key], value)
                    if isinstance(found, _Problem):
                        problems.append(f"{where(key)}: {found.text}")
                    elif found is not None:
                        values[key] = found
                else:
                    problems.append(f"{where(key)}: is not a known setting")
            for setting in self.keys:
                if setting.required and setting.group == group \
                        and mapping.get(setting.key.rpartition(".")[2]) is None:
                    problems.append(f"{where(setting.key)}: is required")

        walk(section if section is not None else {}, "")
        if self.check is not None:
            problems += [f"{where(key)}: {text}" for key, text in self.check(values)]
        return values, problems

    def values(self, config: Any, name: str) -> Values:
        """The plugin ``name``'s values from a NodeConfig (validated at start: problems
        were reported then, so bad values here fall back to their defaults)."""
        section = config.plugin_section(name) if config is not None else {}
        return self.validate(section, f"plugins.{name}")[0]

    def help_lines(self, prefix: str) -> list[str]:
        """The section as commented YAML: every key with its default, type and help."""
        lines = [f"# {line}" for line in self.about.splitlines()] if self.about else []
        lines.append(f"{prefix}:")
        shown: set[str] = set()
        for s in self.keys:
            parts = s.key.split(".")
            for depth in range(1, len(parts)):
                group = ".".join(parts[:depth])
                if group not in shown:
                    shown.add(group)
                    note = self.groups.get(group, "")
                    lines.append("  " * depth + f"{parts[depth - 1]}:"
                                 + (f"  # {note}" if note else ""))
            default = "<secret>" if s.secret and s.default is not None else _yaml(s.default)
            text = f"{s.help} [{s.describe()}]" if s.help else f"[{s.describe()}]"
            lines.append("  " * len(parts) + f"{parts[-1]}: {default}  # {text}")
        return lines


class _Problem:
    def __init__(self, text: str) -> None:
        self.text = text


def _one(s: Setting, value: Any) -> Any:
    """The checked value, None (use the default), or a _Problem."""
    if value is None:
        return None
    shown = "" if s.secret else f" ({value!r})"
    not_value = "" if s.secret else f", not {value!r}"
    if s.kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    kinds = s.kind if isinstance(s.kind, tuple) else (s.kind,)
    if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
        return _Problem(f"must be of type {_kind_name(s.kind)}, not "
                        f"{type(value).__name__}{shown}")
    if s.choices and value not in s.choices:
        return _Problem(f"must be one of {', '.join(map(str, s.choices))}{not_value}")
    low, high = s.minimum, s.maximum
    if low is not None and high is not None and not low <= value <= high:
        return _Problem(f"must be between {_num(low)} and {_num(high)}{not_value}")
    if low is not None and value < low:
        return _Problem(f"must be at least {_num(low)}{not_value}")
    if high is not None and value > high:
        return _Problem(f"must be at most {_num(high)}{not_value}")
    if s.check is not None:
        text = s.check(value)
        if text:
            return _Problem(f"{text}{not_value}")
    return value


def _kind_name(kind: type | tuple[type, ...]) -> str:
    return "/".join(k.__name__ for k in kind) if isinstance(kind, tuple) else kind.__name__


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _yaml(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return _num(value)
    if isinstance(value, (list, dict)):
        import json
        return json.dumps(value)
    return str(value)
