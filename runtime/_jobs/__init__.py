"""The job queue: what ``ctx.enqueue`` writes and ``forge jobs:*`` reads (``forge_jobs``).

A capability handlers reach through their `Context`; the workers that claim
and run jobs are machinery above it, in `runtime._tasks.job_worker`.
"""
