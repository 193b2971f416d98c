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
    FenceLost,
    Fencer,
    Policy,
    dead_nodes,
    decide,
    fence_info,
    new_record,
)
from pvc_plugins.fencing_ipmi.ipmi import BmcAccess, BmcError

BASE = {"node": "hv1", "cluster": "c", "zookeeper": {"hosts": ["zk:2181"]}}


# -- kernel liveness settings ---------------------------------------------------------------

def test_liveness_defaults_and_formula():
    cfg = kconfig.parse(dict(BASE))
    assert (cfg.keepalive_interval, cfg.fence_intervals, cfg.suicide_intervals) == (2.0, 6, 4)
    assert cfg.fence_delay == 12.0 and cfg.suicide_delay == 8.0
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
                 storage: dict[str, Any] | None = None, lose_after_saves: int | None = None,
                 conflict_at_save: int | None = None) -> None:
        self.power = power if power is not None else ["on", "off"]
        self.off_fails = off_fails
        self.storage = storage if storage is not None else {"ok": True, "detail": "cut",
                                                            "addresses": ["10.0.0.2"],
                                                            "cut_by": ["store"]}
        self.lose_after_saves = lose_after_saves    # the fence is lost after N saves
        self.conflict_at_save = conflict_at_save    # save number N loses a version race
        self.lost_now = False
        self.calls: list[tuple] = []
        self.saved: list[dict] = []
        self.faults: dict[str, tuple[str, int]] = {}
        self.progress_answers: list[bool] = []

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

    def recover(self, node, progress, fence):
        self.calls.append(("recover", node, fence))
        self.progress_answers.append(progress(1, 1, "vm1 on hv3"))
        return {"recovered": ["vm1"], "stopped": [], "failed": []}

    def lost(self):
        if self.lost_now or (self.lose_after_saves is not None
                             and len(self.saved) >= self.lose_after_saves):
            return "the fence lock was lost with the ZooKeeper session"
        return None

    def set_domain_state(self, node, observed, desired):
        self.calls.append(("domain_state", node, observed, desired))

    def save(self, record):
        if self.conflict_at_save is not None and len(self.saved) + 1 == self.conflict_at_save:
            raise FenceLost("the fence record of hv2 was changed by someone else")
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
    assert ("recover" in [c[0] for c in env.calls]) is recovered
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


def test_the_workload_plugins_learn_how_the_node_was_fenced():
    env = FakeEnv()
    fencer(env).run(new_record("hv2", "hv1", 21.0))
    (fence,) = [c[2] for c in env.calls if c[0] == "recover"]
    assert fence == {"powered_off": True, "storage_cut": ["store"]}
    env = FakeEnv(power=[], storage={"ok": True, "detail": "cut", "addresses": [],
                                     "cut_by": ["store"]})
    fencer(env, failed_fence="migrate").run(new_record("hv2", "hv1", 21.0))
    (fence,) = [c[2] for c in env.calls if c[0] == "recover"]
    assert fence == {"powered_off": False, "storage_cut": ["store"]}
    assert env.progress_answers == [False]          # still ours: go on
    # a failed cut protects nothing, whatever the plugins list
    assert fence_info({"power": {"ok": False}, "storage": {"ok": False, "cut_by": ["x"]}}) \
        == {"powered_off": False, "storage_cut": []}


@pytest.mark.parametrize("saves, steps_done", [(0, []), (1, [POWER]), (2, [POWER, STORAGE])])
def test_a_coordinator_that_lost_the_fence_stops_before_the_next_step(saves, steps_done):
    """Lock, session or primary role lost (or the monitor stopped): no further action."""
    env = FakeEnv(lose_after_saves=saves)
    with pytest.raises(FenceLost, match="lost with the ZooKeeper session"):
        fencer(env).run(new_record("hv2", "hv1", 21.0))
    assert [s["step"] for s in env.saved] == steps_done
    done = {c[0] for c in env.calls}
    if saves == 0:
        assert env.calls == []
    if saves <= 1:
        assert "storage_cut" not in done      # its storage is not cut (again)
    assert "recover" not in done and env.faults == {}


def test_a_fence_lost_during_recovery_saves_nothing_more():
    """The recovery is told to stop (progress answers True); its partial result is not
    saved, the node is not marked flushed, no fault: the new owner resumes it."""
    env = FakeEnv()
    f = fencer(env)
    record = new_record("hv2", "hv1", 21.0)
    for _ in range(3):
        record = f.step(record)
    assert record["step"] == RECOVER
    env.lost_now = True
    with pytest.raises(FenceLost):
        f.recover(record)
    assert env.progress_answers == [True]
    assert ("domain_state", "hv2", "flushed", None) not in env.calls
    assert [s["step"] for s in env.saved] == [POWER, STORAGE, RECOVER] and env.faults == {}


