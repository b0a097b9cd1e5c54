"""The one place where errors become HTTP answers: ``{"error": "...", "detail": [...]}``."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from heldar.errors import (
    Busy,
    Conflict,
    InvalidInput,
    KernelError,
    NotFound,
    TooLarge,
    Unauthorized,
    Unavailable,
)
from heldar.redaction import redact

log = logging.getLogger(__name__)

# Most specific first: Busy is an Unavailable, TooLarge an InvalidInput.
STATUS_BY_KIND: tuple[tuple[type[KernelError], int], ...] = (
    (NotFound, 404),
    (TooLarge, 413),
    (InvalidInput, 422),
    (Unauthorized, 401),
    (Conflict, 409),
    (Busy, 503),
    (Unavailable, 503),
)
_MALFORMED_JSON = "json_invalid"
_LOCATIONS = frozenset({"body", "query", "path", "header", "cookie"})


def error_body(message: str, detail: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"error": redact(message), "detail": detail or []}


def install(app: FastAPI) -> None:
    app.add_exception_handler(KernelError, _kernel_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected_error)


async def _kernel_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, KernelError)
    status = next((code for kind, code in STATUS_BY_KIND if isinstance(exc, kind)), 500)
    headers = {"Retry-After": str(exc.retry_after_s)} if isinstance(exc, Busy) else None
    body = error_body(exc.message, [p.as_dict() for p in exc.detail])
    return JSONResponse(body, status_code=status, headers=headers)


async def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    # Never echo the input back: it may hold a password.
    detail = [
        {
            "loc": list(err.get("loc", ())),
            "msg": redact(str(err.get("msg", ""))),
            "type": err.get("type", ""),
        }
        for err in exc.errors()
    ]
    if any(d["type"] == _MALFORMED_JSON for d in detail):
        return JSONResponse(error_body("malformed JSON body", detail), status_code=400)
    summary = "; ".join(f"{_field_name(d['loc'])}: {d['msg']}" for d in detail)
    return JSONResponse(error_body(f"invalid request: {summary}", detail), status_code=422)


async def _http_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    return JSONResponse(
        error_body(str(exc.detail)), status_code=exc.status_code, headers=exc.headers
    )


async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return JSONResponse(error_body("internal error; see the kernel log"), status_code=500)


def _field_name(loc: list[Any]) -> str:
    parts = [str(p) for p in loc if p not in _LOCATIONS]
    return ".".join(parts) or (str(loc[0]) if loc else "request")
