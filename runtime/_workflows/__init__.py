"""Durable workflows' records: runs, their steps and signals, and what changes them.

The engine that replays a run is `runtime._tasks.workflows`; what is here works
on a session or a connection, so a handler, a step and the CLI share it.
"""