def test_a_lost_version_race_stops_the_fence():
    """Someone else wrote the record (a new primary resumed it): stop, overwrite nothing."""
    env = FakeEnv(conflict_at_save=2)
    with pytest.raises(FenceLost, match="changed by someone else"):
        fencer(env).run(new_record("hv2", "hv1", 21.0))
    assert [s["step"] for s in env.saved] == [POWER]
    assert "recover" not in {c[0] for c in env.calls} and env.faults == {}


def test_the_bmc_poll_stops_when_the_fence_is_lost():
    env = FakeEnv(power=["on"])
    f = fencer(env, power_timeout=1000)
    polls = iter(range(100))

    def sleep(_s: float) -> None:
        if next(polls) == 3:
            env.lost_now = True

    f.sleep = sleep
    with pytest.raises(FenceLost):
        f.run(new_record("hv2", "hv1", 21.0))
    assert env.saved == [] and len([c for c in env.calls if c[0] == "status"]) == 5


def test_the_fault_says_why_vms_were_left_stopped():
    class Stops(FakeEnv):
        def recover(self, node, progress, fence):
            return {"recovered": ["VM a: running on hv3"], "failed": [],
                    "stopped": ["VM b: not recovered, disk vda (file /srv/b.img) is not on "
                                "storage whose cut was confirmed"]}

    env = Stops(power=[])
    record = fencer(env, failed_fence="migrate").run(new_record("hv2", "hv1", 21.0))
    (message, delta), = env.faults.values()
    assert "stopped: 1" in message and "disk vda (file /srv/b.img)" in message
    assert delta == 50 and record["recovery"]["stopped"]


# -- liveness settings each node publishes ------------------------------------------------------

def test_detection_honours_each_nodes_own_delay():
    now = 1000.0
    nodes = {"hv2": ("run", now - 21), "hv3": ("run", now - 21)}
    assert dead_nodes(nodes, now, 20.0, 0, delays={"hv3": 30.0}) == [("hv2", 21.0)]
    assert dead_nodes(nodes, now, 20.0, 0, delays={"hv3": 5.0}) == [("hv2", 21.0),
                                                                   ("hv3", 21.0)]


def test_fence_delay_for_a_node_is_never_before_its_own_self_fence():
    primary = kconfig.parse({**BASE, "keepalive_interval": 2, "fence_intervals": 4,
                             "suicide_intervals": 2})                # fence delay 8 s
    slow = kconfig.parse({**BASE, "node": "hv9", "keepalive_interval": 5,
                          "fence_intervals": 5, "suicide_intervals": 3})
    assert slow.liveness() == {"keepalive_interval": 5.0, "fence_intervals": 5,
                               "suicide_intervals": 3}
    # hv9 self-fences after 15 s: the primary waits for 15 s + one of its 5 s intervals
    assert primary.fence_delay_for({kconfig.LIVENESS: slow.liveness()}) == 20.0
    fast = kconfig.parse({**BASE, "keepalive_interval": 1, "fence_intervals": 3,
                          "suicide_intervals": 1})
    assert primary.fence_delay_for({kconfig.LIVENESS: fast.liveness()}) == 8.0
    for static in (None, {}, {kconfig.LIVENESS: "x"}, {kconfig.LIVENESS: {"keepalive_interval":
                                                                         "?"}}):
        assert primary.fence_delay_for(static) == 8.0


def test_the_kernel_publishes_the_liveness_settings_in_the_static_data():
    from pvc_kernel.daemon import NodeDaemon
    from pvc_kernel.plugins import PluginHost

    cfg = kconfig.parse({**BASE, "keepalive_interval": 3, "fence_intervals": 6,
                         "suicide_intervals": 4})
    daemon = NodeDaemon(cfg, PluginHost())
    try:
        assert daemon.static_data()[kconfig.LIVENESS] == {
            "keepalive_interval": 3.0, "fence_intervals": 6, "suicide_intervals": 4}
    finally:
        daemon.store.client.close()


def test_the_sample_config_documents_the_liveness_and_fencing_settings():
    import pathlib

    sample = pathlib.Path(__file__).resolve().parents[2] / "deploy" / "pvcnoded.sample.yaml"
    cfg = kconfig.load(str(sample))
    assert (cfg.keepalive_interval, cfg.fence_intervals, cfg.suicide_intervals) == (2.0, 6, 4)
    fence_cfg, problems = fconfig.parse(cfg.plugin_section(fconfig.NAME))
    assert problems == [] and fence_cfg == fconfig.FenceConfig()    # the defaults, no BMC
    text = sample.read_text()
    for key in ("fence_intervals", "suicide_intervals", "fencing_ipmi", "# bmc:",
                "successful_fence", "failed_fence", "power_timeout", "ipmi_timeout",
                "check_interval"):
        assert key in text
