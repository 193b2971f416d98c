"""The Falcon application: one generic resource per path, built from the route table."""

from __future__ import annotations

import json
import logging
import threading
from contextlib import nullcontext
from functools import partial
from typing import Any

import falcon
import falcon.media

from pvc_api import auth, errors, params
from pvc_api.errors import ApiError
from pvc_api.routes import CORE_ROUTES, metrics_routes
from pvc_api.schemas import COMPONENTS
from pvc_api.spec import Call, PlainText, RawJson, Reply, Route
from pvc_kernel.config import NodeConfig
from pvc_kernel.plugins import PluginHost
from pvc_kernel.state import Store

log = logging.getLogger(__name__)

PREFIX = "/api/v1"


class Api:
    """The API of one pvcapid process: its route table and what handlers need.

    Plugins receive this object in ``pvc_api_routes(api)`` and call ``api.add_route``.
    """

    def __init__(self, store: Store, config: NodeConfig, plugins: PluginHost | None = None,
                 prefix: str = PREFIX) -> None:
        self.store = store
        self.config = config
        self.plugins = plugins
        self.prefix = prefix
        self.routes: list[Route] = []
        self.schemas: dict[str, dict[str, Any]] = dict(COMPONENTS)
        self.stopping = threading.Event()
        """Set at shutdown: handlers that wait (``wait=true``) return at once."""
        self.zk_timeout = float(config.zookeeper_session_timeout)
        self.wait_timeout = float(config.api.wait_timeout)
        self._keys = [key.encode() for key in config.api.keys]
        self.app: falcon.App | None = None
        self.extras: dict[str, Any] = {}
        """State a route keeps between requests (e.g. the metrics cache), by name."""

    # -- the table -------------------------------------------------------------------------
    def add_route(self, route: Route) -> None:
        """Add one route; a second route for the same method and path is an error."""
        if self.app is not None:
            raise RuntimeError("routes must be added before the application is built")
        if any((r.method, r.path) == (route.method, route.path) for r in self.routes):
            raise ValueError(f"route {route.method} {route.path} is already defined")
        self.routes.append(route)

    def add_schema(self, name: str, schema: dict[str, Any]) -> None:
        """Add a response schema under ``#/components/schemas/<name>``."""
        if name in self.schemas and self.schemas[name] != schema:
            raise ValueError(f"schema {name!r} is already defined")
        self.schemas[name] = schema

    def plugin_status(self) -> list[dict[str, Any]]:
        """What plugins add to ``GET /status`` (hook ``pvc_api_status``)."""
        if self.plugins is None:
            return []
        return [part for _, part in self.plugins.call_each("pvc_api_status", api=self)
                if isinstance(part, dict)]

    # -- Falcon ---------------------------------------------------------------------------
    def build(self) -> falcon.App:
        """Create the Falcon application from the routes added so far (once)."""
        app = falcon.App(media_type=falcon.MEDIA_JSON)
        handler = falcon.media.JSONHandler(dumps=json.dumps, loads=json.loads)
        app.req_options.media_handlers[falcon.MEDIA_JSON] = handler
        app.resp_options.media_handlers[falcon.MEDIA_JSON] = handler
        errors.install(app)
        by_path: dict[str, dict[str, Route]] = {}
        for route in self.routes:
            by_path.setdefault(route.path, {})[route.method] = route
        for path, methods in by_path.items():
            resource = _Resource(self, methods)
            for method, (route, fields) in _fallbacks(path, by_path).items():
                setattr(resource, f"on_{method.lower()}", partial(self.respond, route, **fields))
            app.add_route(self.prefix + path, resource)
        app.add_route(self.prefix, _Redirect(self.prefix + "/"))
        self.app = app
        return app

    def respond(self, route: Route, req: falcon.Request, resp: falcon.Response,
                **path: str) -> None:
        """Run one route: auth, ZooKeeper check, parameters, handler, reply."""
        if route.auth:
            auth.check(req, self._keys)
        if route.zookeeper and not self.store.connected:
            raise ApiError(503, errors.UNAVAILABLE_MESSAGE)
        args = params.parse(req, route.params)
        args.update(path)
        # a read shares one catch-up of the view (a GET never waits for others' writes)
        with self.store.snapshot() if route.method == "GET" else nullcontext():
            result = route.handler(Call(self, req, args))
        reply = result if isinstance(result, Reply) else Reply(result)
        resp.status = reply.status
        for name, value in reply.headers.items():
            resp.set_header(name, value)
        if isinstance(reply.body, RawJson):
            resp.text = reply.body
            resp.content_type = falcon.MEDIA_JSON
        elif isinstance(reply.body, PlainText):
            resp.text = str(reply.body)
            resp.content_type = reply.body.content_type
        elif reply.status != 204 and reply.body is not None:
            resp.media = reply.body


