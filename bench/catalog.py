"""Every scenario, by name and in the report's order."""

from __future__ import annotations

from .auth import auth
from .cache import cache
from .features import features
from .harness import Scenario
from .jobs import jobs
from .large import large
from .memory import memory
from .realtime import realtime
from .scaling import scaling
from .scenarios import cold_start, contention, db_read, drain, executable, hello, static
from .workflows import workflows

SCENARIOS = (
    Scenario("hello", "1. JSON hello", hello),
    Scenario("db", "2. DB read (PostgreSQL)", db_read),
    Scenario("static", "3. Static files", static),
    Scenario("cold-start", "4. Cold start", cold_start),
    Scenario("drain", "5. Drain", drain),
    Scenario("contention", "6. Migration lock contention", contention),
    Scenario("jobs", "7. Background jobs (PostgreSQL)", jobs),
    Scenario("executable", "8. One executable (forge build)", executable),
    Scenario("memory", "9. Memory (one worker)", memory),
    Scenario("scaling", "10. Scaling (2 workers against 1)", scaling),
    Scenario("large", "11. Large bodies alongside hellos", large),
    Scenario("features", "12. What each default feature costs", features),
    Scenario("workflows", "13. Durable workflows (PostgreSQL)", workflows),
    Scenario("cache", "14. Cache, cached responses, rate limits", cache),
    Scenario("auth", "15. Authentication (JWT bearer, argon2id)", auth),
    Scenario("realtime", "16. Realtime (server-sent events)", realtime),
)
