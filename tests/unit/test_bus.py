"""Bus delivery: ordered per object, parallel across objects, failures isolated."""

from __future__ import annotations

import threading
import time

from pvc_kernel.bus import Bus
from pvc_kernel.events import TimerFired


def test_events_of_one_object_run_in_order_and_never_overlap():
    seen: list[int] = []
    active = []
    overlap = []

    def handler(event):
        active.append(event.obj)
        if active.count(event.obj) > 1:
            overlap.append(event)
        time.sleep(0.002)
        seen.append(int(event.name))
        active.remove(event.obj)

    bus = Bus(handler, workers=4)
    for i in range(50):
        bus.publish(TimerFired(obj="vm:a", name=str(i)))
    assert bus.wait_idle(10)
    bus.stop()
    assert seen == list(range(50))
    assert overlap == []


def test_different_objects_run_in_parallel():
    barrier = threading.Barrier(3, timeout=5)
    passed = []

    def handler(event):
        barrier.wait()  # only returns if three objects are handled at the same time
        passed.append(event.obj)

    bus = Bus(handler, workers=3)
    for obj in ("vm:a", "vm:b", "vm:c"):
        bus.publish(TimerFired(obj=obj, name="x"))
    assert bus.wait_idle(10)
    bus.stop()
    assert sorted(passed) == ["vm:a", "vm:b", "vm:c"]


def test_a_raising_handler_is_logged_and_delivery_goes_on(caplog):
    handled = []

    def handler(event):
        if event.name == "boom":
            raise RuntimeError("handler broke")
        handled.append(event.name)

    bus = Bus(handler, workers=2)
    bus.publish(TimerFired(obj="vm:a", name="boom"))
    bus.publish(TimerFired(obj="vm:a", name="after"))
    bus.publish(TimerFired(obj="vm:b", name="other"))
    assert bus.wait_idle(10)
    bus.stop()
    assert sorted(handled) == ["after", "other"]
    failure = [r for r in caplog.records if "event handler failed" in r.getMessage()]
    assert failure and "vm:a" in failure[0].getMessage()
    assert "handler broke" in caplog.text


def test_timer_publishes_until_stopped():
    fired = []
    bus = Bus(lambda e: fired.append(e.name), workers=1)
    bus.every(0.02, "tick")
    time.sleep(0.2)
    bus.stop()
    count = len(fired)
    time.sleep(0.1)
    assert count >= 3
    assert len(fired) == count
