"""Database access: the engine for the configured URL, and the runtime's own tables."""

from .engine import create_engine, session_engine

__all__ = ["create_engine", "session_engine"]
