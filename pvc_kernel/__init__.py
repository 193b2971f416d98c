"""The PVC microkernel: ZooKeeper state, primary election, event bus and plugin host.

It knows nothing of any subsystem; everything host-specific lives in plugins.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("pvc")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0"
