"""The plugin's config section and the KVM probe's decisions (no libvirt needed)."""

from __future__ import annotations

import json

from pvc_plugins.vm_kvm import probe
from pvc_plugins.vm_kvm.config import VmConfig, parse


def test_defaults_and_values():
    cfg, problems = parse({})
    assert problems == [] and cfg == VmConfig()
    assert cfg.flush_concurrency == 2 and cfg.libvirt_uri == "qemu:///system"
    cfg, problems = parse({"libvirt_uri": "qemu+tcp://10.0.0.1/system", "flush_concurrency": 4,
                           "shutdown_timeout": 30, "memory_total": 2048, "virt_type": "qemu"})
    assert problems == []
    assert (cfg.flush_concurrency, cfg.shutdown_timeout, cfg.memory_total) == (4, 30.0, 2048)


def test_problems_name_the_key():
    _, problems = parse({"flush_concurrency": 0, "virt_type": "xen", "libvirt_uri": "nope",
                         "poll_interval": True, "bogus": 1, "probe_kernel": "/k"})
    text = "\n".join(problems)
    assert "key 'plugins.vm_kvm.flush_concurrency': must be between 1 and 64, not 0" in text
    assert "key 'plugins.vm_kvm.virt_type': must be one of auto, kvm, qemu" in text
    assert "key 'plugins.vm_kvm.libvirt_uri': must be a libvirt URI" in text
    assert "key 'plugins.vm_kvm.poll_interval': must be of type float, not bool" in text
    assert "key 'plugins.vm_kvm.bogus': is not a known setting" in text
    assert "probe_kernel and probe_initrd go together" in text


def test_probe_static_checks(tmp_path):
    dev = tmp_path / "kvm"
    dev.write_text("")
    assert "not usable" in probe.static_checks({"vmx"}, str(tmp_path / "missing"))
    assert "no vmx/svm" in probe.static_checks({"hypervisor"}, str(dev))
    assert probe.static_checks({"svm"}, str(dev)) is None


def test_probe_forced_and_cached(tmp_path, monkeypatch):
    assert probe.decide(None, "kvm").virt_type == "kvm"
    assert probe.decide(None, "qemu").virt_type == "qemu"
    cache = tmp_path / "probe.json"
    calls = []
    monkeypatch.setattr(probe, "static_checks", lambda flags: calls.append(flags) or None)
    monkeypatch.setattr(probe, "real_test", lambda *a, **k: "the kvm test domain died")
    first = probe.decide(object(), "auto", str(cache), flags={"vmx"})
    assert first.virt_type == "qemu" and "died" in first.reason and not first.cached
    again = probe.decide(object(), "auto", str(cache), flags={"vmx"})
    assert again.cached and again.virt_type == "qemu" and len(calls) == 1
    assert json.loads(cache.read_text())["verdict"]["virt_type"] == "qemu"
    other = probe.decide(object(), "auto", str(cache), flags={"svm"})   # other key: probes again
    assert len(calls) == 2 and not other.cached
