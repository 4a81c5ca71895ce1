"""The loop async tests and fixtures run on: asyncio, the runtime's (asyncpg, aiosqlite
and Granian run on no other).

`runtime.testing` registers this module as a plugin once the entry points' are
loaded: pytest takes the fixture of the plugin registered last, so this one
replaces anyio's default (a test per installed backend), and a conftest's
``anyio_backend`` still replaces it.
"""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"
