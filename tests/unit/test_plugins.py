"""Plugin discovery through entry points, hook contract checks and isolation."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import types

import pytest

from pvc_kernel import config
from pvc_kernel.hookspecs import hookimpl
from pvc_kernel.plugins import PluginError, PluginHost, available


class FakeDaemon:
    def __init__(self, sections=None):
        self.config = config.parse({"node": "hv1", "cluster": "c",
                                    "zookeeper": {"hosts": ["a:1"]},
                                    "plugins": sections or {}})


def test_builtin_and_third_party_plugins_are_discovered():
    names = available()
    assert "hoststats" in names  # built-in, from this project's pyproject
    assert "sample" in names     # third-party package installed from tests/sample_plugin


def test_third_party_plugin_contributes_a_keepalive_stat():
    host = PluginHost()
    host.load()
    stats = dict(host.call_each("pvc_keepalive_stats",
                                daemon=FakeDaemon({"sample": {"greeting": "hej"}})))
    assert stats["sample"]["sample"]["greeting"] == "hej"
    assert stats["hoststats"]["host"]["memory_total"] > 0


def test_disabled_plugin_is_not_loaded():
    host = PluginHost()
    host.load(disabled=["sample"])
    assert "sample" not in host.names and "hoststats" in host.names


def test_enabled_list_loads_only_those_and_names_unknown_ones():
    host = PluginHost()
    host.load(enabled=["hoststats", "sample"], disabled=["sample"])
    assert host.names == ["hoststats"]
    with pytest.raises(PluginError, match="not installed: nosuch"):
        PluginHost().load(enabled=["hoststats", "nosuch"])


def test_unknown_hook_implementation_fails_fast():
    plugin = types.ModuleType("typo_plugin")

    @hookimpl
    def pvc_keepalive_stat(daemon):  # missing "s": no such hook
        return {}

    plugin.pvc_keepalive_stat = pvc_keepalive_stat
    host = PluginHost()
    with pytest.raises(PluginError, match="plugin 'typo' does not fit the PVC hooks"):
        host.register(plugin, "typo")


def test_a_raising_implementation_does_not_stop_the_others(caplog):
    bad = types.ModuleType("bad")

    @hookimpl
    def pvc_keepalive_stats(daemon):
        raise RuntimeError("sensor gone")

    bad.pvc_keepalive_stats = pvc_keepalive_stats
    host = PluginHost()
    host.load()
    host.register(bad, "bad")
    results = dict(host.call_each("pvc_keepalive_stats", obj="node:hv1",
                                  daemon=FakeDaemon()))
    assert "bad" not in results and "hoststats" in results
    assert "plugin 'bad' failed in pvc_keepalive_stats for node:hv1" in caplog.text


def test_one_dispatcher_for_transitions_too_last_registered_first():
    """Node transitions go through call_each like every hook: the same order, failures
    collected, a cancellation (passthrough) and the per-plugin check stop the call."""
    calls = []

    class Cancelled(Exception):
        pass

    def plugin(name, fail=None):
        @hookimpl
        def pvc_node_flush(daemon, ctx):
            calls.append(name)
            if fail:
                raise fail
        return types.SimpleNamespace(pvc_node_flush=pvc_node_flush)

    host = PluginHost()
    host.register(plugin("first"), "first")
    host.register(plugin("broken", RuntimeError("no")), "broken")
    host.register(plugin("last"), "last")
    failures = []
    results = host.call_each("pvc_node_flush", failures=failures, daemon=None, ctx=None)
    assert calls == ["last", "broken", "first"]
    assert [n for n, _ in results] == ["last", "first"]
    assert [(n, str(e)) for n, e in failures] == [("broken", "no")]
    host.register(plugin("cancelling", Cancelled()), "cancelling")
    calls.clear()
    with pytest.raises(Cancelled):
        host.call_each("pvc_node_flush", passthrough=(Cancelled,), daemon=None, ctx=None)
    assert calls == ["cancelling"]
    checks = []

    def check():
        checks.append(1)
        if len(checks) == 2:
            raise Cancelled()
    calls.clear()
    with pytest.raises(Cancelled):
        host.call_each("pvc_node_flush", before_each=check, daemon=None, ctx=None)
    assert calls == ["cancelling"]                 # the check stopped the call before "last"


def test_a_firstresult_hook_stops_at_the_first_answer():
    """pvc_vm_disk_unlock has side effects: once a plugin answered, no other is asked."""
    calls = []

    def plugin(name, answer, fail=False):
        @hookimpl
        def pvc_vm_disk_unlock(daemon, vm, disk):
            calls.append(name)
            if fail:
                raise RuntimeError("broken")
            return answer
        return types.SimpleNamespace(pvc_vm_disk_unlock=pvc_vm_disk_unlock)

    host = PluginHost()
    host.register(plugin("second_storage", {"ok": True, "removed": 9}), "second_storage")
    host.register(plugin("storage", {"ok": True, "removed": 1}), "storage")
    host.register(plugin("broken", None, fail=True), "broken")
    host.register(plugin("files", None), "files")
    args = {"daemon": None, "vm": {}, "disk": {}}
    assert host.call_first("pvc_vm_disk_unlock", **args) == {"ok": True, "removed": 1}
    assert calls == ["files", "broken", "storage"]          # second_storage never asked
    with pytest.raises(ValueError, match="not a firstresult hook"):
        host.call_first("pvc_node_flush", daemon=None, ctx=None)


def _broken_plugin_env(tmp_path):
    """A plugin package whose import raises, declared through a real entry point."""
    (tmp_path / "broken_plugin.py").write_text("raise ImportError('needs libfoo')\n")
    dist = tmp_path / "broken_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[pvc.plugins]\nbroken = broken_plugin\n")
    cfg = tmp_path / "pvcnoded.yaml"
    cfg.write_text("node: hv1\ncluster: c\nzookeeper: {hosts: [a:1]}\n")
    env = dict(os.environ, PYTHONPATH=str(tmp_path))
    return cfg, env


def test_plugin_that_fails_to_import_stops_the_daemon_naming_it(tmp_path):
    cfg, env = _broken_plugin_env(tmp_path)
    proc = subprocess.run([sys.executable, "-m", "pvc_kernel.daemon", "--config", str(cfg)],
                          capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 3
    assert "plugin 'broken' (broken_plugin) failed to load: ImportError: needs libfoo" \
        in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_misspelt_hook_stops_the_daemon_with_one_line_naming_it(tmp_path):
    (tmp_path / "typo_plugin.py").write_text(textwrap.dedent("""
        from pvc_kernel.sdk import hookimpl

        class TypoPlugin:
            @hookimpl
            def pvc_keepalive_stat(self, daemon):   # no such hook: pvc_keepalive_stats
                return {}
    """))
    dist = tmp_path / "typo_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: typo-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[pvc.plugins]\ntypo = typo_plugin:TypoPlugin\n")
    cfg = tmp_path / "pvcnoded.yaml"
    cfg.write_text("node: hv1\ncluster: c\nzookeeper: {hosts: [a:1]}\n")
    proc = subprocess.run([sys.executable, "-m", "pvc_kernel.daemon", "--config", str(cfg)],
                          capture_output=True, text=True, timeout=60,
                          env=dict(os.environ, PYTHONPATH=str(tmp_path)))
    assert proc.returncode == 3 and "Traceback" not in proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("pvcnoded: plugin 'typo' does not fit the PVC hooks: unknown hook "
                           "'pvc_keepalive_stat'"), line


def test_broken_plugin_disabled_in_config_is_skipped(tmp_path):
    cfg, env = _broken_plugin_env(tmp_path)
    cfg.write_text(cfg.read_text() + "plugins: {disabled: [broken]}\n")
    code = textwrap.dedent(f"""
        from pvc_kernel.daemon import build
        d = build({str(cfg)!r})
        print(",".join(d.plugins.names))
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "broken" not in proc.stdout and "hoststats" in proc.stdout
