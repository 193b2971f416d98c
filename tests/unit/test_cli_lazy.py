"""Lazy loading (fast `pvc --help`), plugin command groups, help texts and shell completion."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
import types

import click
import pytest
from click.testing import CliRunner

try:
    import test_cli_support as support
except ImportError:  # collected as part of a package
    from tests.unit import test_cli_support as support

from pvc_cli.main import CORE_COMMANDS, PluginRef, cli, plugin_entry_points

run = support.run

PROBE = """
import sys
from pvc_cli.main import main
try:
    main({args!r})
except SystemExit:
    pass
heavy = sorted(m for m in ("requests", "urllib3") if m in sys.modules)
loaded = sorted(m for m in sys.modules if m.startswith("pvc_cli.commands."))
print("HEAVY=" + ",".join(heavy))
print("LOADED=" + ",".join(loaded))
"""


def probe(*args: str) -> dict[str, list[str]]:
    out = subprocess.run(
        [sys.executable, "-c", PROBE.format(args=list(args))],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "PVC_CLI_CONFIG": "/nonexistent/pvc.json"},
    )
    assert out.returncode == 0, out.stderr
    result = {}
    for line in out.stdout.splitlines():
        if line.startswith(("HEAVY=", "LOADED=")):
            key, _, value = line.partition("=")
            result[key] = [v for v in value.split(",") if v]
    return result


def test_top_level_help_imports_no_http_library():
    assert probe("--help")["HEAVY"] == []


def test_subcommand_help_imports_only_its_module():
    seen = probe("node", "list", "--help")
    assert seen["HEAVY"] == []
    assert seen["LOADED"] == ["pvc_cli.commands.node"]


def test_requests_imported_only_when_talking(tmp_path):
    out = subprocess.run(
        [sys.executable, "-c", PROBE.format(args=["node", "list"])],
        capture_output=True,
        text=True,
        timeout=60,
        env={
            "PATH": "/usr/bin:/bin",
            "PVC_CLI_CONFIG": str(tmp_path / "none.json"),
            "PVC_API_HOSTS": support.refused_address(),
        },
    )
    assert "HEAVY=requests,urllib3" in out.stdout
    assert "cannot reach the cluster" in out.stderr


def test_every_command_has_help_with_examples():
    def walk(cmd: click.Command, path: list[str]) -> None:
        result = run(*path, "-h")
        assert result.exit_code == 0, (path, result.output)
        assert "Example" in result.output, path
        if isinstance(cmd, click.Group):
            ctx = click.Context(cmd)
            for name in cmd.list_commands(ctx):
                walk(cmd.get_command(ctx, name), [*path, name])

    walk(cli, [])


def test_plugin_group_from_entry_point(monkeypatch):
    module = types.ModuleType("pvc_fake_plugin_cli")

    @click.group(help="Manage fake things.")
    def fake() -> None:
        pass

    @fake.command()
    def hello() -> None:
        click.echo("hello from plugin")

    module.fake = fake
    monkeypatch.setitem(sys.modules, "pvc_fake_plugin_cli", module)
    eps = {
        "fake": PluginRef("fake", "pvc_fake_plugin_cli:fake", "x"),
        "broken": PluginRef("broken", "pvc_missing_module_xyz:cli", "x"),
        "node": PluginRef("node", "pvc_fake_plugin_cli:fake", "x"),
    }
    monkeypatch.setattr("pvc_cli.main.plugin_entry_points", lambda: eps)

    top = run("--help")
    assert top.exit_code == 0
    assert "Manage fake things." in top.output
    assert "failed to load" in top.output  # listed, but does not break --help
    assert run("fake", "hello").stdout.strip() == "hello from plugin"
    assert "Inspect nodes" in run("node", "-h").output  # core commands win over plugins
    broken = run("broken", "anything")
    support.assert_one_error_line(broken, 1, "command 'broken'")


PLUGIN_MODULE = """
import click

@click.group(help="Demo plugin commands.")
def demo():
    pass

@demo.command()
def hello():
    \"\"\"Say hello.\"\"\"
    click.echo("hello from demo")
