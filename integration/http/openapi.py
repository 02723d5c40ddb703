"""The OpenAPI document, built from the routes themselves.

Each admin endpoint is decorated with `@operation(...)` naming its pydantic request and
response models; the document is assembled from those and the route table, so a route
cannot exist without being described. `/docs` serves Swagger UI 5 (the first major version
that reads OpenAPI 3.1) from the installed `swagger-ui-py` package: no CDN.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from importlib.resources import files
from typing import Any, TypeVar

from pydantic import BaseModel, Field
from pydantic.config import JsonDict
from pydantic.json_schema import SkipJsonSchema
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from integration import __version__
from integration.http.responses import JSON

F = TypeVar("F", bound=Callable[..., Any])


def _no_default(schema: JsonDict) -> None:
    schema.pop("default", None)


def optional(description: str) -> Any:
    """A field that may be absent but is never null (type it `X | SkipJsonSchema[None]`):
    documented as X alone, without a null default."""
    return Field(None, description=description, json_schema_extra=_no_default)


class Problem(BaseModel):
    """One thing wrong with a definition (a mapping, a trigger): where, and what."""

    where: str
    reason: str


class ErrorBody(BaseModel):
    error: str
    detail: str
    field: str | SkipJsonSchema[None] = optional(
        "The input at fault, when there is one (error `invalid_field`)"
    )
    problems: list[Problem] | SkipJsonSchema[None] = optional(
        "Every problem found in a definition (error `invalid_mapping`), `field` naming the first"
    )


class RejectionBody(BaseModel):
    """A message of a batch that was not accepted, and why (spec.Rejection, as documented)."""

    index: int
    error: str
    detail: str


@dataclass(frozen=True)
class Param:
    name: str
    description: str
    schema: dict[str, Any] = field(default_factory=lambda: {"type": "string"})
    required: bool = False


@dataclass(frozen=True)
class ErrorShape:
    """How an endpoint's errors are written when another API defines their shape (the /v1
    intake answers as Segment's Tracking API does): the model the document shows, and how an
    error (its code, sentence and extra fields) is rendered as that model. The error handler
    reads it from the endpoint's operation, so the document and the answers cannot drift."""

    model: type[BaseModel]
    render: Callable[[str, str, dict[str, Any]], dict[str, Any]]


@dataclass(frozen=True)
class Operation:
    summary: str
    response: type[BaseModel] | None
    status: int = 200
    body: type[BaseModel] | None = None
    body_schema: dict[str, Any] | None = None
    body_required: bool = True
    query: tuple[Param, ...] = ()
    errors: tuple[int, ...] = (401, 404)
    tag: str = "admin"
    # The API-key scope that may call this admin route besides the admin token (which may call
    # every one); None: the admin token only. Checked by admin/auth.py, documented here.
    scope: str | None = None
    # For answers that are not a pydantic model (the metrics text, the docs page, this document).
    response_schema: dict[str, Any] | None = None
    media_type: str = "application/json"
    error_shape: ErrorShape | None = None  # None: the one error shape, ErrorBody
    # Security schemes (of SECURITY_SCHEMES) the operation takes; admin operations: bearer.
    security: tuple[str, ...] = ()


def operation(**kwargs: Any) -> Callable[[F], F]:
    def mark(fn: F) -> F:
        fn.__openapi__ = Operation(**kwargs)  # type: ignore[attr-defined]
        return fn

    return mark


SECURITY_SCHEMES = {
    "bearer": {"type": "http", "scheme": "bearer", "description": "ADMIN_TOKEN: every /api route."},
    "apiKey": {
        "type": "http",
        "scheme": "bearer",
        "description": "An environment's API key (sik_…), sent the same way: only the routes of"
        " its own environment that name one of its scopes (publish, read).",
    },
    "writeKey": {
        "type": "http",
        "scheme": "basic",
        "description": "The environment's intake write key as the user name, an empty"
        " password (or `writeKey` in the body, as Segment's Tracking API accepts)",
    },
}

ERROR_WORDS = {
    400: "The request is invalid; `detail` says how.",
    401: "Missing or wrong credentials.",
    403: "Forbidden: an API key without the scope this route needs or of another environment"
    " (admin API), or a browser origin the environment does not allow (/v1 intake).",
    404: "No such resource in this environment.",
    409: "Conflicts with the current state.",
    413: "Body over the size limit.",
    415: "Content-Encoding not supported.",
    422: "Well-formed but unusable (a mapping, a trigger, a tracking plan): `field` names the path"
    " at fault, and `problems` lists each one where there are several.",
    429: "Too many failed authentications from this client; retry after Retry-After seconds.",
    503: "A dependency (the database) is unreachable; retry.",
}


