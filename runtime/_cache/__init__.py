"""The cache: ``ctx.cache``, cached responses and rate-limit counters, on one backend.

Redis (``[cache].url`` or ``$REDIS_URL``), else a table in the app's database,
or ``memory://`` for each process's own. `runtime._http` puts responses and
rate limits on it (`runtime._cache.limiter`, imported there only: the node's
own process never pays for the `limits` package); `runtime._context` gives
handlers `Cache`.
"""

from .backend import Backend
from .client import Cache, CacheError, CacheUnavailable
from .opening import namespace_for, open_backend

__all__ = [
    "Backend",
    "Cache",
    "CacheError",
    "CacheUnavailable",
    "namespace_for",
    "open_backend",
]
