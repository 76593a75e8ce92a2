"""The gateway's OpenAPI 3.1 document, served at ``GET /openapi.json``.

Written by hand from what each handler accepts (the OpenAI-compatible bodies are described by their
main fields and stay open to the rest, as OpenAI's own evolve); a test checks that every route the
gateway serves is here with its methods, and that the document is valid OpenAPI.
"""

from __future__ import annotations

import functools
from typing import Any

from .. import __version__

_ERROR = {"$ref": "#/components/schemas/Error"}


def _json(schema: dict[str, Any], description: str = "") -> dict[str, Any]:
    return {"description": description or "OK", "content": {"application/json": {"schema": schema}}}


def _errors(*codes: int) -> dict[str, Any]:
    words = {400: "invalid request (names the field)", 401: "no or a wrong API key", 403: "forbidden (cross-site, foreign Host, "
             "or a non-loopback client of a keyless gateway)", 404: "unknown model, run or step", 413: "body over max_body_mb",
             429: "run budget exceeded (retry-after only where waiting can help; else x-should-retry: false)",
             502: "backend down", 503: "model or database unavailable, or too many requests in flight (retry-after)",
             504: "backend timeout"}
    return {str(c): _json(_ERROR, words[c]) for c in codes}


_RUN_HEADERS = [
    {"name": n, "in": "header", "required": False, "schema": {"type": "string", "maxLength": 512}, "description": d}
    for n, d in (("x-smallfleet-run", "agent run id: groups steps, carries the budget"),
                 ("x-smallfleet-budget", "USD limit for the run: sets or lowers it, never raises it"),
                 ("x-smallfleet-session", "session id: facts and pseudonyms follow it"),
                 ("x-smallfleet-step-kind", "override the derived step kind"),
                 ("x-smallfleet-guard", "block | flag | confirm | off"),
                 ("x-smallfleet-approve", "tokens of tool calls the user confirmed"),
                 ("x-smallfleet-datamark", "on | off"),
                 ("x-smallfleet-kb", "a knowledge base the operator declared ([knowledge.NAME])"),
                 ("x-smallfleet-kb-where", "KEY=VALUE,...: only documents with that metadata"),
                 ("x-smallfleet-stream", "verified | live"),
                 ("x-smallfleet-capture", "off: keep this step out of the trace store"))
]

_MESSAGE = {"type": "object", "required": ["role"], "additionalProperties": True, "properties": {
    "role": {"enum": ["system", "developer", "user", "assistant", "tool"]},
    "content": {"oneOf": [{"type": "string"}, {"type": "null"}, {"type": "array", "items": {"type": "object"}}]},
    "tool_calls": {"type": "array", "items": {"type": "object"}}, "tool_call_id": {"type": "string"}}}

SCHEMAS: dict[str, Any] = {
    "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "object", "required": ["message", "type"], "properties": {
        "message": {"type": "string"}, "type": {"type": "string"}, "param": {"type": ["string", "null"]},
        "code": {"type": ["string", "null"]}}}}},
    "ChatCompletionRequest": {"type": "object", "required": ["messages"], "additionalProperties": True, "properties": {
        "model": {"type": "string", "description": "auto (the cascade) or a fleet model name"},
        "messages": {"type": "array", "minItems": 1, "items": _MESSAGE},
        "tools": {"type": "array", "items": {"type": "object"}},
        "tool_choice": {"oneOf": [{"type": "string"}, {"type": "object"}]},
        "response_format": {"type": "object"}, "stream": {"type": "boolean"}, "stream_options": {"type": "object"},
        "max_tokens": {"type": "integer", "minimum": 1}, "max_completion_tokens": {"type": "integer", "minimum": 1},
        "temperature": {"type": "number"}, "top_p": {"type": "number"}, "stop": {}, "seed": {"type": "integer"},
        "metadata": {"type": "object"}}},
    "ChatCompletion": {"type": "object", "additionalProperties": True, "properties": {
        "id": {"type": "string"}, "object": {"const": "chat.completion"}, "model": {"type": "string"},
        "choices": {"type": "array", "items": {"type": "object"}}, "usage": {"type": "object"},
        "smallfleet": {"type": "object", "description": "every attempt with its check verdicts"}}},
    "ResponsesRequest": {"type": "object", "additionalProperties": True, "properties": {
        "model": {"type": "string"}, "input": {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "object"}}]},
        "instructions": {"type": "string"}, "tools": {"type": "array", "items": {"type": "object"}},
        "text": {"type": "object"}, "max_output_tokens": {"type": "integer"}, "previous_response_id": {"type": "string"},
        "stream": {"type": "boolean"}}},
    "Response": {"type": "object", "additionalProperties": True, "properties": {
        "id": {"type": "string"}, "object": {"const": "response"}, "output": {"type": "array", "items": {"type": "object"}}}},
    "ModelList": {"type": "object", "properties": {"object": {"const": "list"}, "data": {"type": "array", "items": {"type": "object"}}}},
    "Feedback": {"type": "object", "required": ["success"], "properties": {
        "run_id": {"type": "string", "maxLength": 256}, "step_id": {"type": "string", "maxLength": 256},
        "success": {"type": "boolean"}}, "oneOf": [{"required": ["run_id"]}, {"required": ["step_id"]}]},
    "Extract": {"type": "object", "required": ["text", "schema"], "properties": {
        "text": {"type": "string"}, "schema": {"type": "object"}, "instruction": {"type": "string"}}},
}


