"""HTTP client of the PVC API with fail-over between a connection's addresses.

`requests` is imported on first use only, so that `pvc --help` stays fast.
"""

from __future__ import annotations

import errno
import json
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from pvc_cli import __version__
from pvc_cli.connections import Connection, Endpoint
from pvc_cli.errors import EXIT_UNREACHABLE, PvcError, UnreachableError

FAILOVER_STATUSES = (502, 503)
DEFAULT_TIMEOUT = 30.0
CONNECT_TIMEOUT = 3.05


@dataclass
class ApiResponse:
    status: int
    data: Any
    endpoint: Endpoint


def api_message(data: Any) -> str:
    """The human text of an API answer: `message` (a str, or {param: text} for bad parameters)."""
    if isinstance(data, dict):
        msg = data.get("message")
        if isinstance(msg, dict):
            return "; ".join(f"{k}: {v}" for k, v in msg.items())
        if msg is not None:
            return str(msg)
        if "title" in data:  # a framework error body that slipped through
            desc = data.get("description")
            return f"{data['title']}: {desc}" if desc else str(data["title"])
    if data is None:
        return ""
    text = data if isinstance(data, str) else json.dumps(data)
    return text[:200]


class ApiClient:
    """Talks to one cluster. Tries the addresses in order and remembers the one that answered."""

    def __init__(self, conn: Connection, timeout: float = DEFAULT_TIMEOUT):
        self.conn = conn
        self.endpoints = conn.endpoints()
        self.timeout = timeout
        self.connect_timeout = min(CONNECT_TIMEOUT, timeout)
        self._current = 0
        self._session: Any = None
        self._verify: bool | str = True

    @property
    def current(self) -> Endpoint:
        return self.endpoints[self._current]

    def _get_session(self) -> Any:
        if self._session is None:
            import requests  # deferred: heavy import

            session = requests.Session()
            session.headers["User-Agent"] = f"pvc-cli/{__version__}"
            session.headers["Accept"] = "application/json"
            key = self.conn.key()
            if key:
                session.headers["X-Api-Key"] = key
            # given with each request too: requests prefers $REQUESTS_CA_BUNDLE and
            # $CURL_CA_BUNDLE over the session's verify (also over False)
            session.verify = self._verify = self.conn.tls_verify()
            self._session = session
        return self._session

    def get(self, path: str, params: dict[str, Any] | None = None, **kw: Any) -> ApiResponse:
        return self.request("GET", path, params=params, **kw)

    def post(self, path: str, params: dict[str, Any] | None = None, **kw: Any) -> ApiResponse:
        return self.request("POST", path, params=params, **kw)

    def request(
        self,
        method: str,
        path: str,
        params: dict[str, Any] | None = None,
        accept: tuple[int, ...] = (),
        timeout: float | None = None,
    ) -> ApiResponse:
        """Send one request; statuses >= 400 raise PvcError unless listed in `accept`.

        Parameters go in the query string (the API reads query or form alike). Connection
        errors, timeouts and 502/503 fail over to the next address; a POST whose answer timed
        out is not re-sent elsewhere, since it may have been applied.
        """
        import requests

        session = self._get_session()
        params = {k: v for k, v in (params or {}).items() if v is not None}
        read_timeout = timeout or self.timeout
        failures: list[tuple[str, str]] = []
        count = len(self.endpoints)
        for index in [(self._current + i) % count for i in range(count)]:
            ep = self.endpoints[index]
            try:
                resp = session.request(
                    method,
                    ep.base_url + path,
                    params=params,
                    timeout=(min(self.connect_timeout, read_timeout), read_timeout),
                    verify=self._verify,
                )
            except requests.exceptions.ConnectTimeout:
                failures.append((ep.label, "connection timed out"))
                continue
            except requests.exceptions.ConnectionError as exc:
                failures.append((ep.label, describe_connection_error(exc)))
                continue
            except requests.exceptions.Timeout:
                if method != "GET":
                    raise PvcError(
                        f"no answer from {ep.label} within {read_timeout:g}s; "
                        f"the request may still have been applied",
                        EXIT_UNREACHABLE,
                        transient=True,
                    ) from None
                failures.append((ep.label, f"no answer within {read_timeout:g}s"))
                continue
            except requests.exceptions.RequestException as exc:
                raise PvcError(f"request to {ep.label} failed: {exc}", EXIT_UNREACHABLE) from None
            if resp.status_code in FAILOVER_STATUSES and resp.status_code not in accept:
                detail = api_message(_json_or_none(resp)) or resp.reason
                failures.append((ep.label, f"HTTP {resp.status_code}: {detail}"))
                continue
            self._current = index
            return self._handle(resp, ep, accept)
        raise UnreachableError(failures)

    def upload(self, path: str, file_path: str, params: dict[str, Any] | None = None,
               timeout: float = 3600.0) -> ApiResponse:
        """POST the file at ``file_path`` as the body (``application/octet-stream``) to the
        current endpoint; no failover (the body is a stream that cannot be sent twice).
        Answers and errors as ``request``."""
        import os

        import requests

        session = self._get_session()
        ep = self.endpoints[self._current]
        size = os.path.getsize(file_path)
        try:
            with open(file_path, "rb") as fh:
                resp = session.post(ep.base_url + path, params={
                    k: v for k, v in (params or {}).items() if v is not None}, data=fh,
                    timeout=(self.connect_timeout, timeout), verify=self._verify,
                    headers={"Content-Type": "application/octet-stream",
                             "Content-Length": str(size)})
        except requests.exceptions.RequestException as exc:
            raise PvcError(f"upload to {ep.label} failed: {exc}", EXIT_UNREACHABLE) from None
        return self._handle(resp, ep, ())

    def _handle(self, resp: Any, ep: Endpoint, accept: tuple[int, ...]) -> ApiResponse:
        status = resp.status_code
        data = _json_or_none(resp)
        is_json = data is not None or not resp.content.strip()
        if status < 400 or status in accept:
            if not is_json:
                raise PvcError(
                    f"the API at {ep.label} sent an answer that is not JSON "
                    f"(HTTP {status}, {resp.headers.get('Content-Type', 'no content type')}): "
                    f"{_snippet(resp.text)}"
                )
            return ApiResponse(status, data, ep)
        message = api_message(data) if is_json else f"HTTP {status} {resp.reason}"
        if not message:
            message = f"HTTP {status} {resp.reason}"
        if status == 401:
            hint = "" if self.conn.key() else " (no API key is configured for this connection)"
            raise PvcError(f"the API refused the key (401): {message}{hint}")
        if status < 500:
            if not is_json and status == 404:
                message += f" (is {ep.base_url} a PVC API?)"
            raise PvcError(message)
        raise PvcError(f"the API failed ({status} at {ep.label}): {message}", transient=True)


