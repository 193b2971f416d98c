"""API-key authentication: header ``X-Api-Key`` (or ``Authorization: Bearer <key>``, what
Prometheus sends), compared in constant time with every key."""

from __future__ import annotations

import hmac

import falcon

from pvc_api.errors import ApiError

HEADER = "X-Api-Key"


def check(req: falcon.Request, keys: list[bytes]) -> None:
    """Raise a 401 ApiError unless the request carries one of ``keys`` (none: auth disabled)."""
    if not keys:
        return
    given = req.get_header(HEADER)
    if not given:                 # Prometheus sends "Authorization: Bearer <key>"
        scheme, _, token = (req.get_header("Authorization") or "").partition(" ")
        given = token.strip() if scheme.lower() == "bearer" else None
    if not given:
        raise ApiError(401, "X-Api-Key Authentication required.")
    token = given.encode("utf-8", "surrogateescape")
    matched = False
    for key in keys:  # no early exit: the time taken does not tell which key was close
        matched |= hmac.compare_digest(token, key)
    if not matched:
        raise ApiError(401, "X-Api-Key Authentication failed.")
