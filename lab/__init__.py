"""pvc_lab: a real multi-node PVC cluster on one machine, in network namespaces.

``pvc-lab`` (``pvc_lab.cli``) for people, ``pvc_lab.Lab`` for tests and benchmarks::

    lab = Lab(name="pvc")
    lab.up(nodes=4)                   # 3 coordinators + 1 client
    lab.daemon_kill(lab.primary())    # and watch another coordinator take over
    lab.store().get("config.primary_node")
    lab.down()
"""

from pvc_lab.lab import Lab, LabError
from pvc_lab.observe import admin_namespace, enter_admin_namespace
from pvc_lab.services import Service, default_services

__all__ = ["Lab", "LabError", "Service", "admin_namespace", "default_services",
           "enter_admin_namespace"]
