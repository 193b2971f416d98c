"""Parameter parsing of the API: sources, types, booleans, choices and the limit regex."""

from __future__ import annotations

import json

import falcon.testing
import pytest

from pvc_api import params
from pvc_api.errors import ApiError
from pvc_api.spec import Param

SPEC = (Param("state", required=True, choices=("flush", "ready")),
        Param("wait", "bool", default=False),
        Param("lines", "int", default=10, minimum=0),
        Param("ratio", "float"),
        Param("tag", many=True))


def req(query: str = "", body: bytes | str = b"", content_type: str | None = None):
    headers = {"Content-Type": content_type} if content_type else {}
    return falcon.testing.create_req(query_string=query, body=body, headers=headers,
                                     method="POST")


def parse(*a, **kw):
    return params.parse(req(*a, **kw), SPEC)


@pytest.mark.parametrize("text", ["y", "YES", "t", "True", "on", "1", " true "])
def test_true_values(text):
    assert params.strtobool(text) is True


@pytest.mark.parametrize("text", ["n", "No", "f", "FALSE", "off", "0"])
def test_false_values(text):
    assert params.strtobool(text) is False


@pytest.mark.parametrize("text", ["", "2", "maybe", "yess"])
def test_invalid_booleans(text):
    with pytest.raises(ValueError):
        params.strtobool(text)


def test_defaults_and_query():
    assert parse("state=flush") == {"state": "flush", "wait": False, "lines": 10,
                                    "ratio": None, "tag": []}
    got = parse("state=ready&wait=On&lines=5&ratio=0.5&tag=a&tag=b&unknown=1")
    assert got == {"state": "ready", "wait": True, "lines": 5, "ratio": 0.5, "tag": ["a", "b"]}


def test_first_value_wins_for_single_parameters():
    assert parse("state=flush&state=ready")["state"] == "flush"
    assert parse("state=flush", "state=ready",
                 "application/x-www-form-urlencoded")["state"] == "flush"


def test_form_and_json_bodies():
    got = parse(body="state=ready&wait=yes&tag=x", content_type="application/x-www-form-urlencoded")
    assert got["state"] == "ready" and got["wait"] is True and got["tag"] == ["x"]
    body = json.dumps({"state": "flush", "wait": True, "lines": 3, "tag": ["a", "b"]})
    got = parse(body=body, content_type="application/json")
    assert got == {"state": "flush", "wait": True, "lines": 3, "ratio": None, "tag": ["a", "b"]}


@pytest.mark.parametrize("query, body, needle", [
    ("", None, "Missing required parameter 'state'"),
    ("state=drain", None, "Invalid parameter 'state': 'drain' is not one of flush, ready"),
    ("state=flush&wait=perhaps", None, "Invalid parameter 'wait': 'perhaps' is not a boolean"),
    ("state=flush&lines=x", None, "Invalid parameter 'lines': 'x' is not an integer"),
    ("state=flush&lines=-1", None, "Invalid parameter 'lines': must be at least 0"),
    ("state=flush&ratio=nan", None, "Invalid parameter 'ratio'"),
    ("", {"state": {"a": 1}}, "Invalid parameter 'state': must be a single value"),
    ("", {"state": "flush", "lines": True}, "Invalid parameter 'lines'"),
    ("", ["state"], "A JSON request body must be an object"),
])
def test_errors_name_the_parameter(query, body, needle):
    kw = {"body": json.dumps(body), "content_type": "application/json"} if body is not None else {}
    with pytest.raises(ApiError) as exc:
        parse(query, **kw)
    assert exc.value.status == 400 and needle in exc.value.message


@pytest.mark.parametrize("limit, matches, misses", [
    (None, ["hv1", "x"], []),
    ("hv", ["hv1", "xhv", "hv"], ["h"]),
    ("^hv", ["hv1"], ["xhv1"]),
    ("1$", ["hv1"], ["hv12"]),
    ("^hv1$", ["hv1"], ["hv12", "xhv1"]),
    ("hv[12]", ["hv1", "ahv2b"], ["hv3"]),
])
def test_name_filter_is_fuzzy_unless_anchored(limit, matches, misses):
    match = params.name_filter(limit)
    assert all(match(n) for n in matches) and not any(match(n) for n in misses)


def test_bad_regex_is_a_400():
    with pytest.raises(ApiError) as exc:
        params.name_filter("hv(")
    assert exc.value.status == 400 and exc.value.message.startswith("Regex Error: ")
    assert "position 2" in exc.value.message  # the position in the pattern as given
