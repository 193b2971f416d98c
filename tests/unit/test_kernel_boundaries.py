"""The kernel must not know any subsystem: no imports of their libraries or names."""

from __future__ import annotations

import ast
import pathlib

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
