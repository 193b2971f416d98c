"""Fencing: config, detection, policies and the fence state machine on a fake environment."""

from __future__ import annotations

from typing import Any

import pytest

from pvc_kernel import config as kconfig
from pvc_plugins.fencing_ipmi import config as fconfig
from pvc_plugins.fencing_ipmi.fence import (
    DEAD,
    DONE,
    POWER,
    RECOVER,
    STORAGE,
    Fencer,
    Policy,
    dead_nodes,
    decide,
    new_record,
)
from pvc_plugins.fencing_ipmi.ipmi import BmcAccess, BmcError

BASE = {"node": "hv1", "cluster": "c", "zookeeper": {"hosts": ["zk:2181"]}}


# -- kernel liveness settings ---------------------------------------------------------------

def test_liveness_defaults_and_formula():
    cfg = kconfig.parse(dict(BASE))
    assert (cfg.keepalive_interval, cfg.fence_intervals, cfg.suicide_intervals) == (5.0, 4, 2)
    assert cfg.fence_delay == 20.0 and cfg.suicide_delay == 10.0
    cfg = kconfig.parse({**BASE, "keepalive_interval": 2, "fence_intervals": 5,
                         "suicide_intervals": 3})
    assert cfg.fence_delay == 10.0 and cfg.suicide_delay == 6.0


@pytest.mark.parametrize("fence, suicide", [(4, 4), (3, 5), (2, 2)])
def test_suicide_must_come_before_the_fence(fence, suicide):
    with pytest.raises(kconfig.ConfigError) as err:
        kconfig.parse({**BASE, "fence_intervals": fence, "suicide_intervals": suicide})
    assert "key 'suicide_intervals': must be less than fence_intervals" in str(err.value)


def test_liveness_settings_are_checked():
    with pytest.raises(kconfig.ConfigError) as err:
        kconfig.parse({**BASE, "fence_intervals": 1, "suicide_intervals": 0})
    text = str(err.value)
    assert "key 'fence_intervals': must be at least 2" in text
    assert "key 'suicide_intervals': must be at least 1" in text


# -- plugin section ---------------------------------------------------------------------------

def test_plugin_section_parses_and_hides_the_password():
    cfg, problems = fconfig.parse({"bmc": {"host": "10.0.1.1", "user": "admin",
                                           "password": "s3cret"}, "failed_fence": "migrate"})
    assert problems == []
    assert cfg.bmc == BmcAccess("10.0.1.1", "admin", "s3cret", 623)
    assert "s3cret" not in repr(cfg) and "s3cret" not in repr(cfg.bmc)
    assert cfg.bmc.public() == {"host": "10.0.1.1", "port": 623, "user": "admin"}
    assert (cfg.successful_fence, cfg.failed_fence) == ("migrate", "migrate")


def test_plugin_section_problems_name_the_key():
    _cfg, problems = fconfig.parse({"bmc": {"host": "h", "password": "p" * 21, "port": 0},
                                    "successful_fence": "reboot", "power_timeout": "x",
                                    "colour": 1})
    text = "; ".join(problems)
    for key in ("bmc.user", "bmc.password", "bmc.port", "successful_fence", "power_timeout",
                "colour"):
        assert f"key 'plugins.fencing_ipmi.{key}'" in text
    assert "p" * 21 not in text


def test_no_section_means_no_bmc_and_default_policies():
    cfg, problems = fconfig.parse(None)
    assert problems == [] and cfg.bmc is None
    assert (cfg.successful_fence, cfg.failed_fence) == ("migrate", "none")


# -- detection --------------------------------------------------------------------------------

def test_dead_nodes_are_silent_running_nodes():
    now = 1000.0
    nodes = {"hv1": ("run", now - 1), "hv2": ("run", now - 21), "hv3": ("stop", now - 99),
             "hv4": ("dead", now - 99), "hv5": ("init", now - 50), "hv6": ("run", None)}
    assert dead_nodes(nodes, now, 20.0, watching_since=0) == [("hv2", 21.0), ("hv6", 1000.0)]


def test_detection_waits_a_whole_fence_delay_after_our_own_outage():
    now = 1000.0
    nodes = {"hv2": ("run", now - 60)}
    assert dead_nodes(nodes, now, 20.0, watching_since=now - 5) == []
    assert dead_nodes(nodes, now, 20.0, watching_since=now - 25) == [("hv2", 60.0)]


# -- policies ---------------------------------------------------------------------------------

@pytest.mark.parametrize("power_ok, storage_ok, successful, failed, expected", [
    (True, True, "migrate", "none", "migrate"),
    (True, None, "migrate", "none", "migrate"),
    (True, False, "migrate", "none", "migrate"),
    (True, True, "none", "migrate", "none"),
    (False, True, "migrate", "none", "none"),
    (False, True, "migrate", "migrate", "migrate"),
    (False, False, "migrate", "migrate", "none"),    # never without a cut
    (False, None, "migrate", "migrate", "none"),
])
def test_decide(power_ok, storage_ok, successful, failed, expected):
    decision, why = decide(power_ok, storage_ok, Policy(successful, failed))
    assert decision == expected and why


# -- the state machine ----------------------------------------------------------------------

