"""15. Authentication: what verifying a bearer token costs a request, and argon2id a login.

Two forge servers, each a temp copy of the demo with the scenario's handler
module (`DemoProject.add_auth_handler`: ``GET /api/bench/whoami``, for the
checks only):

- one with ``[auth]`` on: ``FORGE_AUTH__JWT_SECRET`` a secret of the run's own
  (64 hex characters), ``FORGE_AUTH__ISSUER`` and ``FORGE_AUTH__AUDIENCE``;
- one without ``[auth]``: the demo with its ``[auth]`` section taken out, so no
  authentication middleware.

The demo's ``GET /api/hello`` is measured on the first without a token
(anonymous) and with a valid HS256 bearer token made here with joserfc (the
same token on every request, as a client sends it: verified in full once,
then remembered by the worker, with its ``exp`` checked on every request), and
on the second without a token, which is what turning
``[auth]`` on costs an anonymous request. Both servers are up at once and the
URLs are measured in turn (`Bench.measure`), so every ratio is of one run.

Then, the servers stopped, a child process (``python -m bench.auth N``) times
the runtime's own ``hash_password`` and ``verify_password`` (argon2id through
pwdlib on its defaults, in a thread), one call at a time on an idle loop:
medians of N.
"""

from __future__ import annotations

import json
import os
import secrets
import statistics
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import httpx
from joserfc import jwt
from joserfc.jwk import OctKey

from .harness import HELLO, READY, Bench, Load, say
from .project import REPO, clean_environ
from .report import (
    AUTH_ANONYMOUS,
    AUTH_BEARER,
    AUTH_HASH,
    AUTH_NONE,
    AUTH_VERIFY,
    Row,
    median_ms,
    ratio,
)
from .servers import Server, wait_all_ok

ISSUER = "forge-bench"
AUDIENCE = "forge-bench-api"
SUBJECT = "bench-user"
WHOAMI = "/api/bench/whoami"
PASSWORD = "correct horse battery staple"


def auth(bench: Bench) -> list[Row]:
    secret = secrets.token_hex(32)
    token = make_token(secret)
    bearer = (("Authorization", f"Bearer {token}"),)
    expected = {"message": f"{bench.greeting}, world!"}
    with bench.servers() as servers:
        on = bench.project(
            "auth-on",
            {
                "FORGE_AUTH__JWT_SECRET": secret,
                "FORGE_AUTH__ISSUER": ISSUER,
                "FORGE_AUTH__AUDIENCE": AUDIENCE,
            },
        )
        off = bench.project("auth-off")
        off.without_auth()
        for project in (on, off):
            project.add_auth_handler()
        with_auth, without = bench.spawn_forge(servers, on), bench.spawn_forge(servers, off)
        ready = wait_all_ok([with_auth, without], READY)
        for what, server, ready_at in zip(("on", "off"), (with_auth, without), ready, strict=True):
            say(f"  forge, [auth] {what}: ready in {ready_at - server.spawned_at:.1f} s")
        _check(with_auth, without, secret, token, expected)

        rows = bench.measure(
            "auth",
            [
                Load(
                    AUTH_NONE,
                    "forge",
                    without.url + HELLO,
                    "the demo without its [auth] section: no authentication middleware",
                ),
                Load(
                    AUTH_ANONYMOUS,
                    "forge",
                    with_auth.url + HELLO,
                    "FORGE_AUTH__JWT_SECRET (64 hex chars, the run's own), __ISSUER, "
                    "__AUDIENCE; no Authorization header",
                ),
                Load(
                    AUTH_BEARER,
                    "forge",
                    with_auth.url + HELLO,
                    f"the same server; every request `Authorization: Bearer` the one token "
                    f"({len(token)} chars; sub, exp, iat, iss, aud), "
                    "verified once, then remembered",
                    headers=bearer,
                ),
            ],
        )
    _annotate(rows)
    rows += _passwords(bench)
    return rows


def make_token(secret: str, *, audience: str = AUDIENCE, lifetime: int = 3600) -> str:
    """An HS256 access token for `SUBJECT`, as an issuer of the app's would sign it."""
    now = int(time.time())
    claims = {
        "sub": SUBJECT,
        "exp": now + lifetime,
        "iat": now,
        "iss": ISSUER,
        "aud": audience,
    }
    return jwt.encode({"alg": "HS256"}, claims, OctKey.import_key(secret))


def _get(server: Server, path: str, token: str | None = None) -> httpx.Response:
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    return httpx.get(server.url + path, headers=headers, timeout=10)


