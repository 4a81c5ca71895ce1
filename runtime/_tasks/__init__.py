"""The engines that run work outside a request.

`runner` gives every task its ``ctx`` and session, the same way on a node and
from the CLI; `crons` claims each tick once per cluster; `job_worker` claims
and runs queued jobs. What a handler declares lives in `runtime._project`.
"""
