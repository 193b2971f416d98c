"""The kernel must not know any subsystem: no imports of their libraries or names."""

from __future__ import annotations

import ast
import pathlib
import re

KERNEL = pathlib.Path(__file__).resolve().parents[2] / "pvc_kernel"
FORBIDDEN_MODULES = {"libvirt", "rados", "rbd", "pyroute2", "pyghmi", "pvc_plugins", "pvc_api",
                     "pvc_cli"}


def test_kernel_imports_no_subsystem_library():
    offenders = []
    for source in KERNEL.rglob("*.py"):
        tree = ast.parse(source.read_text(), str(source))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [f"{source.name}: {n}" for n in names
                          if n.split(".")[0] in FORBIDDEN_MODULES]
    assert offenders == []


PLUGINS = KERNEL.parent / "plugins"
SDK = {"pvc_kernel": "pvc_kernel.sdk", "pvc_api": "pvc_api.sdk", "pvc_cli": "pvc_cli.sdk"}


def _imports(source: pathlib.Path) -> list[str]:
    tree = ast.parse(source.read_text(), str(source))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append(node.module)
    return found


SAMPLE = KERNEL.parent / "tests" / "sample_plugin"


def test_plugins_use_only_the_sdk_and_nothing_of_another_plugin():
    """A built-in plugin, and the third-party sample plugin, import the kernel, the API and
    the CLI only through their SDK modules (pvc_kernel.sdk, pvc_api.sdk, pvc_cli.sdk), never
    the lab, and no other plugin: exactly what a third-party plugin may do."""
    offenders = []
    sample = sorted(SAMPLE.glob("pvc_sample_plugin/*.py"))
    assert len(sample) >= 5
    for source in sorted(PLUGINS.rglob("*.py")) + sample:
        own = source.relative_to(PLUGINS).parts[0] if source.is_relative_to(PLUGINS) else ""
        where = source.relative_to(KERNEL.parent)
        for name in _imports(source):
            top = name.split(".")[0]
            if top in SDK and name != SDK[top]:
                offenders.append(f"{where}: {name} (use {SDK[top]})")
            elif top == "pvc_lab":
                offenders.append(f"{where}: {name}")
            elif top == "pvc_plugins" and name.split(".")[1:2] not in ([own], []):
                offenders.append(f"{where}: {name} (another plugin)")
    assert offenders == []


def test_the_sdk_modules_export_what_they_promise():
    import importlib

    for module in SDK.values():
        sdk = importlib.import_module(module)
        missing = [n for n in sdk.__all__ if not hasattr(sdk, n)]
        assert sdk.__doc__ and missing == [], module


COMMON_WORDS = {"health"}


def test_the_kernel_names_no_plugin_not_even_as_a_string():
    """No built-in plugin's name appears anywhere in the kernel's source: the kernel reaches
    plugins only through hooks."""
    names = {p.name for p in PLUGINS.iterdir() if p.is_dir() and (p / "plugin.py").exists()}
    assert {"vm_kvm", "storage_ceph", "fencing_ipmi", "hoststats", "health"} <= names
    # "health" is also the kernel's own word (faults' health_delta, the health-check hook's
    # contract): that plugin is looked for as a module path or a quoted name only.
    patterns = {name: re.compile(rf"pvc_plugins\.{name}\b|[\"']{name}[\"']"
                                 if name in COMMON_WORDS else re.escape(name))
                for name in names}
    offenders = [f"{source.relative_to(KERNEL)}: {name}"
                 for source in sorted(KERNEL.rglob("*.py"))
                 for name in sorted(names) if patterns[name].search(source.read_text())]
    assert offenders == []


ROOT = KERNEL.parent
STATE = KERNEL / "state"


def _is_store(node: ast.expr) -> bool:
    """``store``, ``self.store``, ``x.store``, ``api.store``... (a name ending in ``store``)."""
    if isinstance(node, ast.Name):
        return node.id.lower().endswith("store")
    return isinstance(node, ast.Attribute) and node.attr.lower().endswith("store")


def test_only_the_state_package_touches_the_kazoo_client():
    """ZooKeeper is reached through ``Store``'s methods (schema key names, the secret-key ACLs,
    one pipelined read, the lock helpers): no ``store.client`` anywhere else in the kernel,
    the API, the CLI or the plugins, and no plugin takes a raw kazoo lock (``store.lock``;
    ``locked``/``try_lock`` always release and never leak kazoo's recipe)."""
    offenders = []
    for top in ("pvc_kernel", "api", "cli", "plugins"):
        for source in sorted((ROOT / top).rglob("*.py")):
            if source.is_relative_to(STATE):
                continue
            tree = ast.parse(source.read_text(), str(source))
            where = source.relative_to(ROOT)
            for node in ast.walk(tree):
                if (isinstance(node, ast.Attribute) and node.attr == "client"
                        and _is_store(node.value)):
                    offenders.append(f"{where}:{node.lineno}: {ast.unparse(node)}")
                elif (top == "plugins" and isinstance(node, ast.Call)
                      and isinstance(node.func, ast.Attribute) and node.func.attr == "lock"
                      and _is_store(node.func.value)):
                    offenders.append(f"{where}:{node.lineno}: {ast.unparse(node.func)}(...)")
    assert offenders == []