def _match(template: str, path: str) -> dict[str, str] | None:
    """The fields of ``template`` (``/vm/{vm}``) that make it read ``path``; None if it cannot."""
    want, have = template.split("/"), path.split("/")
    if len(want) != len(have):
        return None
    fields = {}
    for pattern, segment in zip(want, have, strict=True):
        if pattern.startswith("{") and pattern.endswith("}") and pattern.count("{") == 1:
            fields[pattern[1:-1]] = segment
        elif pattern != segment:
            return None
    return fields


def _fallbacks(path: str, by_path: dict[str, dict[str, Route]]) -> dict[str, tuple[Route, dict]]:
    """Routing is method-aware, like the original's (Flask/Werkzeug): for each method that a
    fixed path such as ``/vm/autobackup`` lacks, the route of a templated path that reads it
    (``GET /vm/{vm}`` with vm=autobackup) answers instead of a 405. Where several templates
    fit, the one with fixed segments earliest wins (Falcon's own precedence)."""
    if "{" in path:
        return {}
    found: dict[str, tuple[Route, dict]] = {}
    templates = sorted((t for t in by_path if "{" in t),
                       key=lambda t: ["{" in seg for seg in t.split("/")])
    for template in templates:
        fields = _match(template, path)
        if fields is None:
            continue
        for method, route in by_path[template].items():
            if method not in by_path[path] and method not in found:
                found[method] = (route, fields)
    return found


class _Resource:
    """A Falcon resource whose ``on_<method>`` responders run the routes of one path."""

    def __init__(self, api: Api, routes: dict[str, Route]) -> None:
        for method, route in routes.items():
            setattr(self, f"on_{method.lower()}", partial(api.respond, route))


class _Redirect:
    """``/api/v1`` → ``/api/v1/`` (308), like the original."""

    def __init__(self, target: str) -> None:
        self.target = target

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        raise falcon.HTTPPermanentRedirect(f"{req.scheme}://{req.netloc}{self.target}")


KERNEL_VIEW_KEYS = ("nodes", "config", "faults")
"""The kernel's subtrees in pvcapid's view (plugins add theirs by ``pvc_api_view_keys``)."""


def view_keys(plugins: PluginHost | None) -> list[str]:
    """Every schema key whose subtree pvcapid keeps in its view."""
    names = list(KERNEL_VIEW_KEYS)
    for _plugin, keys in plugins.call_each("pvc_api_view_keys") if plugins else ():
        names += [k for k in keys or () if k not in names]
    return names


def create_app(store: Store, config: NodeConfig, plugins: PluginHost | None = None) -> Api:
    """The API with the core routes and every plugin's routes; the WSGI app is ``api.app``."""
    if store.view is None:
        store.use_view(view_keys(plugins))
    api = Api(store, config, plugins)
    for route in CORE_ROUTES:
        api.add_route(route)
    if config.api.metrics:
        for route in metrics_routes(config.api.metrics_auth):
            api.add_route(route)
    if plugins is not None:
        plugins.call_each("pvc_api_routes", api=api)
    if not config.api.keys:
        log.warning("api.keys is empty: the API accepts every request without authentication")
    api.build()
    return api
