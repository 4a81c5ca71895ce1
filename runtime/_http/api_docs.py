"""The handlers' OpenAPI schema and an interactive page, at ``/_api/docs``.

Litestar builds the schema from the handlers' signatures the first time it is
asked for, so enabling it costs nothing at boot nor on the request path.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from litestar.openapi.config import OpenAPIConfig
from litestar.openapi.plugins import JsonRenderPlugin, SwaggerRenderPlugin

if TYPE_CHECKING:
    from .._config import Settings

API_DOCS_PATH = "/_api/docs"
SCHEMA_PATH = f"{API_DOCS_PATH}/openapi.json"


def api_docs_enabled(settings: Settings) -> bool:
    """``[server].api_docs``; unset means on, except in production."""
    chosen = settings.server.api_docs
    return (not settings.is_production) if chosen is None else chosen


def openapi_config(settings: Settings) -> OpenAPIConfig | None:
    """Litestar's OpenAPI configuration, or None to serve no docs (``/_api/docs`` is a 404)."""
    if not api_docs_enabled(settings):
        return None
    return OpenAPIConfig(
        title=settings.app.name,
        version=settings.app.version,
        path=API_DOCS_PATH,
        # Swagger UI at /_api/docs itself; its script and styles come from a CDN
        # (every page Litestar ships does so), the schema from this server.
        render_plugins=[SwaggerRenderPlugin(path="/"), JsonRenderPlugin()],
    )