def _check(
    with_auth: Server, without: Server, secret: str, token: str, expected: dict[str, str]
) -> None:
    """The measured requests are what they say: verified, anonymous, or without [auth]."""
    for server, sent in ((with_auth, None), (with_auth, token), (without, None)):
        answer = _get(server, HELLO, sent)
        if answer.status_code != 200 or answer.json() != expected:
            raise server.fail(f"GET {HELLO}: {answer.status_code} {answer.text[:300]}")
    who = {
        "with the token": _get(with_auth, WHOAMI, token).json().get("user_id"),
        "anonymous": _get(with_auth, WHOAMI).json().get("user_id"),
    }
    if who != {"with the token": SUBJECT, "anonymous": None}:
        raise with_auth.fail(f"GET {WHOAMI}: ctx.auth.user_id was {who}")
    # The token is checked, not only read: another secret's, or another audience's, is refused.
    for what, wrong in (
        ("signed with another secret", make_token(secrets.token_hex(32))),
        ("for another audience", make_token(secret, audience="someone-else")),
    ):
        if (status := _get(with_auth, HELLO, wrong).status_code) != 401:
            raise with_auth.fail(f"GET {HELLO} with a token {what} answered {status}, not 401")
    if (user := _get(without, WHOAMI, token).json().get("user_id")) is not None:
        raise without.fail(f"without [auth], the token made ctx.auth.user_id {user!r}")


def _annotate(rows: list[Row]) -> None:
    """The anonymous row against the server without [auth]; the bearer row against it."""
    by_case = {row.case: row for row in rows}
    for case, base_case, what in (
        (AUTH_ANONYMOUS, AUTH_NONE, "x no [auth]"),
        (AUTH_BEARER, AUTH_ANONYMOUS, "x anonymous"),
    ):
        row, base = by_case[case], by_case[base_case]
        if (times := ratio(row.rps, base.rps)) is not None:
            row.notes = f"{times:.2f} {what}; {row.notes}"
        if row.rps and base.rps:
            extra = (1 / row.rps - 1 / base.rps) * 1e6
            row.notes += f"; {extra:+.1f} us per request (1 / req/s) against {base_case!r}"


# -- argon2id, in a child process ------------------------------------------------------------


def _passwords(bench: Bench) -> list[Row]:
    rounds = 3 if bench.options.quick else 10
    done = subprocess.run(
        [sys.executable, "-m", "bench.auth", str(rounds)],
        cwd=REPO,
        env=clean_environ(),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"bench.auth exited with {done.returncode}:\n{done.stderr}")
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    parameters = figures["parameters"]
    where = (
        f"argon2id {parameters} (pwdlib {_version('pwdlib')} Argon2Hasher() defaults, "
        f"argon2-cffi {_version('argon2-cffi')}), in a thread (asyncio.to_thread), one call "
        f"at a time on an idle loop, in a child process; {os.cpu_count()} cores"
    )
    hash_ms, hash_spread = median_ms(figures["hash_ms"])
    verify_ms, verify_spread = median_ms(figures["verify_ms"])
    unknown_ms = statistics.median(figures["unknown_ms"])
    say(f"  argon2id: hash {hash_ms:.0f} ms, verify {verify_ms:.0f} ms ({parameters})")
    return [
        Row(
            "auth",
            AUTH_HASH,
            "forge",
            time_ms=hash_ms,
            notes=f"{hash_spread}; CPU {statistics.median(figures['hash_cpu_ms']):.0f} ms "
            f"per hash (all threads); {where}",
        ),
        Row(
            "auth",
            AUTH_VERIFY,
            "forge",
            time_ms=verify_ms,
            notes=f"{verify_spread}; CPU {statistics.median(figures['verify_cpu_ms']):.0f} ms; "
            f"the right password against its stored hash (no rehash); against no hash "
            f"(an unknown user) {unknown_ms:.0f} ms, the same work by design",
        ),
    ]


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def _main(rounds: int) -> None:
    import uvloop

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from runtime._auth.passwords import hash_password, verify_password

    async def run() -> dict[str, Any]:
        figures: dict[str, list[float]] = {
            name: [] for name in ("hash_ms", "hash_cpu_ms", "verify_ms", "verify_cpu_ms")
        }
        figures["unknown_ms"] = []
        stored = await hash_password(PASSWORD)  # warm-up: the thread pool, the first arena
        for _ in range(rounds):
            cpu, began = time.process_time(), time.perf_counter()
            stored = await hash_password(PASSWORD)
            figures["hash_ms"].append((time.perf_counter() - began) * 1000)
            figures["hash_cpu_ms"].append((time.process_time() - cpu) * 1000)

            cpu, began = time.process_time(), time.perf_counter()
            ok, rehashed = await verify_password(PASSWORD, stored)
            figures["verify_ms"].append((time.perf_counter() - began) * 1000)
            figures["verify_cpu_ms"].append((time.process_time() - cpu) * 1000)
            if not ok or rehashed is not None:
                raise RuntimeError(f"verify_password answered {ok}, {rehashed!r}")

            began = time.perf_counter()
            ok, _ = await verify_password(PASSWORD, None)
            figures["unknown_ms"].append((time.perf_counter() - began) * 1000)
            if ok:
                raise RuntimeError("verify_password accepted a password against no hash")
        # $argon2id$v=19$m=65536,t=3,p=4$salt$hash: the parameters the hash was made with.
        version, parameters = stored.split("$")[2:4]
        made = dict(part.split("=", 1) for part in parameters.split(","))
        shown = f"{version}, m={made['m']} KiB, t={made['t']}, p={made['p']}"
        return {**figures, "parameters": shown}

    print(json.dumps(uvloop.run(run())))


if __name__ == "__main__":
    _main(int(sys.argv[1]))