class FakeEnv:
    def __init__(self, power: list[str] | None = None, off_fails: bool = False,
                 storage: dict[str, Any] | None = None) -> None:
        self.power = power if power is not None else ["on", "off"]
        self.off_fails = off_fails
        self.storage = storage if storage is not None else {"ok": True, "detail": "cut",
                                                            "addresses": ["10.0.0.2"]}
        self.calls: list[tuple] = []
        self.saved: list[dict] = []
        self.faults: dict[str, tuple[str, int]] = {}

    def bmc_power_state(self, node):
        self.calls.append(("status", node))
        if not self.power:
            raise BmcError("BMC 10.0.1.2:623 power status: no answer within 8 s")
        return self.power.pop(0) if len(self.power) > 1 else self.power[0]

    def bmc_power_off(self, node):
        self.calls.append(("off", node))
        if self.off_fails:
            raise BmcError("BMC 10.0.1.2:623 power off: timeout")

    def set_daemon_state(self, node, state):
        self.calls.append(("daemon_state", node, state))

    def storage_cut(self, node):
        self.calls.append(("storage_cut", node))
        return dict(self.storage)

    def recover(self, node, progress):
        self.calls.append(("recover", node))
        progress(1, 1, "vm1 on hv3")
        return {"recovered": ["vm1"], "stopped": [], "failed": []}

    def set_domain_state(self, node, observed, desired):
        self.calls.append(("domain_state", node, observed, desired))

    def save(self, record):
        self.saved.append(dict(record))

    def fault(self, fault_id, message, delta):
        self.faults[fault_id] = (message, delta)

    def log(self, message):
        pass


def fencer(env: FakeEnv, **policy: Any) -> Fencer:
    clock = iter(range(1000, 100000))
    return Fencer(env, Policy(poll=0, **policy), clock=lambda: float(next(clock)),
                  sleep=lambda _s: None)


def test_successful_fence_powers_off_then_cuts_storage_then_recovers():
    env = FakeEnv()
    record = fencer(env).run(new_record("hv2", "hv1", 21.0))
    names = [c[0] for c in env.calls]
    assert names == ["status", "off", "status", "daemon_state", "storage_cut", "domain_state",
                     "recover", "domain_state"]
    assert ("daemon_state", "hv2", "fenced") in env.calls
    assert env.calls[-3] == ("domain_state", "hv2", "fence-flush", "flushed")
    assert env.calls[-1] == ("domain_state", "hv2", "flushed", None)
    assert [s["step"] for s in env.saved] == [POWER, STORAGE, RECOVER, DONE]
    assert record["outcome"] == "fenced,recovered"
    assert record["power"]["ok"] is True and record["recovery"]["recovered"] == ["vm1"]
    (fid, (message, delta)), = env.faults.items()
    assert fid == f"fence-hv2-{record['id']}" and delta == 10
    assert "powered off" in message and "VMs recovered: 1" in message


def test_a_node_already_off_is_not_powered_off_again():
    env = FakeEnv(power=["off"])
    fencer(env).run(new_record("hv2", "hv1", 21.0))
    assert ("off", "hv2") not in env.calls


def test_unreachable_bmc_with_default_policy_recovers_nothing():
    env = FakeEnv(power=[])
    record = fencer(env).run(new_record("hv2", "hv1", 21.0))
    assert record["power"]["ok"] is False and "no answer" in record["power"]["detail"]
    assert not any(c[0] in ("daemon_state", "recover", "domain_state") for c in env.calls)
    assert ("storage_cut", "hv2") in env.calls          # cut anyway: it can only help
    assert record["decision"] == "none" and record["outcome"] == "fence-failed,not-recovered"
    (message, delta), = env.faults.values()
    assert delta == 50 and "NOT recovered" in message and "power off failed" in message


def test_power_that_stays_on_is_a_failed_fence():
    env = FakeEnv(power=["on"])
    record = fencer(env, power_timeout=5).run(new_record("hv2", "hv1", 21.0))
    assert record["power"]["ok"] is False and "still reports power on" in \
        record["power"]["detail"]


@pytest.mark.parametrize("cut_ok, recovered", [(True, True), (False, False)])
def test_failed_fence_migrates_only_after_a_storage_cut(cut_ok, recovered):
    env = FakeEnv(power=[], storage={"ok": cut_ok, "detail": "x", "addresses": []})
    record = fencer(env, failed_fence="migrate").run(new_record("hv2", "hv1", 21.0))
    assert (("recover", "hv2") in env.calls) is recovered
    assert record["outcome"] == ("fence-failed,recovered" if recovered
                                 else "fence-failed,not-recovered")
    assert ("daemon_state", "hv2", "fenced") not in env.calls


def test_a_fence_resumes_from_its_saved_step():
    """The next primary picks the record up where the dead one saved it."""
    env = FakeEnv()
    first = fencer(env)
    record = first.step(new_record("hv2", "hv1", 21.0))          # power off done, saved
    assert record["step"] == POWER
    env.calls.clear()
    resumed = fencer(env).run(dict(env.saved[-1]))
    assert [c[0] for c in env.calls] == ["daemon_state", "storage_cut", "domain_state",
                                         "recover", "domain_state"]
    assert resumed["step"] == DONE and [h[1] for h in resumed["history"]] == \
        [DEAD, POWER, STORAGE, RECOVER, DONE]
