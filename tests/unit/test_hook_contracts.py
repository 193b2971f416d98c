"""The hook contracts are typed: every hookspec's annotations name real types, and no hook
receives or answers a bare ``Any`` where a contract type exists."""

from __future__ import annotations

import collections.abc
import inspect
import typing

from pvc_kernel import contracts, events, hookspecs, settings
from pvc_kernel.state import schema, store

NAMES = {**vars(hookspecs), **vars(contracts), "Event": events.Event, "Key": schema.Key,
         "Store": store.Store, "Settings": settings.Settings, "Callable": collections.abc.Callable}


def specs() -> dict[str, typing.Any]:
    return {n: f for n, f in vars(hookspecs).items()
            if n.startswith("pvc_") and inspect.isfunction(f)}


def test_every_hookspec_annotation_resolves():
    assert len(specs()) >= 25
    for name, fn in specs().items():
        hints = typing.get_type_hints(fn, globalns=NAMES)
        assert "return" in hints, name


def test_daemon_api_and_task_arguments_are_typed():
    for name, fn in specs().items():
        hints = typing.get_type_hints(fn, globalns=NAMES)
        for arg, typ in hints.items():
            if arg == "daemon":
                assert typ is contracts.NodeDaemonFace, name
            elif arg == "api":
                assert typ is contracts.ApiFace, name
            elif arg == "ctx":
                assert typ is contracts.TaskContextFace, name
            elif arg != "return":
                assert typ is not typing.Any, (name, arg)


def test_the_running_daemon_has_the_face_plugins_rely_on():
    from pvc_kernel import config
    from pvc_kernel.daemon import NodeDaemon
    from pvc_kernel.plugins import PluginHost

    daemon = NodeDaemon(config.parse({"node": "hv1", "cluster": "c",
                                      "zookeeper": {"hosts": ["127.0.0.1:1"]}}), PluginHost())
    try:
        wanted = set(typing.get_type_hints(contracts.NodeDaemonFace)) | {
            n for n, v in vars(contracts.NodeDaemonFace).items()
            if not n.startswith("_") and callable(v)}
        assert {"node", "store", "self_fence_deadline"} <= wanted
        assert [n for n in sorted(wanted) if not hasattr(daemon, n)] == []
        assert isinstance(daemon.config.fence_delay, float)
    finally:
        daemon.store.client.close()
