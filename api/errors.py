"""Every error answers ``{"message": "..."}``; unexpected ones are logged, never shown."""

from __future__ import annotations

import json
import logging
from typing import Any

import falcon
from kazoo.exceptions import (
    ConnectionClosedError,
    ConnectionLoss,
    OperationTimeoutError,
    SessionExpiredError,
)
from kazoo.handlers.threading import KazooTimeoutError

from pvc_kernel.state import ConflictError

log = logging.getLogger(__name__)

ZK_UNAVAILABLE = (ConnectionLoss, SessionExpiredError, ConnectionClosedError,
                  OperationTimeoutError, KazooTimeoutError)
"""kazoo exceptions that mean "ZooKeeper cannot be reached now" (→ 503)."""

UNAVAILABLE_MESSAGE = "The cluster state (ZooKeeper) is unreachable; try again later."

_DEFAULT_MESSAGES = {
    404: "The requested URL was not found on the server.",
    405: "The method is not allowed for the requested URL.",
}


class ApiError(Exception):
    """Answer ``status`` with ``{"message": message}`` (raised by handlers and checks)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _send(resp: falcon.Response, status: int, message: str) -> None:
    resp.status = status
    resp.content_type = falcon.MEDIA_JSON
    resp.data = json.dumps({"message": message}).encode()


def _serialize_http_error(req: falcon.Request, resp: falcon.Response,
                          exc: falcon.HTTPError) -> None:
    message = exc.description or _DEFAULT_MESSAGES.get(exc.status_code) or exc.title
    resp.content_type = falcon.MEDIA_JSON
    resp.data = json.dumps({"message": message}).encode()


def _api_error(req: falcon.Request, resp: falcon.Response, exc: ApiError, params: Any) -> None:
    _send(resp, exc.status, exc.message)


def _zk_unavailable(req: falcon.Request, resp: falcon.Response, exc: Exception,
                    params: Any) -> None:
    log.warning("%s %s: ZooKeeper unavailable (%s)", req.method, req.path, type(exc).__name__)
    _send(resp, 503, UNAVAILABLE_MESSAGE)


def _conflict(req: falcon.Request, resp: falcon.Response, exc: Exception, params: Any) -> None:
    _send(resp, 409, "Another request changed the same object at the same time; try again.")


def _unexpected(req: falcon.Request, resp: falcon.Response, exc: Exception,
                params: Any) -> None:
    log.error("%s %s failed", req.method, req.path, exc_info=exc)
    _send(resp, 500, "Internal Server Error")


def install(app: falcon.App) -> None:
    """Register the error handlers and the ``{"message"}`` serializer on ``app``.

    Falcon picks the most specific handler, so its own HTTPError (404, 405, a bad JSON body)
    keeps its default handler, which calls the serializer.
    """
    app.set_error_serializer(_serialize_http_error)
    app.add_error_handler(Exception, _unexpected)
    app.add_error_handler(ApiError, _api_error)
    app.add_error_handler(ConflictError, _conflict)
    app.add_error_handler(list(ZK_UNAVAILABLE), _zk_unavailable)
