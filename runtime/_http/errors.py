"""One JSON shape for every error the app answers, client's or server's.

Litestar's exception handlers, registered on the app so that they also shape
the 404 and 405 its router raises::

    {"status_code": 400, "error": "bad request",
     "detail": "Validation failed for POST /api/notes",
     "extra": [{"message": "Expected `str`, got `int`", "key": "title", "source": "body"}],
     "request_id": "3f9a1c2e-1"}

- ``status_code``, ``error`` (the status's name, lower case) and
  ``request_id`` (the request's ``X-Request-ID``) are always there;
- ``detail`` says what went wrong, for people (a client error's own message);
- ``extra`` is Litestar's: for a validation error, one entry per field with
  its ``key``, ``source`` (``body``, ``query``, ``path``, ``header``,
  ``cookie``) and ``message``.

A server error (500) carries nothing about the exception, in any environment
(a development server is exposed more often than one thinks): its type,
message and traceback are logged (`log_exception`) with the same
request id, which the response carries.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

from litestar import MediaType, Request, Response
from litestar.exceptions import ClientException, HTTPException, SerializationException
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR
from msgspec import Struct

from .._cache import CacheUnavailable
from .._db.faults import is_unavailable
from .responses import ForgeResponse

if TYPE_CHECKING:
    from litestar.types import ExceptionHandlersMap

REQUEST_ID_KEY = "forge.request_id"
"""Where the gateway puts the request id in the ASGI scope."""

# RFC 9110's names, whatever the Python version's `http.HTTPStatus` calls them.
_NAMES = {413: "content too large", 422: "unprocessable content"}

# msgspec names a missing field only in its message, and Litestar then reports
# the whole body ("data") as the key: point the key at the field instead.
_MISSING_FIELD = re.compile(r"Object missing required field `(?P<field>[^`]+)`")
# Litestar reports a missing query parameter, header or cookie in `detail` only.
_MISSING_PARAMETER = re.compile(
    r"Missing required (?P<source>[a-z]+) parameter '(?P<key>[^']+)' for path"
)
_BODY_KEY = "data"


class ErrorBody(Struct, omit_defaults=True):
    """The body of every error response; also for handlers' OpenAPI ``responses``::

    @get("/notes/{note_id:int}", responses={404: ResponseSpec(ErrorBody, generate_examples=False)})
    """

    status_code: int
    error: str
    """The status's name, lower case: ``"not found"``."""
    detail: str | None = None
    """What went wrong, for people."""
    extra: Any = None
    """Litestar's: for validation errors, ``[{"key": ..., "source": ..., "message": ...}]``."""
    request_id: str | None = None
    """The request's ``X-Request-ID``, also in the log lines about it."""


def error_name(status_code: int) -> str:
    """``"bad request"`` for 400: the status's name, lower case."""
    if status_code in _NAMES:
        return _NAMES[status_code]
    try:
        return HTTPStatus(status_code).phrase.lower()
    except ValueError:
        return "client error" if status_code < 500 else "server error"


def error_response(
    request: Request[Any, Any, Any],
    status_code: int,
    detail: str | None = None,
    *,
    extra: Any = None,
    headers: Mapping[str, str] | None = None,
) -> Response[ErrorBody]:
    """An error response in the runtime's shape, stamped with the request's id."""
    body = ErrorBody(
        status_code=status_code,
        error=error_name(status_code),
        detail=detail or None,
        extra=extra or None,
        request_id=request.scope.get(REQUEST_ID_KEY),  # type: ignore[call-overload]
    )
    return ForgeResponse(
        body, status_code=status_code, headers=dict(headers or {}), media_type=MediaType.JSON
    )


def server_error(request: Request[Any, Any, Any], exc: Exception) -> Response[ErrorBody]:
    """Any exception that is not an HTTP error: a 500 that says nothing about it."""
    # Deliberately nothing from the exception: its message may hold SQL, paths,
    # data or secrets. The log has it all (after_exception), under the same id.
    return error_response(request, HTTP_500_INTERNAL_SERVER_ERROR)


