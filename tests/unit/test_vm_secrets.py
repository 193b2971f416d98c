"""vm_kvm hands storage secrets to libvirtd and disk access to the XML (fakes for both)."""

from __future__ import annotations

import logging
from types import SimpleNamespace

from pvc_plugins.vm_kvm import disks

KEY = "QVFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFB"


class FakeHv:
    def __init__(self, fail: bool = False) -> None:
        self.secrets: dict[str, tuple] = {}
        self.fail = fail

    def set_secret(self, uuid, usage_type, usage_name, value):
        if self.fail:
            raise RuntimeError("libvirt says no")
        self.secrets[uuid] = (usage_type, usage_name, value)


def daemon_with(*answers):
    """Plugins answering ``answers`` ([(plugin, answer)]) through call_each, and the first
    non-None of them through call_first (firstresult hooks)."""
    plugins = SimpleNamespace(
        call_each=lambda hook, obj="", **kw: list(answers),
        call_first=lambda hook, obj="", **kw: next((a for _n, a in answers if a is not None),
                                                   None))
    return SimpleNamespace(plugins=plugins, node="hv1")


def test_every_secret_reaches_libvirt():
    hv = FakeHv()
    d = daemon_with(("storage_ceph", [{"uuid": "u1", "usage_type": "ceph",
                                       "usage_name": "pvc client.admin secret",
                                       "value": KEY}]), ("other", None))
    assert disks.sync_secrets(d, hv) == 1
    assert hv.secrets == {"u1": ("ceph", "pvc client.admin secret", KEY)}


def test_a_failing_secret_is_logged_without_its_value(caplog):
    d = daemon_with(("storage_ceph", [{"uuid": "u1", "value": KEY}]))
    with caplog.at_level(logging.WARNING):
        assert disks.sync_secrets(d, FakeHv(fail=True)) == 0
    assert "u1" in caplog.text and KEY not in caplog.text


def test_prepare_collects_access_per_target():
    xml = ("<domain><name>v</name><devices><disk type='network'><source protocol='rbd' "
           "name='p/v'/><target dev='vda'/></disk></devices></domain>")
    access = {"hosts": [{"name": "10.0.0.1", "port": "6789"}], "username": "admin",
              "secret": "u1"}
    d = daemon_with(("storage_ceph", {"ok": True, "shared": True, "libvirt": access}))
    rec = SimpleNamespace(uuid="x", name="v", xml=xml)
    assert disks.prepare(d, rec, "start") == ("", {"vda": access})
    refused = daemon_with(("storage_ceph", {"ok": False, "reason": "locked"}))
    assert disks.prepare(refused, rec, "start") == ("locked", {})
