"""A JWT secret for development, so a fresh checkout with ``[auth]`` runs at once.

``jwt_secret = "${JWT_SECRET:-}"`` reads as: the environment's, else (in
development and tests only) a random one kept in ``.forge/jwt-secret``. It is
written once and read by every worker and every restart, so sessions survive
both; anywhere else an empty secret stops the boot, naming ``JWT_SECRET``.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from .._errors import ConfigError

SECRET_FILE = Path(".forge") / "jwt-secret"


def development_secret(root: Path) -> str:
    """The project's development secret, made on first use (the first writer wins)."""
    path = root / SECRET_FILE
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        draft = path.with_name(f".{path.name}.{os.getpid()}")
        descriptor = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w", encoding="ascii") as file:
            file.write(secrets.token_hex(32) + "\n")
        try:
            # Atomic, and refused if another worker's is there already: one secret.
            os.link(draft, path)
        except FileExistsError:
            pass
        finally:
            draft.unlink()
    secret = path.read_text(encoding="ascii").strip()
    if len(secret) < 32:
        raise ConfigError(
            f"{path} holds no usable secret (fewer than 32 characters)",
            hint="delete it: the next start writes a new one (sessions signed with it end)",
        )
    return secret