def http_error(request: Request[Any, Any, Any], exc: HTTPException) -> Response[ErrorBody]:
    """An `HTTPException` (404, 405, 413, validation's 400, a handler's own): its
    status, detail, extra and headers."""
    if exc.status_code == HTTP_500_INTERNAL_SERVER_ERROR:
        # Litestar's own 500s (ImproperlyConfiguredException, ...) carry
        # internal messages too.
        return server_error(request, exc)
    return error_response(
        request, exc.status_code, exc.detail, extra=_field_errors(exc), headers=exc.headers
    )


def exception_handlers() -> ExceptionHandlersMap:
    """Litestar's ``exception_handlers``: HTTP exceptions and every other exception.

    Handlers for narrower exception types (a database error, an app's own)
    take precedence: Litestar picks the closest class in the exception's MRO.
    """
    return {HTTPException: http_error, Exception: server_error}


class ForgeRequest(Request[Any, Any, Any]):
    """Litestar's request, with a body that does not decode a client error in our words.

    Which decoding errors msgspec reports, and how, changes between releases
    (invalid UTF-8 was a `UnicodeDecodeError`, a 500 in Litestar, before
    msgspec 0.23; since then it is a `DecodeError` of its own wording). The
    product's message is ours either way: "JSON is malformed: " and the reason,
    with a body that is not UTF-8 said so, naming the byte.
    """

    async def json(self) -> Any:
        try:
            return await super().json()
        except (SerializationException, UnicodeDecodeError) as exc:
            raise ClientException(_malformed("JSON", await self.body(), exc)) from exc

    async def msgpack(self) -> Any:
        try:
            return await super().msgpack()
        except (SerializationException, UnicodeDecodeError) as exc:
            raise ClientException(_malformed("MessagePack", await self.body(), exc)) from exc


def _malformed(kind: str, body: bytes, exc: Exception) -> str:
    """The detail of a 400 for a body that does not decode as `kind`."""
    if kind == "JSON":  # JSON is text; MessagePack is binary with UTF-8 strings inside
        try:
            body.decode()
        except UnicodeDecodeError as not_utf8:
            return f"JSON is malformed: not UTF-8 ({not_utf8.reason} at byte {not_utf8.start})"
    if isinstance(exc, UnicodeDecodeError):
        return f"{kind} is malformed: a string is not UTF-8 ({exc.reason})"
    return f"{kind} is malformed: {str(exc).removeprefix(f'{kind} is malformed: ')}"


def _field_errors(exc: HTTPException) -> Any:
    """Litestar's ``extra``, with every entry naming the field it is about."""
    extra = exc.extra
    if not extra:
        missing = _MISSING_PARAMETER.match(exc.detail)
        if missing is None:
            return extra
        return [
            {
                "message": "Missing required parameter",
                "key": missing["key"],
                "source": missing["source"],
            }
        ]
    if not isinstance(extra, list):
        return extra
    return [_name_missing_field(entry) for entry in extra]


def _name_missing_field(entry: Any) -> Any:
    if not isinstance(entry, dict) or entry.get("source") != "body":
        return entry
    key = entry.get("key") or _BODY_KEY
    message = str(entry.get("message", ""))
    if message == repr(key):  # a KeyError's text: the body itself is missing
        return {**entry, "message": "Missing request body"}
    missing = _MISSING_FIELD.match(message)
    if missing is None:
        return entry
    field = missing["field"]
    return {**entry, "key": field if key == _BODY_KEY else f"{key}.{field}"}


async def log_exception(exception: BaseException, scope: Any) -> None:
    """Litestar ``after_exception`` hook: a server error's traceback goes to the log.

    A coroutine function, though it awaits nothing: Litestar runs a plain
    function hook in a worker thread, two thread hops for every 404.
    """
    status = getattr(exception, "status_code", 500)
    if status < 500:
        return
    if isinstance(exception, HTTPException) and status != 500:
        return  # raised on purpose (a 503 of a rate limit that fails closed): not unhandled
    if is_unavailable(exception) or isinstance(exception, CacheUnavailable):
        return  # a 503, logged as a rate-limited warning (runtime._http.unavailable, the cache)
    logging.getLogger("forge.handler").error(
        "unhandled %s in %s %s",
        type(exception).__name__,
        scope.get("method", ""),
        scope.get("path", ""),
        exc_info=exception,
        extra={"request_id": scope.get("forge.request_id")},
    )