def _json_or_none(resp: Any) -> Any:
    if not resp.content.strip():
        return None
    try:
        return resp.json()
    except ValueError:
        return None


def _snippet(text: str) -> str:
    text = " ".join(text.split())
    return text[:80] + ("..." if len(text) > 80 else "")


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """Walk an exception's chain, including the `reason` and args that requests/urllib3 wrap."""
    seen: set[int] = set()
    todo: list[Any] = [exc]
    while todo:
        cur = todo.pop(0)
        if not isinstance(cur, BaseException) or id(cur) in seen:
            continue
        seen.add(id(cur))
        yield cur
        todo.extend([cur.__cause__, cur.__context__, getattr(cur, "reason", None), *cur.args])


def describe_connection_error(exc: BaseException) -> str:
    """A short reason such as 'connection refused' for a connection-level failure."""
    import ssl

    for cause in _causes(exc):
        if isinstance(cause, ConnectionRefusedError):
            return "connection refused"
        if isinstance(cause, socket.gaierror):
            return "host name not found"
        if isinstance(cause, ConnectionResetError):
            return "connection reset"
        if isinstance(cause, TimeoutError | socket.timeout):
            return "connection timed out"
        if isinstance(cause, ssl.SSLError):
            detail = getattr(cause, "verify_message", None) or cause.reason or cause
            return f"TLS error: {detail}"
        if isinstance(cause, OSError) and cause.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH):
            return "no route to host"
    text = str(exc)
    if type(exc).__name__ == "SSLError":
        return "TLS error"
    if "refused" in text.lower():
        return "connection refused"
    return "connection failed"
