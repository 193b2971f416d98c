"""Shared helpers of the CLI unit tests: a tiny programmable fake PVC API on 127.0.0.1.

Imported by the other test_cli_*.py modules; it holds no tests itself.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from click.testing import CliRunner, Result

from pvc_cli.main import cli

PREFIX = "/api/v1"


@dataclass
class Request:
    method: str
    path: str  # without /api/v1
    query: dict[str, list[str]]
    headers: dict[str, str]

    def param(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[0] if values else None


Reply = tuple[int, Any]
Handler = Callable[[Request], Reply]


@dataclass
class FakeApi:
    """Routes are (METHOD, path) -> handler or fixed (status, body); every request is recorded."""

    routes: dict[tuple[str, str], Handler] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None

    def route(
        self,
        method: str,
        path: str,
        status: int = 200,
        body: Any = None,
        handler: Handler | None = None,
    ) -> None:
        self.routes[(method, path)] = handler or (lambda _req: (status, body))

    def sequence(self, method: str, path: str, replies: list[Reply]) -> None:
        """Answer the replies in order, then keep repeating the last one."""
        todo = list(replies)

        def handler(_req: Request) -> Reply:
            return todo.pop(0) if len(todo) > 1 else todo[0]

        self.routes[(method, path)] = handler

    def calls(self, method: str, path: str) -> list[Request]:
        return [r for r in self.requests if r.method == method and r.path == path]

    @property
    def address(self) -> str:
        assert self.server is not None
        return f"127.0.0.1:{self.server.server_address[1]}"

    def start(self) -> FakeApi:
        api = self

        class RequestHandler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _serve(self) -> None:
                url = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                path = url.path[len(PREFIX) :] if url.path.startswith(PREFIX) else url.path
                req = Request(self.command, path, parse_qs(url.query), dict(self.headers.items()))
                api.requests.append(req)
                handler = api.routes.get((self.command, path))
                status, body = handler(req) if handler else (404, {"message": "Not found."})
                if isinstance(body, bytes | str):
                    payload = body.encode() if isinstance(body, str) else body
                    ctype = "text/html"
                else:
                    payload = (json.dumps(body) + "\n").encode() if body is not None else b""
                    ctype = "application/json"
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _serve

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), RequestHandler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, args=(0.02,), daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


def refused_address() -> str:
    """A loopback address where nothing listens (the port was just free)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"127.0.0.1:{port}"


ENV_VARS = (
    "PVC_API_HOSTS",
    "PVC_API_KEY",
    "PVC_API_SCHEME",
    "PVC_API_VERIFY",
    "PVC_API_CA_FILE",
    "PVC_CLUSTER",
    "PVC_CONNECTION",
    "PVC_CLI_CONFIG",
    "PVC_CLI_TIMEOUT",
    "NO_COLOR",
    "PVC_CLI_DEBUG",
)


def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No PVC variables from the caller's shell; a private config file path (not created)."""
    for var in ENV_VARS:
        monkeypatch.delenv(var, raising=False)
    config = tmp_path / "pvc" / "pvc.json"
    monkeypatch.setenv("PVC_CLI_CONFIG", str(config))
    return config


@contextmanager
def fake_api_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[FakeApi]:
    """A started fake API, selected through PVC_API_HOSTS / PVC_API_KEY; fast polling."""
    clean_env(monkeypatch, tmp_path)
    fake = FakeApi().start()
    monkeypatch.setenv("PVC_API_HOSTS", fake.address)
    monkeypatch.setenv("PVC_API_KEY", "secret")
    monkeypatch.setattr("pvc_cli.waiting.POLL_INTERVAL", 0.01)
    try:
        yield fake
    finally:
        fake.stop()


def run(*args: str, **kw: Any) -> Result:
    """Invoke `pvc ARGS` in-process; exceptions are caught like in the real command."""
    return CliRunner().invoke(cli, list(args), **kw)


def assert_one_error_line(result: Result, code: int, fragment: str) -> str:
    """The command failed with exit `code` and exactly one `pvc: ...` line on stderr."""
    assert result.exit_code == code, (result.exit_code, result.output)
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("pvc: "), lines
    assert fragment in lines[0], lines[0]
    return lines[0]


NODE_HV1: dict[str, Any] = {
    "name": "hv1",
    "daemon_state": "run",
    "coordinator_state": "primary",
    "domain_state": "ready",
    "pvc_version": "0.1.0",
    "cpu_count": 8,
    "kernel": "6.1.0",
    "os": "linux",
    "arch": "x86_64",
    "health": 100,
    "health_plugins": [],
    "health_details": [],
    "load": 0.42,
    "domains_count": 2,
    "running_domains": ["web1", "db1"],
    "vcpu": {"total": 8, "allocated": 4},
    "memory": {"total": 16384, "allocated": 4096, "provisioned": 6144, "used": 3000, "free": 13384},
    "interfaces": {},
}
NODE_HV2: dict[str, Any] = dict(
    NODE_HV1,
    name="hv2",
    coordinator_state="secondary",
    domain_state="flushed",
    daemon_state="dead",
    health=40,
    domains_count=0,
    running_domains=[],
)
