"""The gateway's OpenAPI document: valid OpenAPI 3.1, and every route with its methods (no drift)."""

from __future__ import annotations

from openapi_spec_validator import validate

from smallfleet.server.app import ROUTES
from smallfleet.server.openapi import document


def test_every_route_is_documented_and_the_document_is_valid() -> None:
    doc = document()
    validate(doc)
    documented = {(p, m.upper()) for p, ops in doc["paths"].items() for m in ops}
    served = {(p, m) for p, methods in ROUTES.items() for m in methods}
    assert documented == served
    ids = [op["operationId"] for ops in doc["paths"].values() for op in ops.values()]
    assert len(ids) == len(set(ids))
