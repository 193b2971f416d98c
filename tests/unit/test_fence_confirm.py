"""Fence faults that settle once their cause is over, and an operator's power-off
confirmation: the pure logic (fake environment) and the `pvc node fence confirm` command."""

from __future__ import annotations

import copy

import pytest

try:
    import test_cli_support as support
    from test_fencing_logic import FakeEnv, fencer
except ImportError:  # collected as part of a package
    from tests.unit import test_cli_support as support
    from tests.unit.test_fencing_logic import FakeEnv, fencer

from pvc_plugins.fencing_ipmi.fence import (
    DEAD,
    DONE,
    FAULT_DELTA_FAILED,
    FAULT_DELTA_FENCED,
    STORAGE,
    alive_refusal,
    apply_confirm,
    confirm_pending,
    confirm_refusal,
    confirmed_by,
    decide,
    fault_id,
    fence_info,
    new_record,
    reject_confirm,
    request_confirm,
    settle_message,
    worked,
)
from pvc_plugins.fencing_ipmi.fence import Policy as FencePolicy


def failed_fence(**policy) -> tuple[FakeEnv, dict]:
    """A fence whose BMC never answered, run to the end (default policy: nothing recovered)."""
    env = FakeEnv(power=[])
    return env, fencer(env, **policy).run(new_record("hv2", "hv1", 21.0))


# -- which faults settle ----------------------------------------------------------------------

def test_only_a_fence_that_worked_is_settled_when_its_node_is_back():
    env = FakeEnv()
    ok = fencer(env).run(new_record("hv2", "hv1", 21.0))
    assert worked(ok) and env.faults[fault_id(ok)][1] == FAULT_DELTA_FENCED
    _env, failed = failed_fence()
    assert not worked(failed)

    class Fails(FakeEnv):
        def recover(self, node, progress, fence):
            return {"recovered": [], "stopped": [], "failed": ["VM a: did not start"]}

    env = Fails()
    vm_failed = fencer(env).run(new_record("hv2", "hv1", 21.0))
    assert not worked(vm_failed) and env.faults[fault_id(vm_failed)][1] == FAULT_DELTA_FAILED
    assert not worked({**ok, "step": STORAGE})          # unfinished


def test_the_settled_message_says_why_once():
    text = settle_message("Node hv2 was declared dead", "hv2", "2026-01-01 10:00:00")
    assert text.endswith("[Resolved: node hv2 rejoined the cluster at 2026-01-01 10:00:00.]")
    assert settle_message(text, "hv2", "2026-01-02 11:00:00") == text


# -- confirmation --------------------------------------------------------------------------------

def test_alive_refusal():
    assert alive_refusal("dead", 100.0, 130.0, 20.0) is None
    assert "not dead" in alive_refusal("run", 100.0, 130.0, 20.0)
    assert "not dead" in alive_refusal("fenced", 100.0, 130.0, 20.0)
    assert "only 5.0 s old" in alive_refusal("dead", 125.0, 130.0, 20.0)
    assert alive_refusal("dead", None, 130.0, 20.0) is None        # never wrote one


def test_what_can_be_confirmed():
    _env, failed = failed_fence()
    assert confirm_refusal(failed) is None
    assert "no fence" in confirm_refusal(None) and "no fence" in confirm_refusal({})
    under_way = new_record("hv2", "hv1", 21.0)
    assert "under way (step dead)" in confirm_refusal(under_way)
    ok = fencer(FakeEnv()).run(new_record("hv2", "hv1", 21.0))
    assert "already reported the power off" in confirm_refusal(ok)
    asked = request_confirm(failed, "alice@ws1", "10.0.0.9", now=2000.0)
    assert "alice@ws1 already confirmed" in confirm_refusal(asked)
    assert confirm_refusal(reject_confirm(asked, "it wrote a keepalive")) is None


