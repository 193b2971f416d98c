"""Declared plugin settings: one validator and one error format for every plugin, the
plugin instance model, ``pvcnoded --help-config`` and the generated docs/config.md."""

from __future__ import annotations

import pathlib
import subprocess
import sys
import types

import pytest

from pvc_kernel import config
from pvc_kernel.daemon import config_reference
from pvc_kernel.hookspecs import hookimpl
from pvc_kernel.plugins import PluginError, PluginHost
from pvc_kernel.settings import Setting, Settings

ROOT = pathlib.Path(__file__).resolve().parents[2]


def pair_check(values):
    if values["low"] > values["high"]:
        yield "low", f"must not exceed high ({values['high']})"


DECLARED = Settings(check=pair_check, groups={"bmc": "the board"}, keys=(
    Setting("name", str, "x", "a name"),
    Setting("count", int, 2, "how many", minimum=1, maximum=9),
    Setting("ratio", float, 0.5, "a share", minimum=0, maximum=1),
    Setting("mode", str, "a", "the mode", choices=("a", "b")),
    Setting("flag", bool, False, "on or off"),
    Setting("low", int, 1, "low end"),
    Setting("high", int, 5, "high end"),
    Setting("bmc.host", str, None, "address", required=True),
    Setting("bmc.password", str, None, "password", required=True, secret=True,
            check=lambda v: "at most 4 characters" if len(v) > 4 else None),
))


def test_defaults_and_good_values():
    values, problems = DECLARED.validate(None, "plugins.t")
    assert problems == []
    assert values["name"] == "x" and values["count"] == 2 and values["bmc"] is False
    values, problems = DECLARED.validate({"count": 3, "ratio": 1, "mode": "b", "flag": True,
                                          "bmc": {"host": "h", "password": "pw"}}, "plugins.t")
    assert problems == []
    assert values["ratio"] == 1.0 and isinstance(values["ratio"], float)
    assert values["bmc"] is True and values["bmc.host"] == "h"


@pytest.mark.parametrize("section, problem", [
    ({"name": 3}, "key 'plugins.t.name': must be of type str, not int (3)"),
    ({"count": True}, "key 'plugins.t.count': must be of type int, not bool (True)"),
    ({"count": 0}, "key 'plugins.t.count': must be between 1 and 9, not 0"),
    ({"ratio": 2}, "key 'plugins.t.ratio': must be between 0 and 1, not 2"),
    ({"mode": "c"}, "key 'plugins.t.mode': must be one of a, b, not 'c'"),
    ({"colour": 1}, "key 'plugins.t.colour': is not a known setting"),
    ({"bmc": 5}, "key 'plugins.t.bmc': must be a mapping, not int"),
    ({"bmc": {"host": "h", "port": 1, "password": "p"}},
     "key 'plugins.t.bmc.port': is not a known setting"),
    ({"bmc": {"password": "p"}}, "key 'plugins.t.bmc.host': is required"),
    ({"low": 7}, "key 'plugins.t.low': must not exceed high (5)"),
    ({"bmc": {"host": "h", "password": "hunter22"}},
     "key 'plugins.t.bmc.password': at most 4 characters"),
    ({"bmc": {"host": "h", "password": 12345}},
     "key 'plugins.t.bmc.password': must be of type str, not int"),
])
def test_every_problem_names_its_key_in_one_format(section, problem):
    values, problems = DECLARED.validate(section, "plugins.t")
    assert problems == [problem]
    assert "hunter22" not in repr(values) or values["bmc.password"] is None  # bad: default


def test_help_lists_every_key_with_default_type_and_help_but_no_secret():
    text = "\n".join(DECLARED.help_lines("t"))
    assert "count: 2  # how many [int, 1-9]" in text
    assert "mode: a  # the mode [a | b]" in text
    assert "bmc:  # the board" in text and "    host: null  # address [str, required]" in text
    secret = Settings(keys=(Setting("password", str, "topsecret", secret=True),))
    assert "topsecret" not in "\n".join(secret.help_lines("s"))


