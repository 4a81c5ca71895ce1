"""Authentication: verifying bearer tokens into ``ctx.auth``.

`runtime._http` reads the token of each request (``Authorization: Bearer`` or
``[auth].cookie``) and hands it to `Verifier`; handlers see an `Auth`.
"""

from .identity import ANONYMOUS, AUTH_KEY, Auth, auth_of
from .keys import KeysUnavailable
from .verify import TokenRejected, Verifier

__all__ = [
    "ANONYMOUS",
    "AUTH_KEY",
    "Auth",
    "KeysUnavailable",
    "TokenRejected",
    "Verifier",
    "auth_of",
]
