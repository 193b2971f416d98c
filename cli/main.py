"""The `pvc` command: a lazy top-level group.

Core command groups are imported by module path only when used (or listed by --help);
plugin packages add groups through the entry-point group `pvc.cli`, e.g. in their
pyproject.toml:

    [project.entry-points."pvc.cli"]
    vm = "pvc_plugins.vm_kvm.cli:vm"

and subcommands to another package's group with a dotted name: ``vm.snapshot =
"pkg.cli:snapshot"`` makes `pvc vm snapshot` (the group's own commands win).

Nothing heavy (requests, urllib3) is imported until a command talks to the API.
"""

from __future__ import annotations

import importlib
import os
import sys
from dataclasses import dataclass
from typing import Any

import click

from pvc_cli import __version__
from pvc_cli.errors import EXIT_INTERRUPTED, PvcError

CORE_COMMANDS: dict[str, str] = {
    "cluster": "pvc_cli.commands.cluster:cluster",
    "node": "pvc_cli.commands.node:node",
    "task": "pvc_cli.commands.task:task",
    "connection": "pvc_cli.commands.connection:connection",
    "completion": "pvc_cli.commands.completion:completion",
}

PLUGIN_GROUP = "pvc.cli"
CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


@dataclass(frozen=True)
class PluginRef:
    """One `pvc.cli` entry point: NAME = module:attribute."""

    name: str
    value: str
    dist: str


def plugin_entry_points() -> dict[str, PluginRef]:
    """The `pvc.cli` entry points by name; nothing is imported here.

    Reads the entry_points.txt of the installed distributions on sys.path directly: the same
    data importlib.metadata gives, at about a twentieth of its start-up cost. The first
    distribution of a name on sys.path wins, like importlib.metadata.
    """
    found: dict[str, PluginRef] = {}
    seen_dists: set[str] = set()
    for base in sys.path:
        try:
            entries = sorted(os.scandir(base or "."), key=lambda e: e.name)
        except OSError:
            continue
        for entry in entries:
            if not entry.name.endswith((".dist-info", ".egg-info")):
                continue
            dist = entry.name.rsplit(".", 1)[0].split("-")[0].lower().replace("_", "-")
            if dist in seen_dists:
                continue
            seen_dists.add(dist)
            try:
                with open(os.path.join(entry.path, "entry_points.txt"), encoding="utf-8") as fh:
                    text = fh.read()
            except OSError:
                continue
            if f"[{PLUGIN_GROUP}]" in text:
                for name, value in _group_entries(text, PLUGIN_GROUP):
                    found.setdefault(name, PluginRef(name, value, dist))
    return found


def _group_entries(text: str, group: str) -> list[tuple[str, str]]:
    """`name = value` lines of one [group] of an entry_points.txt (an INI file)."""
    out, current = [], None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            current = line[1:-1].strip()
        elif current == group and "=" in line:
            name, value = line.split("=", 1)
            out.append((name.strip(), value.split("[", 1)[0].strip()))  # drop [extras]
    return out


def _load_target(target: str) -> Any:
    module, _, attrs = target.partition(":")
    obj: Any = importlib.import_module(module.strip())
    for attr in filter(None, attrs.strip().split(".")):
        obj = getattr(obj, attr)
    return obj