"""


def make_plugin_dist(root) -> None:
    """An installed-looking distribution declaring a `pvc.cli` entry point."""
    (root / "pvc_demo_cli.py").write_text(PLUGIN_MODULE)
    info = root / "pvc_demo-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: pvc-demo\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        "[console_scripts]\nx = y:z\n\n[pvc.cli]\ndemo = pvc_demo_cli:demo\n"
    )


def test_plugin_scan_matches_importlib_metadata(tmp_path, monkeypatch):
    make_plugin_dist(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    ours = {name: ref.value for name, ref in plugin_entry_points().items()}
    theirs = {ep.name: ep.value for ep in importlib.metadata.entry_points(group="pvc.cli")}
    assert ours == theirs
    assert ours["demo"] == "pvc_demo_cli:demo"


def test_installed_plugin_runs_in_a_real_process(tmp_path):
    make_plugin_dist(tmp_path)
    env = {
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": str(tmp_path),
        "PVC_CLI_CONFIG": str(tmp_path / "none.json"),
    }

    def pvc(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "pvc_cli", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    assert "Demo plugin commands." in pvc("--help").stdout
    assert pvc("demo", "hello").stdout.strip() == "hello from demo"


def test_core_commands_are_lazy_targets():
    for target in CORE_COMMANDS.values():
        assert ":" in target and target.startswith("pvc_cli.commands.")


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completion_scripts(shell):
    result = run("completion", shell)
    assert result.exit_code == 0, result.output
    assert "_PVC_COMPLETE" in result.stdout


def test_completion_of_commands(monkeypatch):
    monkeypatch.setenv("COMP_WORDS", "pvc no")
    monkeypatch.setenv("COMP_CWORD", "1")
    result = CliRunner().invoke(
        cli,
        [],
        prog_name="pvc",
        complete_var="_PVC_COMPLETE",
        env={"_PVC_COMPLETE": "bash_complete"},
    )
    assert "plain,node" in result.output


def test_a_plugin_adds_subcommands_to_another_plugins_group(monkeypatch):
    module = types.ModuleType("pvc_fake_ext_cli")

    @click.group(help="Manage fake VMs.")
    def fakevm() -> None:
        pass

    @fakevm.command()
    def info() -> None:
        click.echo("own info")

    @click.group(help="Snapshots of fake VMs.")
    def snapshot() -> None:
        pass

    @snapshot.command()
    def create() -> None:
        click.echo("snapshot created")

    @click.command(help="Deeper extension.")
    def deep() -> None:
        click.echo("deep")

    @click.command(help="Would shadow.")
    def shadow() -> None:
        click.echo("shadow")

    module.fakevm, module.snapshot, module.deep, module.shadow = fakevm, snapshot, deep, shadow
    monkeypatch.setitem(sys.modules, "pvc_fake_ext_cli", module)
    eps = {name: PluginRef(name, value, "x") for name, value in {
        "fakevm": "pvc_fake_ext_cli:fakevm",
        "fakevm.snapshot": "pvc_fake_ext_cli:snapshot",
        "fakevm.snapshot.deep": "pvc_fake_ext_cli:deep",
        "fakevm.info": "pvc_fake_ext_cli:shadow",
        "fakevm.gone": "pvc_missing_module_xyz:cli",
    }.items()}
    monkeypatch.setattr("pvc_cli.main.plugin_entry_points", lambda: eps)

    top = run("--help")
    assert top.exit_code == 0 and "fakevm.snapshot" not in top.output
    assert run("fakevm.snapshot", "create").exit_code != 0
    listed = run("fakevm", "--help").output
    assert "Snapshots of fake VMs." in listed and "failed to load" in listed
    assert run("fakevm", "snapshot", "create").stdout.strip() == "snapshot created"
    assert run("fakevm", "snapshot", "deep").stdout.strip() == "deep"
    assert run("fakevm", "info").stdout.strip() == "own info"     # the group's own wins
    support.assert_one_error_line(run("fakevm", "gone"), 1, "command 'gone'")
