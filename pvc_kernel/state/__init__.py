"""ZooKeeper state: the schema (every key path), the client store and migrations."""

from pvc_kernel.state import schema
from pvc_kernel.state.store import ConflictError, LockBusy, Store

__all__ = ["schema", "Store", "ConflictError", "LockBusy"]
