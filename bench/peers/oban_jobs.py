"""oban's no-op worker, imported by ``oban start --cron-modules oban_jobs``.

It runs in oban's own Python >= 3.12 environment (see `oban_runner`), with this
folder on ``PYTHONPATH``, so it imports oban alone and nothing of this package.
"""

from __future__ import annotations

from oban import Job, worker


@worker(queue="default")
class Noop:
    async def process(self, job: Job) -> None:
        return None
