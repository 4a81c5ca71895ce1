"""Password hashing: argon2id through pwdlib, off the event loop.

A hash takes about a tenth of a second of CPU by design, so it runs in a
thread: the worker's other requests go on meanwhile. Verifying against no
hash (an unknown user) costs the same as a wrong password, so that timing
tells nothing about which accounts exist.
"""

from __future__ import annotations

import asyncio
import functools

from pwdlib import PasswordHash
from pwdlib.hashers.argon2 import Argon2Hasher

_hasher = PasswordHash((Argon2Hasher(),))


@functools.cache
def _nobody() -> str:
    """Verified against when there is no hash, for the same cost as a real one.

    Made on first use, in the thread of that verification, rather than at
    import: it costs a tenth of a second that every boot would pay.
    """
    return _hasher.hash("no such user: any password fails against this")


def _verify_nobody(password: str) -> bool:
    return _hasher.verify(password, _nobody())


async def hash_password(password: str) -> str:
    """The argon2id hash of `password`, to store."""
    return await asyncio.to_thread(_hasher.hash, password)


async def verify_password(password: str, stored: str | None) -> tuple[bool, str | None]:
    """Whether `password` matches the `stored` hash; and a new hash to store when the
    parameters changed since (else None). With `stored` None: False, at the same cost."""
    if stored is None:
        await asyncio.to_thread(_verify_nobody, password)
        return False, None
    try:
        return await asyncio.to_thread(_hasher.verify_and_update, password, stored)
    except Exception:  # a stored value that is no hash of ours: a failed login, not a 500
        return False, None