class Counter:
    """A plugin with state: entry points name such a class."""

    def __init__(self) -> None:
        self.calls = 0

    @hookimpl
    def pvc_config_settings(self) -> Settings:
        return Settings(keys=(Setting("step", int, 1, "how much", minimum=1),))

    @hookimpl
    def pvc_keepalive_stats(self, daemon):
        self.calls += 1
        return {"counter": {"calls": self.calls}}


def test_each_host_gets_its_own_plugin_instance():
    one, two = PluginHost(), PluginHost()
    one.register(Counter, "counter")
    two.register(Counter, "counter")
    assert one.plugin("counter") is not two.plugin("counter")
    one.call_each("pvc_keepalive_stats", daemon=None)
    one.call_each("pvc_keepalive_stats", daemon=None)
    assert dict(two.call_each("pvc_keepalive_stats", daemon=None)) == \
        {"counter": {"counter": {"calls": 1}}}
    assert one.plugin("counter").calls == 2


def node_config(plugins):
    return config.parse({"node": "hv1", "cluster": "c", "zookeeper": {"hosts": ["a:1"]},
                         "plugins": plugins})


def test_the_host_validates_sections_against_the_declarations():
    host = PluginHost()
    host.register(Counter, "counter")
    assert host.config_problems(node_config({"counter": {"step": 2}})) == []
    assert host.config_problems(node_config({"counter": {"step": 0, "stp": 1}})) == [
        "key 'plugins.counter.step': must be at least 1, not 0",
        "key 'plugins.counter.stp': is not a known setting"]


def test_a_plugin_without_hooks_or_with_a_bad_declaration_is_refused():
    with pytest.raises(PluginError, match="implements no hook .*name the plugin class"):
        PluginHost().register(types.ModuleType("empty"), "empty")

    class Wrong:
        @hookimpl
        def pvc_config_settings(self):
            return {"step": int}

    with pytest.raises(PluginError, match="must return a pvc_kernel.sdk.Settings, not dict"):
        PluginHost().register(Wrong, "wrong")

    class Wrapping:
        @hookimpl(wrapper=True)
        def pvc_keepalive_stats(self, daemon):
            return (yield)

    with pytest.raises(PluginError, match="hook wrappers are not supported"):
        PluginHost().register(Wrapping, "wrapping")

    class Broken:
        def __init__(self):
            raise OSError("no device")

    with pytest.raises(PluginError, match="'broken' could not be created: OSError: no device"):
        PluginHost().register(Broken, "broken")


def test_unknown_key_of_an_installed_plugin_stops_pvcnoded_with_one_line(tmp_path):
    f = tmp_path / "pvcnoded.yaml"
    f.write_text("node: hv1\ncluster: c\nzookeeper: {hosts: [a:1]}\n"
                 "plugins: {sample: {greetin: hi}}\n")
    proc = subprocess.run([sys.executable, "-m", "pvc_kernel.daemon", "--config", str(f)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"pvcnoded: configuration error in {f}: key 'plugins.sample.greetin': "
        "is not a known setting"]


def test_help_config_lists_every_declared_key_of_every_installed_plugin():
    proc = subprocess.run([sys.executable, "-m", "pvc_kernel.daemon", "--help-config"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    from pvc_plugins.fencing_ipmi.config import SETTINGS as fencing
    from pvc_plugins.storage_ceph.config import SETTINGS as ceph
    from pvc_plugins.vm_kvm.config import SETTINGS as vm

    for name, declared in (("vm_kvm", vm), ("storage_ceph", ceph), ("fencing_ipmi", fencing)):
        assert f"\n  {name}:\n" in proc.stdout
        for setting in declared.keys:
            assert f" {setting.key.rpartition('.')[2]}: " in proc.stdout, setting.key
    assert "keepalive_interval: 2" in proc.stdout and "hoststats: {}" in proc.stdout


def test_docs_config_md_is_generated_from_the_declarations():
    """Regenerate with: pvcnoded --help-config markdown > docs/config.md"""
    assert (ROOT / "docs" / "config.md").read_text() == config_reference("markdown")
