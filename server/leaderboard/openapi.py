"""The OpenAPI 3.1 document of the REST API, built from the same pydantic models that validate requests."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from . import __version__
from .protocol import Ack, Board, BoardCreate, PlayerRank, Problem, Submission, TopPage

_MODELS: list[type[BaseModel]] = [Submission, Ack, TopPage, PlayerRank, Board, BoardCreate, Problem]


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _problems(*statuses: int) -> dict[str, Any]:
    return {
        str(s): {"description": "Problem details (RFC 9457)",
                 "content": {"application/problem+json": {"schema": _ref("Problem")}}}
        for s in statuses
    }  # fmt: skip


def _q(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


BOARD_Q = _q("board", {"type": "string", "default": "global", "pattern": "^[a-z0-9][a-z0-9_-]{0,63}$"}, "board id")
BEARER: list[dict[str, list[str]]] = [{"bearer": []}]


def document() -> dict[str, Any]:
    schemas: dict[str, Any] = {}
    for model in _MODELS:
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
    paths = {
        "/api/leaderboard/submit": {"post": {
            "summary": "Submit a score (acknowledged after the Postgres commit)", "security": BEARER,
            "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("Submission")}}},
            "responses": {"200": _json(_ref("Ack"), "Committed (or a duplicate of a committed submission)"),
                          **_problems(400, 401, 403, 404, 409, 413, 415, 422, 503)},
        }},
        "/api/leaderboard/top": {"get": {
            "summary": "A page of the board, best first", "security": [{}, *BEARER],
            "parameters": [BOARD_Q, _q("limit", {"type": "integer", "minimum": 1, "maximum": 100, "default": 10},
                                       "entries"),
                           _q("offset", {"type": "integer", "minimum": 0, "default": 0}, "entries to skip")],
            "responses": {"200": _json(_ref("TopPage"), "The page"), **_problems(401, 404, 422, 503)},
        }},
        "/api/leaderboard/rank/{user_id}": {"get": {
            "summary": "A player's rank, score, percentile and neighbours", "security": [{}, *BEARER],
            "parameters": [
                {"name": "user_id", "in": "path", "required": True,
                 "schema": {"type": "string", "pattern": "^[A-Za-z0-9_.:@-]{1,64}$"}},
                BOARD_Q, _q("around", {"type": "integer", "minimum": 0, "maximum": 25, "default": 0},
                            "entries above and below to include")],
            "responses": {"200": _json(_ref("PlayerRank"), "The player's standing"),
                          **_problems(401, 404, 422, 503)},
        }},
        "/api/leaderboards": {
            "get": {"summary": "List boards", "security": [{}, *BEARER],
                    "responses": {"200": _json({"type": "object", "properties": {
                        "boards": {"type": "array", "items": _ref("Board")}}}, "Boards"), **_problems(401, 503)}},
            "post": {"summary": "Create a board (admin)", "security": BEARER,
                     "requestBody": {"required": True,
                                     "content": {"application/json": {"schema": _ref("BoardCreate")}}},
                     "responses": {"201": _json(_ref("Board"), "Created"),
                                   **_problems(400, 401, 403, 409, 413, 415, 422, 503)}},
        },
        "/api/leaderboards/{board_id}": {"get": {
            "summary": "One board, with its entry count", "security": [{}, *BEARER],
            "parameters": [{"name": "board_id", "in": "path", "required": True, "schema": {"type": "string"}}],
            "responses": {"200": _json(_ref("Board"), "The board"), **_problems(401, 404, 503)},
        }},
        "/healthz": {"get": {"summary": "Liveness", "responses": {"200": {"description": "Process is up"}}}},
        "/readyz": {"get": {"summary": "Readiness: Postgres, Redis and migrations",
                            "responses": {"200": {"description": "Ready"}, **_problems(503)}}},
        "/metrics": {"get": {"summary": "Prometheus metrics",
                             "responses": {"200": {"description": "text/plain; version=0.0.4"}}}},
        "/api/openapi.json": {"get": {"summary": "This document",
                                      "responses": {"200": {"description": "OpenAPI 3.1"}}}},
    }  # fmt: skip
    return {
        "openapi": "3.1.0",
        "info": {"title": "Leaderboard", "version": __version__,
                 "description": "Real-time leaderboard service. WebSocket protocol: see docs/protocol.md (/ws)."},
        "paths": paths,
        "components": {"schemas": schemas,
                       "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                                      "description": "API key (lbk_…) or player JWT"}}},
    }  # fmt: skip