def test_a_request_is_pending_until_applied_or_rejected():
    _env, failed = failed_fence()
    before = copy.deepcopy(failed)
    asked = request_confirm(failed, "alice@ws1", "10.0.0.9", now=2000.0)
    assert failed == before                                 # not changed in place
    assert confirm_pending(asked) and confirmed_by(asked) is None
    assert asked["step"] == DONE and asked["confirm"] == {
        "by": "alice@ws1", "source": "10.0.0.9", "requested": 2000.0, "applied": None,
        "rejected": None}
    assert "confirmed by alice@ws1 (from 10.0.0.9)" in asked["history"][-1][2]
    rejected = reject_confirm(asked, "its daemon state is run, not dead", now=2001.0)
    assert not confirm_pending(rejected) and rejected["confirm"]["rejected"]
    applied = apply_confirm(asked, now=2002.0)
    assert not confirm_pending(applied) and confirmed_by(applied) == "alice@ws1"
    assert applied["step"] == STORAGE and applied["outcome"] is None
    assert applied["storage"] == failed["storage"]          # not cut again


def test_an_applied_confirmation_recovers_as_after_a_verified_power_off():
    env, failed = failed_fence()
    assert [c for c in env.calls if c[0] == "recover"] == []
    reopened = apply_confirm(request_confirm(failed, "alice@ws1", "10.0.0.9"))
    env.calls.clear()
    done = fencer(env).run(reopened, by="hv1")
    assert [c[0] for c in env.calls] == ["domain_state", "recover", "domain_state"]
    (fence,) = [c[2] for c in env.calls if c[0] == "recover"]
    assert fence["powered_off"] is True and fence_info(done)["powered_off"] is True
    assert done["decision"] == "migrate" and done["outcome"] == "confirmed-off,recovered"
    assert "power off confirmed by alice@ws1" in done["history"][-2][2]
    message, delta = env.faults[fault_id(done)]
    assert delta == FAULT_DELTA_FENCED and worked(done)
    assert "power off failed" in message and "alice@ws1 confirmed it was off" in message
    assert "VMs recovered: 1" in message and [h[1] for h in done["history"]][0] == DEAD


def test_a_confirmation_follows_the_successful_fence_policy():
    decision, why = decide(False, None, FencePolicy(successful_fence="none"), "alice@ws1")
    assert decision == "none" and why == "power off confirmed by alice@ws1; " \
                                         "successful_fence=none"
    assert decide(False, False, FencePolicy(), "bob")[0] == "migrate"
    assert decide(False, False, FencePolicy())[0] == "none"


# -- the CLI -------------------------------------------------------------------------------------

@pytest.fixture
def api(monkeypatch, tmp_path):
    with support.fake_api_env(monkeypatch, tmp_path) as fake:
        yield fake


def test_cli_refuses_without_yes(api):
    result = support.run("node", "fence", "confirm", "hv3")
    support.assert_one_error_line(result, 2, "without --yes")
    assert api.calls("POST", "/node/hv3/fence/confirm") == []


def test_cli_sends_the_confirmation_with_the_operator(api):
    api.route("POST", "/node/hv3/fence/confirm", status=202,
              body={"message": "Power off of node hv3 confirmed by me@ws; the primary recovers "
                               "its VMs as if it was fenced."})
    result = support.run("node", "fence", "confirm", "hv3", "--yes")
    assert result.exit_code == 0, result.output
    (call,) = api.calls("POST", "/node/hv3/fence/confirm")
    assert "@" in call.param("operator")
    assert result.stdout.splitlines()[0].startswith("Power off of node hv3 confirmed")


def test_cli_shows_a_refusal_on_one_line(api):
    api.route("POST", "/node/hv3/fence/confirm", status=409,
              body={"message": "Refusing to confirm the power off of node hv3: its last "
                               "keepalive is only 1.0 s old (fence delay 20 s): it is alive, "
                               "not powered off."})
    result = support.run("node", "fence", "confirm", "hv3", "--yes")
    support.assert_one_error_line(result, 1, "it is alive, not powered off")


def test_help_explains_the_danger():
    result = support.run("node", "fence", "confirm", "--help")
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    assert "runs twice" in text and "--yes" in text and "stonith_admin --confirm" in text
    assert "fence" in support.run("node", "--help").output
