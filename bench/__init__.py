"""The runtime's benchmark harness: ``uv run python -m bench`` (see bench/README.md)."""
