"""Database access: the engine for the configured URL, and the runtime's own tables."""

from .engine import create_engine, database_url, is_sqlite

__all__ = ["create_engine", "database_url", "is_sqlite"]
