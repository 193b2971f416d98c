"""The API's route table, generated OpenAPI document, auth and errors, without ZooKeeper."""

from __future__ import annotations

import falcon.testing
import pytest

from pvc_api import auth
from pvc_api.app import Api, create_app
from pvc_api.errors import ApiError
from pvc_api.routes import CORE_ROUTES
from pvc_api.spec import Param, Reply, Route
from pvc_kernel import config
from pvc_kernel.state import Store

KEY = "unit-test-key"


def make_api(keys=(KEY,)) -> Api:
    cfg = config.parse({"node": "hv1", "cluster": "c", "zookeeper": {"hosts": ["127.0.0.1:9"]},
                        "api": {"keys": list(keys)}})
    return create_app(Store("127.0.0.1:9"), cfg)  # never connected


def test_core_table_matches_the_reference_paths():
    ops = {(r.method, r.path) for r in CORE_ROUTES}
    assert ops == {
        ("GET", "/"), ("GET", "/openapi.json"), ("GET", "/status"), ("POST", "/status"),
        ("GET", "/status/primary_node"), ("GET", "/tasks"), ("GET", "/tasks/{task_id}"),
        ("GET", "/node"), ("GET", "/node/{node}"), ("GET", "/node/{node}/daemon-state"),
        ("GET", "/node/{node}/coordinator-state"), ("POST", "/node/{node}/coordinator-state"),
        ("GET", "/node/{node}/domain-state"), ("POST", "/node/{node}/domain-state"),
        ("GET", "/node/{node}/log"),
        ("GET", "/faults"), ("PUT", "/faults"), ("DELETE", "/faults"),
        ("GET", "/faults/{fault_id}"), ("PUT", "/faults/{fault_id}"),
        ("DELETE", "/faults/{fault_id}")}
    assert {r.path for r in CORE_ROUTES if not r.auth} == {"/", "/openapi.json",
                                                           "/status/primary_node"}
    assert all(r.description for r in CORE_ROUTES), "every handler has a docstring"


def test_openapi_document_is_generated_from_the_table():
    api = make_api()
    doc = falcon.testing.TestClient(api.app).simulate_get("/api/v1/openapi.json").json
    assert doc["openapi"].startswith("3.") and doc["components"]["securitySchemes"]["ApiKey"] == {
        "type": "apiKey", "in": "header", "name": "X-Api-Key"}
    log = doc["paths"]["/node/{node}/log"]["get"]
    assert [(p["name"], p["in"], p["required"]) for p in log["parameters"]] == [
        ("node", "path", True), ("lines", "query", False)]
    assert log["parameters"][1]["schema"] == {"type": "integer", "minimum": 0, "default": 10}
    assert set(log["responses"]) == {"200", "400", "401", "404", "503"}
    primary = doc["paths"]["/status/primary_node"]["get"]
    assert primary["security"] == [] and "content" not in primary["responses"]["204"]
    ids = [op["operationId"] for item in doc["paths"].values() for op in item.values()]
    assert len(ids) == len(set(ids))
    for name in ("Node", "ClusterStatus", "TaskStatus", "Task", "Message", "Fault"):
        assert name in doc["components"]["schemas"]


def test_zookeeper_down_is_503_but_open_routes_answer():
    client = falcon.testing.TestClient(make_api().app, headers={"X-Api-Key": KEY})
    for path in ("/status", "/node", "/node/hv1", "/tasks", "/tasks/x", "/status/primary_node"):
        r = client.simulate_get("/api/v1" + path)
        assert r.status_code == 503 and "unreachable" in r.json["message"], path
    r = client.simulate_post("/api/v1/node/hv1/domain-state", params={"state": "flush"})
    assert r.status_code == 503
    assert client.simulate_get("/api/v1/").status_code == 200
    assert client.simulate_get("/api/v1/openapi.json").status_code == 200


def test_auth_is_checked_before_anything_else():
    client = falcon.testing.TestClient(make_api().app)
    r = client.simulate_post("/api/v1/status", params={"state": "bad"})
    assert r.status_code == 401 and r.json == {"message": "X-Api-Key Authentication required."}
    r = client.simulate_get("/api/v1/node", headers={"X-Api-Key": KEY + "x"})
    assert r.json == {"message": "X-Api-Key Authentication failed."}


