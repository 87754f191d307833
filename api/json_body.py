"""For a route that reads its JSON body itself (the hot path, where FastAPI's parameter handling
costs more than the work): the body parsed with the errors a declared body gets, and documented
in the OpenAPI as a declared body would be."""

from __future__ import annotations

from typing import Any, TypeVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException

Model = TypeVar("Model", bound=BaseModel)

_REF = "#/components/schemas/{model}"
_documented: dict[str, type[BaseModel]] = {}


async def json_body(request: Request, model: type[Model]) -> Model:
    """``model`` read from the JSON body. Invalid JSON or fields raise the RequestValidationError
    of a declared body (422, naming the field); a body sent as another media type is a 415."""
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    media_type = media_type or "application/json"
    if media_type != "application/json" and not media_type.endswith("+json"):
        raise HTTPException(
            415, f"send the body as JSON (Content-Type: application/json), not {media_type}"
        )
    body = await request.body()
    try:
        return model.model_validate_json(body)
    except ValidationError as error:
        problems = [
            {**problem, "loc": ("body", *problem["loc"])}
            for problem in error.errors(include_url=False)
        ]
        raise RequestValidationError(problems, body=body) from None


def documented_body(model: type[BaseModel]) -> dict[str, Any]:
    """``openapi_extra`` that documents ``model`` as the route's JSON body (``document_bodies``
    puts its schema into the components)."""
    _documented[model.__name__] = model
    schema = {"$ref": _REF.format(model=model.__name__)}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


def document_bodies(app: FastAPI, *, max_text_chars: int) -> None:
    """Make ``app.openapi()`` include the schemas of the bodies given to ``documented_body``, with
    a review's length limit as the settings have it."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = generate()
        schemas = schema.setdefault("components", {}).setdefault("schemas", {})
        for name, model in _documented.items():
            definition = model.model_json_schema(ref_template=_REF)
            for nested, nested_definition in definition.pop("$defs", {}).items():
                schemas.setdefault(nested, nested_definition)
            schemas.setdefault(name, definition)
        schemas["ReviewIn"]["properties"]["text"]["maxLength"] = max_text_chars
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
