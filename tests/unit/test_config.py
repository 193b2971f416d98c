"""Config validation: every problem names its key."""

from __future__ import annotations

import subprocess
import sys

import pytest

from pvc_kernel import config

MINIMAL = {"node": "hv1", "cluster": "c1", "zookeeper": {"hosts": ["10.0.0.1:2181"]}}


def problems(data) -> list[str]:
    with pytest.raises(config.ConfigError) as exc:
        config.parse(data, "test.yaml")
    return exc.value.problems


def test_minimal_config_gets_defaults():
    cfg = config.parse(dict(MINIMAL))
    assert cfg.keepalive_interval == 2.0
    assert cfg.coordinator is False
    assert cfg.zookeeper_hosts == ["10.0.0.1:2181"]
    assert cfg.api.port == 7370 and cfg.api.enabled is False
    assert cfg.disabled_plugins == []


def test_comma_separated_hosts_are_split():
    cfg = config.parse({**MINIMAL, "zookeeper": {"hosts": "a:1, b:2"}})
    assert cfg.zookeeper_hosts == ["a:1", "b:2"]


def test_missing_required_keys_are_named():
    found = problems({"coordinator": True})
    assert "key 'node': is required" in found
    assert "key 'cluster': is required" in found
    assert "key 'zookeeper.hosts': is required" in found


def test_wrong_type_names_key_and_value():
    found = problems({**MINIMAL, "keepalive_interval": "fast"})
    assert found == ["key 'keepalive_interval': must be of type float, not str ('fast')"]


def test_bool_is_not_an_integer():
    assert problems({**MINIMAL, "api": {"port": True}}) == [
        "key 'api.port': must be an integer, not True"]


def test_minimum_and_choices():
    found = problems({**MINIMAL, "keepalive_interval": 0.1, "log": {"level": "loud"}})
    assert "key 'keepalive_interval': must be at least 0.5, not 0.1" in found
    assert any(p.startswith("key 'log.level': must be one of debug") for p in found)


def test_unknown_keys_are_rejected():
    found = problems({**MINIMAL, "keepalive": 5, "zookeeper": {"hosts": ["a"], "tmeout": 3}})
    assert "key 'keepalive': is not a known setting" in found
    assert "key 'zookeeper.tmeout': is not a known setting" in found


def test_bad_node_name():
    assert problems({**MINIMAL, "node": "hv 1"}) == [
        "key 'node': 'hv 1' may hold only letters, digits, '-', '_' and '.'"]


def test_plugin_sections_and_disabled():
    cfg = config.parse({**MINIMAL, "plugins": {"disabled": ["x"], "sample": {"greeting": "hi"}}})
    assert cfg.disabled_plugins == ["x"]
    assert cfg.plugin_section("sample") == {"greeting": "hi"}
    assert cfg.plugin_section("other") == {}
    assert problems({**MINIMAL, "plugins": {"sample": 3}}) == [
        "key 'plugins.sample': must be a mapping, not int"]


def test_plugins_enabled_is_an_optional_list():
    assert config.parse(MINIMAL).enabled_plugins is None
    cfg = config.parse({**MINIMAL, "plugins": {"enabled": ["vm_kvm"], "vm_kvm": {}}})
    assert cfg.enabled_plugins == ["vm_kvm"] and "enabled" not in cfg.plugin_sections
    assert problems({**MINIMAL, "plugins": {"enabled": "vm_kvm"}}) == [
        "key 'plugins.enabled': must be a list of plugin names (or null for all)"]


def test_load_reports_yaml_position(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("node: hv1\ncluster: [unclosed\n")
    with pytest.raises(config.ConfigError) as exc:
        config.load(str(f))
    assert "is not valid YAML at line" in str(exc.value)
    assert str(f) in str(exc.value)


def test_load_missing_file(tmp_path):
    with pytest.raises(config.ConfigError, match="does not exist"):
        config.load(str(tmp_path / "nope.yaml"))


def test_daemon_exits_with_one_line_and_no_traceback(tmp_path):
    f = tmp_path / "pvcnoded.yaml"
    f.write_text("node: hv1\ncluster: c\nzookeeper: {hosts: [a:1]}\nkeepalive_interval: -1\n")
    proc = subprocess.run([sys.executable, "-m", "pvc_kernel.daemon", "--config", str(f)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"pvcnoded: configuration error in {f}: key 'keepalive_interval': "
        "must be at least 0.5, not -1.0"]


def test_plugin_section_validated_against_the_plugins_declaration(tmp_path):
    f = tmp_path / "pvcnoded.yaml"
    f.write_text("node: hv1\ncluster: c\nzookeeper: {hosts: [a:1]}\n"
                 "plugins: {sample: {greeting: 5}, nosuch: {}, hoststats: {interval: 5}}\n")
    proc = subprocess.run([sys.executable, "-m", "pvc_kernel.daemon", "--config", str(f)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "key 'plugins.sample.greeting': must be of type str, not int (5)" in proc.stderr
    assert "key 'plugins.nosuch': no plugin named 'nosuch' is installed" in proc.stderr
    assert ("key 'plugins.hoststats': plugin 'hoststats' takes no settings (found: interval)"
            in proc.stderr)                 # a plugin without settings gets none unseen
    assert "Traceback" not in proc.stderr


def test_shipped_sample_config_is_valid():
    import pathlib
    sample = pathlib.Path(__file__).resolve().parents[2] / "deploy" / "pvcnoded.sample.yaml"
    cfg = config.load(str(sample))
    assert cfg.coordinator and cfg.api.enabled and len(cfg.zookeeper_hosts) == 3


def test_pvcapid_checks_the_plugin_sections_as_pvcnoded_does(tmp_path):
    from pvc_api import server

    f = tmp_path / "pvcnoded.yaml"
    f.write_text("node: hv1\ncluster: c\nzookeeper: {hosts: [a:1]}\n"
                 "plugins: {nosuch: {}, hoststats: {interval: 5}, disabled: [vm_kvm], "
                 "vm_kvm: {anything: 1}}\n")
    with pytest.raises(config.ConfigError) as exc:
        server.load(str(f))
    assert exc.value.problems == [
        "key 'plugins.nosuch': no plugin named 'nosuch' is installed",
        "key 'plugins.hoststats': plugin 'hoststats' takes no settings (found: interval)"]
