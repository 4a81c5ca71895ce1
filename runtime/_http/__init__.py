"""Everything between the socket and a handler.

App assembly (`app`), the ASGI front door (`gateway`: probes, request ids,
access log, metrics, drain accounting), the probes, internal access to
``/_api/metrics`` and ``/_api/docs``, ``ctx`` injection, the OpenAPI docs, the
error shapes, the access log, and the 503 of an unreachable database.
"""