class LazyGroup(click.Group):
    """A click group whose subcommands are imported on demand."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        names = set(CORE_COMMANDS) | set(self.commands)
        try:
            names |= {name for name in plugin_entry_points() if "." not in name}
        except Exception:  # a broken installation must not break `pvc --help`
            pass
        return sorted(names)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.commands:
            return self.commands[cmd_name]
        if "." in cmd_name:          # `vm.snapshot` is an extension, not a command
            return None
        target = CORE_COMMANDS.get(cmd_name)
        if target is None:
            try:
                ep = plugin_entry_points().get(cmd_name)
            except Exception:
                ep = None
            if ep is None:
                return None
            target = ep.value
        try:
            cmd = _load_target(target)
            if not isinstance(cmd, click.Command):
                raise TypeError(f"{target} is not a click command")
        except Exception as exc:
            return _broken_command(cmd_name, target, exc)
        if isinstance(cmd, click.Group):
            extend(cmd, cmd_name)
        return cmd

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except KeyboardInterrupt:
            raise PvcError("interrupted", EXIT_INTERRUPTED) from None
        except Exception as exc:
            if os.environ.get("PVC_CLI_DEBUG"):
                raise
            raise PvcError(
                f"internal error: {type(exc).__name__}: {exc} (set PVC_CLI_DEBUG=1 for a traceback)"
            ) from None


def extend(group: click.Group, path: str) -> None:
    """Add the `pvc.cli` entry points named ``PATH.SUB`` to ``group`` as its subcommand
    ``SUB`` (and deeper: ``PATH.SUB.X`` to that one, if it is a group). A command the group
    already has wins; one that fails to load becomes a stand-in that says why."""
    try:
        entries = plugin_entry_points()
    except Exception:
        return
    prefix = path + "."
    for name, ref in sorted(entries.items()):
        sub = name[len(prefix):] if name.startswith(prefix) else ""
        if not sub or "." in sub or sub in group.commands:
            continue
        try:
            cmd = _load_target(ref.value)
            if not isinstance(cmd, click.Command):
                raise TypeError(f"{ref.value} is not a click command")
        except Exception as exc:
            cmd = _broken_command(sub, ref.value, exc)
        else:
            if isinstance(cmd, click.Group):
                extend(cmd, name)
        group.add_command(cmd, sub)


def _broken_command(name: str, target: str, exc: Exception) -> click.Command:
    """A stand-in that keeps `pvc --help` working and reports the problem when run."""
    reason = f"{type(exc).__name__}: {exc}"

    def fail() -> None:
        raise PvcError(f"the command {name!r} ({target}) failed to load: {reason}")

    return click.Command(
        name,
        callback=fail,
        help=f"[failed to load: {reason}]",
        short_help=f"[failed to load: {reason}]",
        context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    )


def _complete_connection(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[str]:
    try:
        from pvc_cli.connections import load_store

        return [n for n in sorted(load_store().connections) if n.startswith(incomplete)]
    except Exception:
        return []


@click.group(
    cls=LazyGroup,
    context_settings=CONTEXT_SETTINGS,
    epilog="Run `pvc COMMAND -h` for the help of a command.",
)
@click.option(
    "-c",
    "--connection",
    metavar="NAME",
    shell_complete=_complete_connection,
    help="Cluster connection to use (default: $PVC_CLUSTER, else $PVC_API_HOSTS, "
    "else the default or only saved connection).",
)
@click.option(
    "--colour/--no-colour",
    "--color/--no-color",
    "colour",
    default=None,
    help="Colour the output (default: only on a terminal and when NO_COLOR is unset).",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0.1),
    default=30.0,
    show_default=True,
    envvar="PVC_CLI_TIMEOUT",
    metavar="SECONDS",
    help="How long to wait for one API answer [env PVC_CLI_TIMEOUT].",
)
@click.version_option(__version__, "-V", "--version", prog_name="pvc")
@click.pass_context
def cli(ctx: click.Context, connection: str | None, colour: bool | None, timeout: float) -> None:
    """pvc: manage a PVC hyperconverged cluster through its HTTP API.

    \b
    Examples:
      pvc connection add lab --address 10.0.0.1,10.0.0.2 --api-key SECRET
      pvc cluster status
      pvc node list
      pvc node flush hv1 --wait
      PVC_API_HOSTS=10.0.0.1:7370 PVC_API_KEY=SECRET pvc node list -f json
    """
    from pvc_cli.context import Settings
    from pvc_cli.output import colour_default

    ctx.obj = Settings(
        connection=connection,
        colour=colour_default() if colour is None else colour,
        timeout=timeout,
    )


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point (`pvc`)."""
    cli.main(args=argv, prog_name="pvc", complete_var="_PVC_COMPLETE")


if __name__ == "__main__":  # pragma: no cover
    main(sys.argv[1:])
