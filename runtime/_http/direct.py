"""Serve plain JSON ``GET`` handlers without Litestar's per-request machinery.

Litestar answers a request through general steps: a routing trie, a
`Request`, the kwargs and signature models, the response handler chain and
an exception middleware. For the commonest handler (a fixed path, ``ctx``
and perhaps a few query parameters, a dict or list back as JSON) those steps
cost more than the handler and the runtime's own bookkeeping together.

At assembly `direct_routes` picks the handlers nothing of that touches:
no guards, dependencies, hooks, DTOs, response cache, headers or cookies of
their own, no middleware but the runtime's authentication. For those the
gateway calls the handler itself and sends the JSON. Litestar stays the
authority: the route is still registered there (its OpenAPI entry, its
405s, a trailing slash), every case the short path does not know (a query
parameter that does not convert, a host header Litestar refuses) is handed
to Litestar before the handler runs, and a handler's exception is answered
by the app's own exception handlers. The bytes on the wire are the same.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from litestar import MediaType
from litestar._asgi.utils import is_valid_host
from litestar._kwargs.extractors import create_query_default_dict
from litestar._parsers import parse_query_string
from litestar.handlers import HTTPRouteHandler
from litestar.middleware._internal.exceptions.middleware import get_exception_handler
from litestar.response import Response
from litestar.routes import HTTPRoute
from litestar.serialization import encode_json, get_serializer

from .._auth import AUTH_KEY
from .response_cache import CacheHeaders, cache_headers_of
from .responses import ForgeResponse

if TYPE_CHECKING:
    from litestar import Litestar

    from .._auth import Auth

Authenticate = Callable[[Any], Awaitable["Auth"]]
"""Who makes the request in a scope (`Authentication.identify`)."""

_JSON_TYPE = (b"content-type", MediaType.JSON.value.encode("latin-1"))
_HOST = b"host"


def direct_routes(app: Litestar, authenticate: Authenticate | None) -> dict[str, DirectRoute]:
    """The routes of `app` that qualify, by path; none if the app has Litestar's app-wide
    middleware."""
    if (
        app.cors_config
        or app.csrf_config
        or app.compression_config
        or app.allowed_hosts
        or app.before_send
    ):
        return {}
    app_middleware = 1 if authenticate is not None else 0
    routes: dict[str, DirectRoute] = {}
    for route in app.routes:
        if not isinstance(route, HTTPRoute) or route.path_parameters:
            continue
        entry = route.route_handler_map.get("GET")
        if entry is None:
            continue
        handler, kwargs_model = entry
        cache = cache_headers_of(handler)
        if _plain(handler, kwargs_model, app_middleware, cache):
            routes[route.path] = DirectRoute(
                app, route.path_format, handler, kwargs_model, authenticate, cache
            )
    return routes


def _plain(
    handler: HTTPRouteHandler, kwargs_model: Any, app_middleware: int, cache: CacheHeaders | None
) -> bool:
    """Whether answering `handler` directly leaves out nothing Litestar would do.

    A route cached by `@cached` qualifies too: its hits are answered from the
    near copy, with its `CacheHeaders`; anything else goes to Litestar.
    """
    return_type = handler.parsed_fn_signature.return_type
    return bool(
        inspect.iscoroutinefunction(handler.fn)
        and kwargs_model.expected_reserved_kwargs <= {"scope"}
        and not kwargs_model.dependency_batches
        and not kwargs_model.expected_header_params
        and not kwargs_model.expected_cookie_params
        and not kwargs_model.expected_path_params
        and not kwargs_model.sequence_query_parameter_names
        and kwargs_model.expected_data_dto is None
        and kwargs_model.expected_form_data is None
        and kwargs_model.expected_msgpack_data is None
        and "data" not in handler.parsed_fn_signature.parameters
        and len(handler.resolve_middleware()) == app_middleware + (cache is not None)
        and not handler.resolve_guards()
        and handler.resolve_before_request() is None
        and handler.resolve_after_response() is None
        and not any(layer.after_request for layer in handler.ownership_layers)
        and handler.resolve_return_dto() is None
        and (cache is not None or not handler.cache)
        and handler.cache_key_builder is None
        and not handler.resolve_response_headers()
        and not handler.resolve_response_cookies()
        and handler.background is None
        and handler.status_code == 200
        and handler.resolve_response_class() is ForgeResponse
        and _media_type(handler) == MediaType.JSON.value
        and not return_type.is_subclass_of(Response)
        and not inspect.iscoroutinefunction(return_type.annotation)
    )


def _media_type(handler: HTTPRouteHandler) -> str:
    media_type = handler.media_type
    return media_type.value if isinstance(media_type, MediaType) else str(media_type)


class DirectRoute:
    """One handler, answered by the gateway."""

    __slots__ = (
        "app",
        "authenticate",
        "cache",
        "exception_handlers",
        "fn",
        "handler",
        "query",
        "scope_kwarg",
        "serializer",
        "template",
        "type_encoders",
    )

    def __init__(
        self,
        app: Litestar,
        template: str,
        handler: HTTPRouteHandler,
        kwargs_model: Any,
        authenticate: Authenticate | None,
        cache: CacheHeaders | None = None,
    ) -> None:
        self.app = app
        self.cache = cache
        self.template = template
        self.handler = handler
        self.fn = handler.fn
        self.query = tuple(kwargs_model.expected_query_params)
        self.scope_kwarg = "scope" in kwargs_model.expected_reserved_kwargs
        self.authenticate = authenticate
        self.type_encoders = handler.resolve_type_encoders()
        self.serializer = get_serializer(self.type_encoders)
        self.exception_handlers = handler.resolve_exception_handlers()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        app = self.app
        if not _host_is_valid(scope["headers"]):
            await app(scope, receive, send)  # Litestar's 400, in its words
            return
        # What Litestar's own entry and router leave in the scope.
        scope["app"] = scope["litestar_app"] = app
        scope.setdefault("state", {})
        scope["path_params"] = {}
        scope["route_handler"] = self.handler
        scope["path_template"] = self.template
        try:
            if self.authenticate is not None:  # Litestar's order: before the cache
                scope[AUTH_KEY] = await self.authenticate(scope)
        except Exception as exc:
            await self._answer_error(scope, receive, send, exc)
            return
        if self.cache is not None:
            # A hit from the near copy; Litestar for the rest (it runs and stores the handler).
            if not await self.cache.answer_hit(scope, send):
                await app(scope, receive, send)
            return
        if self.query:
            kwargs = self._bind(scope, receive, send)
            if kwargs is None:
                await app(scope, receive, send)  # a parameter Litestar must refuse or convert
                return
        else:
            kwargs = {"scope": scope} if self.scope_kwarg else {}
        started = False
        try:
            data = await self.fn(**kwargs)
            if type(data) is dict or type(data) is list:
                body = encode_json(data, self.serializer)
                await send(
                    {
                        "type": "http.response.start",
                        "status": 200,
                        "headers": [_JSON_TYPE, (b"content-length", b"%d" % len(body))],
                    }
                )
                started = True
                await send({"type": "http.response.body", "body": body})
                return

            def send_started(message: Any) -> Any:
                nonlocal started
                started = True
                return send(message)

            request = app.request_class(scope, receive, send)
            response = await self.handler.to_response(app=app, data=data, request=request)
            await response(scope, receive, send_started)
        except Exception as exc:
            if started:
                raise
            await self._answer_error(scope, receive, send, exc)

    def _bind(self, scope: Any, receive: Any, send: Any) -> dict[str, Any] | None:
        """The handler's keyword arguments from the query string; None to leave it to Litestar."""
        query = create_query_default_dict(parse_query_string(scope["query_string"]), ())
        values: dict[str, Any] = {"scope": scope} if self.scope_kwarg else {}
        for parameter in self.query:
            value = query.get(parameter.field_alias)
            if value is None:
                if parameter.is_required:
                    return None
                value = parameter.default
            values[parameter.field_name] = value
        try:
            return self.handler.signature_model.parse_values_from_connection_kwargs(  # type: ignore[union-attr]
                connection=self.app.request_class(scope, receive, send), kwargs=values
            )
        except Exception:  # Litestar answers it again, with its own message
            return None

    async def _answer_error(self, scope: Any, receive: Any, send: Any, exc: Exception) -> None:
        """What Litestar's exception middleware does with an exception of the route."""
        app = self.app
        for hook in app.after_exception:
            await hook(exc, scope)
        handle = get_exception_handler(self.exception_handlers, exc)
        if handle is None:
            raise exc
        request = app.request_class(scope, receive, send)
        response = handle(request, exc)
        encoders = self.type_encoders
        await response.to_asgi_response(None, request, type_encoders=encoders)(scope, receive, send)


def _host_is_valid(headers: Any) -> bool:
    for name, value in headers:
        if name == _HOST:
            return is_valid_host(value)
    return True
