"""pvcapid's waitress listener keeps listening when taking one connection fails."""

from __future__ import annotations

import logging
import socket
import threading
from types import SimpleNamespace

import requests

from pvc_api.server import create_server
from pvc_kernel.config import ApiConfig, NodeConfig
from tests.support import apiserver


def _hello(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello"]


def test_a_failed_accept_costs_one_connection_not_the_listener(caplog):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = NodeConfig(node="hv1", cluster="t", zookeeper_hosts=["127.0.0.1:1"],
                     api=ApiConfig(keys=["k"], port=port, threads=2))
    server = create_server(SimpleNamespace(app=_hello), cfg)
    make_channel = server.channel_class
    failed: list[bool] = []

    def channel_once_broken(*args, **kwargs):
        if not failed:
            failed.append(True)
            raise OSError(104, "Connection reset by peer")   # e.g. the peer left at once
        return make_channel(*args, **kwargs)

    server.channel_class = channel_once_broken
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        with caplog.at_level(logging.ERROR, logger="pvcapid"):
            socket.create_connection(("127.0.0.1", port), timeout=5).close()
            reply = requests.get(f"http://127.0.0.1:{port}/", timeout=5)
        assert failed and reply.text == "hello"
        assert not server.trigger._closed and thread.is_alive()
        assert "still listening" in caplog.text
    finally:
        apiserver.stop(server, thread)
    assert not thread.is_alive()
