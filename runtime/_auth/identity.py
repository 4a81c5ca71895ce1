"""``ctx.auth``: who made the request, from a verified token; anonymous without one."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from litestar.exceptions import NotAuthorizedException, PermissionDeniedException


class Auth:
    """The request's identity: ``user_id`` (the token's ``sub``), ``claims``, ``roles``.

    Anonymous (no token) is an `Auth` too, with ``user_id`` None: never a crash.
    """

    __slots__ = ("claims", "roles", "user_id")

    def __init__(
        self,
        user_id: str | None = None,
        claims: Mapping[str, Any] | None = None,
        roles: frozenset[str] = frozenset(),
    ) -> None:
        self.user_id = user_id
        self.claims: Mapping[str, Any] = claims or {}
        self.roles = roles

    @property
    def is_authenticated(self) -> bool:
        return self.user_id is not None

    def require(self, *roles: str) -> None:
        """401 if anonymous; 403 unless the user has every one of `roles`."""
        if self.user_id is None:
            raise NotAuthorizedException(
                "authentication required", headers={"WWW-Authenticate": "Bearer"}
            )
        missing = sorted(set(roles) - self.roles)
        if missing:
            raise PermissionDeniedException(f"requires the role(s): {', '.join(missing)}")

    def __repr__(self) -> str:
        if self.user_id is None:
            return "<Auth anonymous>"
        return f"<Auth user_id={self.user_id!r} roles={sorted(self.roles)}>"


ANONYMOUS = Auth()


AUTH_KEY = "forge.auth"
"""Where the request's `Auth` is, in the ASGI scope."""


def auth_of(scope: Any) -> Auth:
    """The `Auth` of the request in `scope`; anonymous if none was made."""
    return scope.get(AUTH_KEY, ANONYMOUS)