def test_auth_check_compares_against_every_key():
    req = falcon.testing.create_req(headers={"X-Api-Key": "second-key"})
    auth.check(req, [b"first-key1", b"second-key"])
    auth.check(req, [])  # no keys: disabled
    with pytest.raises(ApiError):
        auth.check(req, [b"first-key1"])


def test_plugin_routes_use_the_same_table():
    cfg = config.parse({"node": "hv1", "cluster": "c", "zookeeper": {"hosts": ["x:1"]}})
    api = Api(Store("127.0.0.1:9"), cfg)

    def hello(call):
        """Say hello."""
        return Reply({"hello": call.args["who"]}, status=201, headers={"X-Test": "1"})

    api.add_route(Route("PUT", "/hello/{who}", hello, "Hello", zookeeper=False,
                        params=(Param("who", location="path"),)))
    with pytest.raises(ValueError, match="already defined"):
        api.add_route(Route("PUT", "/hello/{who}", hello, "Again"))
    app = api.build()
    r = falcon.testing.TestClient(app).simulate_put("/api/v1/hello/you")
    assert r.status_code == 201 and r.json == {"hello": "you"} and r.headers["x-test"] == "1"
    with pytest.raises(RuntimeError):
        api.add_route(Route("GET", "/late", hello, "Too late"))


@pytest.mark.parametrize("make", [
    lambda: Route("FETCH", "/x", print, "bad method"),
    lambda: Route("GET", "x", print, "no slash"),
    lambda: Route("GET", "/x", print, "path param not in path",
                  params=(Param("y", location="path"),)),
    lambda: Param("n", "number"),
    lambda: Param("n", location="cookie"),
])
def test_bad_declarations_fail_at_start(make):
    with pytest.raises(ValueError):
        make()


def test_api_config_keys_are_validated():
    base = {"node": "hv1", "cluster": "c", "zookeeper": {"hosts": ["x:1"]}}
    cfg = config.parse(base)
    assert cfg.api.threads == 8 and cfg.api.wait_timeout == 300 and cfg.api.trusted_proxy is None
    assert cfg.api.trusted_proxy_headers == ["x-forwarded-proto", "x-forwarded-for",
                                             "x-forwarded-host"]
    cfg = config.parse({**base, "api": {"trusted_proxy": "10.0.0.5", "threads": 16,
                                        "trusted_proxy_headers": ["Forwarded"]}})
    assert cfg.api.trusted_proxy == "10.0.0.5" and cfg.api.trusted_proxy_headers == ["forwarded"]
    with pytest.raises(config.ConfigError) as exc:
        config.parse({**base, "api": {"threads": 0, "wait_timeout": "x",
                                      "trusted_proxy_headers": ["x-real-ip"]}})
    text = str(exc.value)
    assert "key 'api.threads'" in text and "key 'api.wait_timeout'" in text
    assert "key 'api.trusted_proxy_headers'" in text
    with pytest.raises(config.ConfigError, match="cannot be combined"):
        config.parse({**base, "api": {"trusted_proxy_headers": ["forwarded",
                                                                "x-forwarded-for"]}})


def test_multipart_file_parts_reach_the_route():
    """Uploads sent the way the original CLI sends them (multipart, part ``file``)."""
    cfg = config.parse({"node": "hv1", "cluster": "c", "zookeeper": {"hosts": ["x:1"]}})
    api = Api(Store("127.0.0.1:9"), cfg)

    def take(call):
        """Read the upload."""
        files = call.req.context.files
        return {"size": len(files["file"].read()), "format": call.args["image_format"]}

    api.add_route(Route("POST", "/upload", take, "Upload", zookeeper=False, auth=False,
                        params=(Param("image_format"),)))
    body = (b"--XX\r\nContent-Disposition: form-data; name=\"image_format\"\r\n\r\nraw\r\n"
            b"--XX\r\nContent-Disposition: form-data; name=\"file\"; filename=\"d.img\"\r\n"
            b"Content-Type: application/octet-stream\r\n\r\n" + b"\0" * 70000 + b"\r\n--XX--\r\n")
    r = falcon.testing.TestClient(api.build()).simulate_post(
        "/api/v1/upload", body=body, headers={"Content-Type": "multipart/form-data; boundary=XX"})
    assert r.status_code == 200, r.text
    assert r.json == {"size": 70000, "format": "raw"}
