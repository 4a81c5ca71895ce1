"""Add no-op jobs with oban's ``enqueue_many``: ``python oban_enqueue.py DSN TOTAL``.

Run by oban's own Python >= 3.12 environment (see `oban_runner`). Prints, as
JSON, `time.monotonic()` just before the call, the seconds it took and the key
of the last job it added.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

from oban import Oban
from oban_jobs import Noop  # a sibling: this script's folder is first on sys.path


async def enqueue(dsn: str, total: int) -> dict[str, float | int]:
    pool = await Oban.create_pool(dsn)
    try:
        # No queues: a client that only inserts. Each job carries its number, as forge's do.
        oban = Oban(pool=pool)
        jobs = [Noop.new({"n": n}) for n in range(total)]
        began = time.monotonic()
        added = await oban.enqueue_many(jobs)
        seconds = time.monotonic() - began
        return {"began": began, "seconds": seconds, "last_id": max(job.id for job in added)}
    finally:
        await pool.close()


if __name__ == "__main__":
    print(json.dumps(asyncio.run(enqueue(sys.argv[1], int(sys.argv[2])))))
