"""A TLS front for pvcapid in tests: a test CA, a server certificate and a TLS proxy.

``TlsFront`` is a real TLS server (Python's ``ssl``) that terminates TLS on 127.0.0.1 and
forwards each request over plain HTTP to waitress, setting ``Host``, ``X-Forwarded-Proto``,
``X-Forwarded-For`` and ``X-Forwarded-Host`` like the nginx front of docs/api.md.
"""

from __future__ import annotations

import http.client
import http.server
import os
import ssl
import subprocess
import threading
from dataclasses import dataclass

HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization",
                        "te", "trailers", "transfer-encoding", "upgrade", "host",
                        "content-length"})
FORWARDED = ("x-forwarded-proto", "x-forwarded-for", "x-forwarded-host", "forwarded")


@dataclass(frozen=True)
class Certificates:
    """PEM files: the CA (what a client trusts) and the server's certificate and key."""

    ca: str
    cert: str
    key: str


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)


def make_certificates(directory: str, host: str = "127.0.0.1") -> Certificates:
    """A throw-away CA and a certificate for ``host`` (an IP SAN and ``localhost``)."""
    path = lambda name: os.path.join(directory, name)  # noqa: E731
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
             "-subj", "/CN=PVC test CA", "-keyout", path("ca-key.pem"), "-out", path("ca.pem"),
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={host}",
             "-keyout", path("api-key.pem"), "-out", path("api.csr"))
    with open(path("api.ext"), "w") as fh:
        fh.write(f"subjectAltName=IP:{host},DNS:localhost\nbasicConstraints=CA:FALSE\n"
                 "keyUsage=critical,digitalSignature,keyEncipherment\n"
                 "extendedKeyUsage=serverAuth\n")
    _openssl("x509", "-req", "-in", path("api.csr"), "-CA", path("ca.pem"),
             "-CAkey", path("ca-key.pem"), "-CAcreateserial", "-days", "2",
             "-extfile", path("api.ext"), "-out", path("api-cert.pem"))
    return Certificates(path("ca.pem"), path("api-cert.pem"), path("api-key.pem"))


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def _forward(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        headers = {k: v for k, v in self.headers.items()
                   if k.lower() not in HOP_BY_HOP and k.lower() not in FORWARDED}
        front = f"{self.server.server_address[0]}:{self.server.server_address[1]}"
        headers.update({"Host": front, "X-Forwarded-Proto": "https",
                        "X-Forwarded-For": self.client_address[0], "X-Forwarded-Host": front})
        backend = http.client.HTTPConnection(*self.server.backend, timeout=600)
        try:
            backend.request(self.command, self.path, body=body, headers=headers)
            reply = backend.getresponse()
            data = reply.read()
        except OSError as exc:
            self.send_error(502, f"backend unreachable: {exc}")
            return
        finally:
            backend.close()
        self.send_response(reply.status, reply.reason)
        for name, value in reply.getheaders():
            if name.lower() not in HOP_BY_HOP and name.lower() not in ("server", "date"):
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _forward

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    backend: tuple[str, int]

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # e.g. a client that does not trust the CA aborts the handshake


class TlsFront:
    """HTTPS on ``127.0.0.1:<port>`` → HTTP on ``backend``; ``start()`` returns the port."""

    def __init__(self, backend: tuple[str, int], certs: Certificates) -> None:
        self.server = _Server(("127.0.0.1", 0), _Handler)
        self.server.backend = backend
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(certs.cert, certs.key)
        # the handshake happens in the connection's thread, not in accept()
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True,
                                                 do_handshake_on_connect=False)
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self.server.server_address[1]

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def start(self) -> int:
        self._thread = threading.Thread(target=self.server.serve_forever, name="tls-front",
                                        daemon=True)
        self._thread.start()
        return self.port

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        if self._thread:
            self._thread.join(5)