@functools.cache
def document() -> dict[str, Any]:
    """The OpenAPI 3.1 document (built once: it does not change while the gateway runs) of every route in :data:`smallfleet.server.app.ROUTES`."""
    chat = {"summary": "OpenAI chat completions through the cascade (or one fleet model)", "parameters": _RUN_HEADERS,
            "requestBody": {"required": True, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ChatCompletionRequest"}}}},
            "responses": {"200": {"description": "the completion; with stream: server-sent chat.completion.chunk events",
                                  "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ChatCompletion"}},
                                              "text/event-stream": {"schema": {"type": "string"}}}},
                          **_errors(400, 401, 403, 404, 413, 429, 502, 503, 504)}}
    resp = {"summary": "the Responses API on the same engine", "parameters": _RUN_HEADERS,
            "requestBody": {"required": True, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ResponsesRequest"}}}},
            "responses": {"200": {"description": "the response; with stream: server-sent response events",
                                  "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Response"}},
                                              "text/event-stream": {"schema": {"type": "string"}}}},
                          **_errors(400, 401, 403, 404, 413, 429, 502, 503, 504)}}
    models = {"summary": "auto plus every fleet model (tier, prices, context, loaded)",
              "responses": {"200": _json({"$ref": "#/components/schemas/ModelList"}), **_errors(401, 403)}}
    model = {"summary": "one model of the list", "parameters": [{"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}],
             "responses": {"200": _json({"type": "object", "required": ["id", "object"],
                                         "properties": {"id": {"type": "string"}, "object": {"const": "model"}}}),
                           **_errors(401, 403, 404)}}
    emb = {"summary": "sentence embeddings from the local all-MiniLM-L6-v2 (384 dimensions)",
           "requestBody": {"required": True, "content": {"application/json": {"schema": {
               "type": "object", "required": ["model", "input"],
               "properties": {"model": {"type": "string"}, "input": {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]},
                              "encoding_format": {"enum": ["float", "base64"]}, "dimensions": {"type": "integer"}}}}}},
           "responses": {"200": _json({"type": "object", "properties": {"object": {"const": "list"}, "data": {"type": "array"},
                                                                         "model": {"type": "string"}, "usage": {"type": "object"}}}),
                         **_errors(400, 401, 403, 404, 413, 503)}}
    paths: dict[str, Any] = {
        "/v1/chat/completions": {"post": {**chat, "operationId": "chatCompletions"}},
        "/chat/completions": {"post": {**chat, "operationId": "chatCompletionsNoPrefix"}},
        "/v1/responses": {"post": {**resp, "operationId": "responses"}},
        "/responses": {"post": {**resp, "operationId": "responsesNoPrefix"}},
        "/v1/models": {"get": {**models, "operationId": "models"}},
        "/models": {"get": {**models, "operationId": "modelsNoPrefix"}},
        "/v1/models/{id}": {"get": {**model, "operationId": "model"}},
        "/models/{id}": {"get": {**model, "operationId": "modelNoPrefix"}},
        "/v1/embeddings": {"post": {**emb, "operationId": "embeddings"}},
        "/embeddings": {"post": {**emb, "operationId": "embeddingsNoPrefix"}},
        "/v1/smallfleet/extract": {"post": {
            "operationId": "extract", "summary": "quarantined reading of untrusted text into a schema",
            "requestBody": {"required": True, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Extract"}}}},
            "responses": {"200": _json({"type": "object", "properties": {"fields": {"type": "object"}, "trust": {"const": "untrusted"},
                                                                          "model": {"type": "string"}}}),
                          **_errors(400, 401, 403, 413, 503)}}},
        "/v1/smallfleet/feedback": {"post": {
            "operationId": "feedback", "summary": "the agent's word on a task (run) or an answer (step)",
            "requestBody": {"required": True, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Feedback"}}}},
            "responses": {"200": _json({"type": "object", "properties": {"recorded": {"type": "boolean"}, "success": {"type": "boolean"}}}),
                          **_errors(400, 401, 403, 404)}}},
        "/v1/smallfleet/report": {"get": {
            "operationId": "report", "summary": "spend, savings, tier shares, escalations, guard decisions",
            "parameters": [{"name": "run", "in": "query", "required": False, "schema": {"type": "string"}}],
            "responses": {"200": _json({"type": "object"}), **_errors(401, 403)}}},
        "/health": {"get": {"operationId": "health", "summary": "liveness; more detail to a client that may use the gateway",
                            "responses": {"200": _json({"type": "object", "properties": {"status": {"const": "ok"}}})}}},
        "/metrics": {"get": {"operationId": "metrics", "summary": "Prometheus metrics of this process",
                             "responses": {"200": {"description": "text format 0.0.4",
                                                   "content": {"text/plain": {"schema": {"type": "string"}}}}, **_errors(401, 403)}}},
        "/openapi.json": {"get": {"operationId": "openapi", "summary": "this document",
                                  "responses": {"200": _json({"type": "object"})}}},
        "/": {"get": {"operationId": "dashboard", "summary": "the dashboard (a sign-in form first when keys exist)",
                      "responses": {"200": {"description": "HTML", "content": {"text/html": {"schema": {"type": "string"}}}}}}},
        "/dashboard": {"get": {"operationId": "dashboardAlias", "summary": "the dashboard",
                               "responses": {"200": {"description": "HTML", "content": {"text/html": {"schema": {"type": "string"}}}}}}},
        **{p: {"get": {"operationId": op, "summary": summary,
                       **({"parameters": [{"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}]}
                          if "{id}" in p else {}),
                       "responses": {"200": {"description": "HTML", "content": {"text/html": {"schema": {"type": "string"}}}},
                                     **_errors(400, 401, 403, 404)}}}
           for p, op, summary in (
               ("/runs", "dashboardRuns", "the dashboard: runs with spend, budget, steps and outcome"),
               ("/runs/{id}", "dashboardRun", "the dashboard: one run and its steps"),
               ("/steps", "dashboardSteps", "the dashboard: recent steps"),
               ("/steps/{id}", "dashboardStep", "the dashboard: one step's attempts, checks, guard decisions"),
               ("/unverified", "dashboardUnverified", "the dashboard: answers that failed their checks"),
               ("/tool-calls", "dashboardToolCalls", "the dashboard: tool calls the guard blocked, flagged or held"),
               ("/injections", "dashboardInjections", "the dashboard: injections flagged in tool output"),
               ("/clusters", "dashboardClusters", "the dashboard: learned clusters and their routing decisions"))},
        "/login": {"post": {"operationId": "login", "summary": "the dashboard's key form: a valid key becomes a cookie",
                            "requestBody": {"content": {"application/x-www-form-urlencoded": {"schema": {
                                "type": "object", "properties": {"key": {"type": "string"}}}}}},
                            "responses": {"303": {"description": "back to the dashboard"}, **_errors(401, 403)}}},
        "/logout": {m: {"operationId": f"logout{m.title()}", "summary": "clear the dashboard cookie",
                        "responses": {"303": {"description": "back to the dashboard"}}} for m in ("get", "post")},
    }
    return {"openapi": "3.1.0",
            "info": {"title": "smallfleet gateway", "version": __version__,
                     "description": "OpenAI-compatible: change base_url, nothing else. Every step runs on the cheapest model "
                                    "that passes its checks; x-smallfleet-* headers say which and why."},
            "components": {"schemas": SCHEMAS, "securitySchemes": {"key": {"type": "http", "scheme": "bearer"}}},
            "security": [{"key": []}, {}],
            "paths": paths}