class _Builder:
    def __init__(self) -> None:
        self.schemas: dict[str, Any] = {}
        self.schemas["ErrorBody"] = self._schema(ErrorBody)  # after: its $defs land here too
        self.paths: dict[str, dict[str, Any]] = {}

    def _schema(self, model: type[BaseModel]) -> dict[str, Any]:
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        for name, sub in schema.pop("$defs", {}).items():
            self.schemas[name] = sub
        return schema

    def ref(self, model: type[BaseModel]) -> dict[str, Any]:
        if model.__name__ not in self.schemas:
            self.schemas[model.__name__] = self._schema(model)
        return {"$ref": f"#/components/schemas/{model.__name__}"}

    def add(self, path: str, method: str, op: Operation, operation_id: str) -> None:
        params = [
            {"name": n, "in": "path", "required": True, "schema": {"type": "string"}}
            for n in re.findall(r"{(\w+)}", path)
        ]
        params += [
            {
                "name": p.name,
                "in": "query",
                "required": p.required,
                "description": p.description,
                "schema": p.schema,
            }
            for p in op.query
        ]
        entry: dict[str, Any] = {
            "operationId": operation_id,
            "summary": op.summary,
            "tags": [op.tag],
            "parameters": params,
            "responses": self._responses(op),
        }
        security = op.security or (("bearer",) if op.tag == "admin" else ())
        if security:
            entry["security"] = [{name: []} for name in security]
            if op.scope:
                # OpenAPI 3.1: for a scheme other than OAuth2 the list names the roles needed.
                entry["security"].append({"apiKey": [op.scope]})
        body = self.ref(op.body) if op.body else op.body_schema
        if body is not None:
            entry["requestBody"] = {
                "required": op.body_required,
                "content": {"application/json": {"schema": body}},
            }
        self.paths.setdefault(path, {})[method.lower()] = entry

    def _responses(self, op: Operation) -> dict[str, Any]:
        ok: dict[str, Any] = {"description": "Success"}
        schema = self.ref(op.response) if op.response is not None else op.response_schema
        if schema is not None:
            ok["content"] = {op.media_type: {"schema": schema}}
        out = {str(op.status): ok}
        codes = set(op.errors) | ({400} if op.body or op.body_schema or op.query else set())
        if op.tag == "admin":
            codes.add(429)  # the failed-authentication throttle in front of every admin route
            codes.add(403)  # an API key without the scope, or of another environment
        error_schema = self.ref(op.error_shape.model if op.error_shape else ErrorBody)
        for code in sorted(codes | {503}):
            out[str(code)] = {
                "description": ERROR_WORDS.get(code, "Error"),
                "content": {"application/json": {"schema": error_schema}},
            }
        return out


def _walk(routes: Iterable[BaseRoute], prefix: str = "") -> Iterable[tuple[str, Route]]:
    for route in routes:
        if isinstance(route, Mount):
            yield from _walk(route.routes, prefix + route.path)
        elif isinstance(route, Route):
            # path_format drops Starlette's convertors (`{id:path}`): OpenAPI names the parameter.
            yield prefix + route.path_format, route


def build(routes: Iterable[BaseRoute]) -> dict[str, Any]:
    builder = _Builder()
    for path, route in _walk(routes):
        op = getattr(route.endpoint, "__openapi__", None)
        if op is None:
            continue
        methods = sorted((route.methods or set()) - {"HEAD"})
        name = route.endpoint.__module__.rsplit(".", 1)[-1] + "." + route.endpoint.__name__
        for method in methods:
            # Operation ids are unique: one endpoint that takes several methods gets one each.
            suffix = f"_{method.lower()}" if len(methods) > 1 and method != "POST" else ""
            builder.add(path, method, op, name.rstrip("_") + suffix)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Segment integration",
            "version": __version__,
            "description": "Webhooks destination in, HTTP API source out, per environment.",
        },
        "paths": builder.paths,
        "components": {
            "schemas": builder.schemas,
            "securitySchemes": SECURITY_SCHEMES,
        },
    }


def document_routes(routes: list[BaseRoute]) -> list[BaseRoute]:
    """/openapi.json, the document of `routes` (built on the first request, when the list is
    complete: these routes are in it too), and /docs, Swagger UI served from its package."""
    built: dict[str, Any] = {}

    @operation(
        summary="This OpenAPI document",
        response=None,
        response_schema={"type": "object"},
        errors=(),
        tag="operations",
    )
    async def openapi_json(request: Request) -> Response:
        if "document" not in built:
            built["document"] = build(routes)
        return JSON(built["document"])

    return [
        Route("/openapi.json", openapi_json),
        Route("/docs", docs),
        Mount("/docs/static", StaticFiles(directory=SWAGGER_UI_STATIC)),
    ]


# Swagger UI's own files (swagger-ui-bundle.js, swagger-ui.css, ...) as the package ships them;
# only these are used, not the package's framework glue.
SWAGGER_UI_STATIC = str(files("swagger_ui") / "static")

DOCS_SCRIPT = """
window.ui = SwaggerUIBundle({url: "/openapi.json", dom_id: "#swagger-ui"});
"""
DOCS_PAGE = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>Segment integration API</title>
<link rel="stylesheet" href="/docs/static/swagger-ui.css"></head>
<body><div id="swagger-ui"></div>
<script src="/docs/static/swagger-ui-bundle.js"></script>
<script>{DOCS_SCRIPT}</script></body></html>
"""
# The page runs Swagger UI from this origin and its one inline script (allowed by its hash),
# fetches the document from here, and may not be framed (clickjacking "Try it out").
DOCS_HEADERS = {
    "content-security-policy": "default-src 'none'; script-src 'self' 'sha256-"
    + base64.b64encode(hashlib.sha256(DOCS_SCRIPT.encode()).digest()).decode()
    + "'; style-src 'self'; img-src 'self' data:; connect-src 'self'; font-src 'self';"
    " frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
}


@operation(
    summary="Swagger UI for this document (served locally, no CDN)",
    response=None,
    response_schema={"type": "string"},
    media_type="text/html",
    errors=(),
    tag="operations",
)
async def docs(request: Request) -> Response:
    return HTMLResponse(DOCS_PAGE, headers=DOCS_HEADERS)
