"""The apps the runtime is measured against, each served by a real server process.

- `litestar_app`: the demo's handlers written by hand in bare Litestar (the baseline);
- `raw_asgi`: a raw ASGI callable (the ceiling);
- `fastapi_app`: the same greeting in FastAPI.
"""
