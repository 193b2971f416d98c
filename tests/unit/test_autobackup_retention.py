"""Autobackup's chain arithmetic: when a full is due, and what retention prunes."""

from __future__ import annotations

from pvc_plugins.vm_protect.autobackup import plan, prune


def _runs(count: int, interval: int, force_at: tuple[int, ...] = ()) -> list[dict]:
    history: list[dict] = []
    for i in range(count):
        parent = plan(history, interval, i in force_at)
        history.append({"name": f"ab{i:02d}", "parent": parent})
    return history


def test_the_first_backup_is_full_then_incrementals_from_it():
    history = _runs(3, 7)
    assert [b["parent"] for b in history] == [None, "ab00", "ab00"]


def test_a_full_every_interval_runs():
    history = _runs(15, 7)
    fulls = [b["name"] for b in history if b["parent"] is None]
    assert fulls == ["ab00", "ab07", "ab14"]
    assert history[8]["parent"] == "ab07"


def test_interval_one_is_always_full_and_force_full_starts_a_chain():
    assert all(b["parent"] is None for b in _runs(4, 1))
    history = _runs(5, 7, force_at=(2,))
    assert [b["parent"] for b in history] == [None, "ab00", None, "ab02", "ab02"]


def test_retention_keeps_the_newest_fulls_with_their_incrementals():
    history = _runs(15, 7)               # fulls ab00, ab07, ab14
    kept, dropped = prune(history, 2)
    assert [b["name"] for b in kept][0] == "ab07" and len(kept) == 8
    assert [b["name"] for b in dropped] == [f"ab{i:02d}" for i in range(7)]
    kept, dropped = prune(history, 3)
    assert dropped == [] and kept == history


def test_retention_never_drops_the_chain_being_built():
    history = _runs(9, 7)                # ab00 + 6 incrementals, ab07 + ab08
    kept, _dropped = prune(history, 1)
    assert [b["name"] for b in kept] == ["ab07", "ab08"]
