"""The declarative description of a route: both the Falcon app and the OpenAPI document read it.

A plugin adds routes from its ``pvc_api_routes(api)`` hook exactly like the core table does::

    from pvc_api.spec import Param, Reply, Route

    def list_things(call):
        \"\"\"List the things.\"\"\"
        return [...]

    api.add_route(Route("GET", "/thing", list_things, "List things",
                        params=(Param("limit", description="Regex on the name"),),
                        responses={200: ("The things", {"type": "array"})}))
"""

from __future__ import annotations

import string
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import falcon

    from pvc_api.app import Api

TYPES = ("str", "int", "float", "bool")
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")


@dataclass(frozen=True)
class Param:
    """One request parameter (query string, form body or JSON body; or a path segment)."""

    name: str
    type: str = "str"
    required: bool = False
    choices: tuple[Any, ...] = ()
    default: Any = None
    description: str = ""
    many: bool = False
    """A list, sent as a repeated key (``?tag=a&tag=b``) or a JSON array."""
    minimum: float | None = None
    maximum: float | None = None
    location: str = "query"
    """``query`` (also read from the body) or ``path`` (documentation of a ``{field}``)."""

    def __post_init__(self) -> None:
        if self.type not in TYPES:
            raise ValueError(f"parameter {self.name!r}: type must be one of {TYPES}")
        if self.location not in ("query", "path"):
            raise ValueError(f"parameter {self.name!r}: location must be query or path")


Responses = dict[int, tuple[str, dict[str, Any] | None]]
"""HTTP status → (description, JSON schema of the body or None for no body)."""


@dataclass(frozen=True)
class Route:
    """One method on one path under ``/api/v1``; ``handler(call)`` returns a body or a Reply."""

    method: str
    path: str
    handler: Callable[[Call], Any]
    summary: str
    params: tuple[Param, ...] = ()
    responses: Responses = field(default_factory=dict)
    auth: bool = True
    """False for the few open routes (``GET /``, the OpenAPI document, the primary node)."""
    zookeeper: bool = True
    """The handler reads ZooKeeper: answer 503 at once while it is unreachable."""
    tag: str = ""

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"route {self.path}: method must be one of {METHODS}")
        if not self.path.startswith("/"):
            raise ValueError(f"route {self.path}: the path must start with '/'")
        declared = {p.name for p in self.params if p.location == "path"}
        unknown = declared - set(self.path_fields)
        if unknown:
            raise ValueError(f"route {self.path}: path parameters {unknown} are not in the path")

    @property
    def path_fields(self) -> list[str]:
        return [f for _, f, _, _ in string.Formatter().parse(self.path) if f]

    @property
    def query_params(self) -> tuple[Param, ...]:
        return tuple(p for p in self.params if p.location == "query")

    @property
    def description(self) -> str:
        return " ".join((self.handler.__doc__ or "").split())


@dataclass
class Reply:
    """A response other than a plain 200 with a JSON body."""

    body: Any = None
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)


class RawJson(str):
    """A body already serialized as JSON: sent as it is (for handlers that keep the JSON of
    the parts of a big answer between requests)."""


class PlainText(str):
    """A body that is not JSON (Prometheus' exposition): sent as it is, as ``content_type``."""

    content_type: str

    def __new__(cls, text: str, content_type: str = "text/plain; charset=utf-8") -> PlainText:
        made = super().__new__(cls, text)
        made.content_type = content_type
        return made


def text_body(media: str = "text/plain") -> dict[str, Any]:
    """The response schema of a ``PlainText`` body in ``Route.responses``."""
    return {"type": "string", "x-media-type": media}


@dataclass
class Call:
    """What a handler gets: the API, the Falcon request and the parsed arguments."""

    api: Api
    req: falcon.Request
    args: dict[str, Any]
    """Path fields and parameters by name (absent optional parameters hold their default)."""

    def url(self, path: str) -> str:
        """Absolute URL of ``path`` (under /api/v1) with the scheme the client used.

        Behind a trusted TLS front, waitress sets the scheme from ``X-Forwarded-Proto``.
        """
        return f"{self.req.scheme}://{self.req.netloc}{self.api.prefix}{path}"
