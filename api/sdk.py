"""The plugin SDK, API side: what a plugin may use to add REST routes to pvcapid (through
the ``pvc_api_routes`` hook), and nothing else; the rest of ``pvc_api`` is internal.

* ``Route``/``Param`` declare a route and its parameters (validated, documented in the
  OpenAPI document); a handler gets a ``Call`` (``call.api``, ``call.args``) and returns a
  JSON-able value or a ``Reply`` (status, body, headers); a ``RawJson`` value is sent as
  it is.
* ``ApiError(status, message)`` answers ``{"message": ...}`` with a 4xx/5xx status.
* ``ref``/``array_of`` name OpenAPI schemas; ``zk`` reads ZooKeeper in pipelined batches
  with the API's time-out; ``params`` converts parameter values.
"""

from __future__ import annotations

from pvc_api import params, zk
from pvc_api.errors import ApiError
from pvc_api.schemas import array_of, ref
from pvc_api.spec import Call, Param, RawJson, Reply, Route

__all__ = ["ApiError", "Call", "Param", "RawJson", "Reply", "Route", "array_of", "params",
           "ref", "zk"]
