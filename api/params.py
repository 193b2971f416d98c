"""Request parameters: query string, urlencoded/multipart form body or a JSON object body.

A parameter that comes more than once keeps its first value unless it is declared ``many``;
the query string is read before the body. Errors are 400 ``{"message": "..."}`` naming the
parameter (one string, not the original's ``{"message": {param: help}}`` dict).
"""

from __future__ import annotations

import re
import shutil
import tempfile
from collections.abc import Callable, Iterable
from typing import Any

import falcon

from pvc_api.errors import ApiError
from pvc_api.spec import Param

SPOOL_IN_MEMORY = 8 * 1024 * 1024
"""Uploaded file parts larger than this go to a temporary file while the request runs."""

TRUE = frozenset({"y", "yes", "t", "true", "on", "1"})
FALSE = frozenset({"n", "no", "f", "false", "off", "0"})
_INT = re.compile(r"^[+-]?\d+$")


def strtobool(value: Any) -> bool:
    """Parse a boolean like Python's old ``distutils.util.strtobool``; ValueError if invalid."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in TRUE:
        return True
    if text in FALSE:
        return False
    raise ValueError(value)


def _body_values(req: falcon.Request) -> dict[str, list[Any]]:
    if not req.content_length or not req.content_type:
        return {}
    media = req.content_type.split(";")[0].strip().lower()
    values: dict[str, list[Any]] = {}
    if media == falcon.MEDIA_JSON:
        data = req.get_media()
        if not isinstance(data, dict):
            raise ApiError(400, "A JSON request body must be an object of parameters")
        values = {name: [value] for name, value in data.items()}  # a JSON list stays one value
    elif media == falcon.MEDIA_URLENCODED:
        for name, value in (req.get_media() or {}).items():
            values[name] = list(value) if isinstance(value, list) else [value]
    elif media == falcon.MEDIA_MULTIPART:
        files: dict[str, Any] = {}
        for part in req.get_media():
            if part.filename is None:
                values.setdefault(part.name, []).append(part.get_text())
            else:  # an upload: spooled (memory, then disk) for the route that takes it
                spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY)
                shutil.copyfileobj(part.stream, spool, 1 << 20)
                spool.seek(0)
                files[part.name] = spool
        req.context.files = files
    return values


def raw_values(req: falcon.Request) -> dict[str, list[Any]]:
    """Every value given for every parameter name: the query string first, then the body."""
    values: dict[str, list[Any]] = {}
    for name, value in req.params.items():
        values[name] = list(value) if isinstance(value, list) else [value]
    for name, more in _body_values(req).items():
        values.setdefault(name, []).extend(more)
    return values


def _convert(param: Param, value: Any) -> Any:
    where = f"Invalid parameter '{param.name}'"
    if isinstance(value, (dict, list)):
        raise ApiError(400, f"{where}: must be a single value, not {type(value).__name__}")
    if param.type == "bool":
        try:
            value = strtobool(value)
        except ValueError:
            raise ApiError(400, f"{where}: {value!r} is not a boolean "
                                "(true/false, yes/no, on/off, 1/0)") from None
    elif param.type == "int":
        if isinstance(value, bool) or not (isinstance(value, int) or _INT.match(str(value))):
            raise ApiError(400, f"{where}: {value!r} is not an integer")
        value = int(value)
    elif param.type == "float":
        try:
            if isinstance(value, bool):
                raise ValueError(value)
            value = float(value)
        except ValueError:
            raise ApiError(400, f"{where}: {value!r} is not a number") from None
        if value != value or value in (float("inf"), float("-inf")):
            raise ApiError(400, f"{where}: {value!r} is not a finite number")
    else:
        value = value if isinstance(value, str) else str(value)
    if param.choices and value not in param.choices:
        raise ApiError(400, f"{where}: {value!r} is not one of "
                            f"{', '.join(map(str, param.choices))}")
    if param.minimum is not None and value < param.minimum:
        raise ApiError(400, f"{where}: must be at least {param.minimum}, not {value!r}")
    if param.maximum is not None and value > param.maximum:
        raise ApiError(400, f"{where}: must be at most {param.maximum}, not {value!r}")
    return value


def parse(req: falcon.Request, params: Iterable[Param]) -> dict[str, Any]:
    """Validate and convert the declared (query/body) parameters; unknown names are ignored."""
    given = raw_values(req)
    args: dict[str, Any] = {}
    for param in params:
        if param.location != "query":
            continue
        values = given.get(param.name)
        if not values:
            if param.required:
                raise ApiError(400, f"Missing required parameter '{param.name}' "
                                    "(in the query string or the request body)")
            args[param.name] = list(param.default or []) if param.many else param.default
        elif param.many:
            flat = [x for v in values for x in (v if isinstance(v, list) else [v])]
            args[param.name] = [_convert(param, v) for v in flat]
        else:
            args[param.name] = _convert(param, values[0])
    return args


def name_filter(limit: str | None) -> Callable[[str], bool]:
    """The ``limit`` filter of list routes: a regex matching the whole name, fuzzy by default.

    ``.*`` is added at the start unless the pattern starts with ``^`` and at the end unless it
    ends with ``$``. A bad pattern is a 400 ``Regex Error: ...``.
    """
    if not limit:
        return lambda name: True
    pattern = limit if limit.startswith("^") else ".*" + limit
    pattern = pattern if pattern.endswith("$") else pattern + ".*"
    try:
        re.compile(limit)  # errors name positions in the pattern as given
        regex = re.compile(pattern)
    except (re.error, RecursionError, OverflowError) as exc:
        raise ApiError(400, f"Regex Error: {exc}") from None
    return lambda name: regex.fullmatch(name) is not None
