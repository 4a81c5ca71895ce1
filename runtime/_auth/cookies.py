"""Cookie mode, for a same-site single-page app: the session in HttpOnly cookies.

Three cookies, all ``SameSite=Lax`` and ``Secure`` outside development:

- ``[auth].cookie``: the access token, HttpOnly (no script can read it);
- ``<cookie>_refresh``: the refresh token, HttpOnly, sent only to the refresh
  and logout routes' path;
- ``<cookie>_csrf``: a random value scripts *can* read, which unsafe requests
  must echo in ``X-CSRF-Token`` (`runtime._http.authentication` checks it).
"""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING, Any

from litestar.datastructures import Cookie

if TYPE_CHECKING:
    from .._config import Settings
    from .sessions import Tokens


def csrf_cookie(name: str) -> str:
    return f"{name}_csrf"


def refresh_cookie(name: str) -> str:
    return f"{name}_refresh"


def session_cookies(settings: Settings, tokens: Tokens, refresh_path: str = "/") -> list[Cookie]:
    """The cookies that carry `tokens` in cookie mode (``[auth].cookie`` must be set)."""
    name = cookie_name(settings)
    secure = not settings.is_development
    lifetime = int(settings.auth.refresh_ttl)
    common: dict[str, Any] = {"secure": secure, "samesite": "lax"}
    return [
        Cookie(
            key=name, value=tokens.access_token, max_age=tokens.expires_in, httponly=True, **common
        ),
        Cookie(
            key=refresh_cookie(name),
            value=tokens.refresh_token,
            max_age=lifetime,
            path=refresh_path,
            httponly=True,
            **common,
        ),
        Cookie(key=csrf_cookie(name), value=secrets.token_urlsafe(24), max_age=lifetime, **common),
    ]


def cleared_cookies(settings: Settings, refresh_path: str = "/") -> list[Cookie]:
    """Cookies that remove the session's from the browser (logout)."""
    name = cookie_name(settings)
    return [
        Cookie(key=name, value="", max_age=0, httponly=True),
        Cookie(key=refresh_cookie(name), value="", max_age=0, path=refresh_path, httponly=True),
        Cookie(key=csrf_cookie(name), value="", max_age=0),
    ]


def cookie_name(settings: Settings) -> str:
    if settings.auth.cookie is None:
        raise RuntimeError("cookie mode needs [auth].cookie, the name of the access token's cookie")
    return settings.auth.cookie
