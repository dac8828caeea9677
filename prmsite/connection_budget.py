"""The PostgreSQL connection budget of the production server, checked once when it starts (``prmsite.wsgi.serve``).

Every server process keeps a pool of up to ``DATABASE_POOL_MAX_SIZE`` connections, and under load (hundreds of
long-polls, a burst of posts) each pool grows to its maximum and stays there. ``WEBSERVER_WORKERS`` processes times
that must leave room within PostgreSQL's ``max_connections`` for what else connects: ``manage.py`` commands,
importers, a second server, ``psql``. With the old defaults (20 x 5 = 100 against PostgreSQL's default 100, of which
3 are kept for superusers) the pools took every connection and commands failed with "too many clients".

At start the server reads ``max_connections``, the connections kept for superusers (and, from PostgreSQL 16, by
``reserved_connections``) and those already in use, keeps ``DATABASE_CONNECTION_RESERVE`` of the rest free, and:

- starts as configured when ``processes x DATABASE_POOL_MAX_SIZE`` fits;
- otherwise sizes every process's pool down to what fits, saying so in one line;
- refuses to start, with one line, when fewer than ``POOL_MIN_SIZE`` connections per process would remain.

Sizing: ``WEBSERVER_WORKERS x DATABASE_POOL_MAX_SIZE + DATABASE_CONNECTION_RESERVE + other clients <=
max_connections - superuser_reserved_connections``. A pool needs about as many connections as requests one process
runs at once (long-poll attempts take at most ``PRM_LONG_POLL_CONCURRENCY`` of them).
"""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings

# Fewest pooled connections a server process works with: one for a long-poll attempt, one for anything else.
POOL_MIN_SIZE = 2
# Seconds the check waits for PostgreSQL before it gives up and starts the server as configured.
CONNECT_TIMEOUT_S = 5

POOL_SIZED_DOWN = (
    "DATABASE_POOL_MAX_SIZE={pool_max} x {processes} server processes = {need} connections does not fit: PostgreSQL "
    "allows {allowed} (max_connections={max_connections} less {kept} kept for superusers), {in_use} are in use, and "
    "DATABASE_CONNECTION_RESERVE={reserve} stay free for commands; each process's pool is sized down to {sized}."
)
POOL_REFUSED = (
    "Not starting: {processes} server processes need at least {minimum} PostgreSQL connections each, but "
    "max_connections={max_connections} leaves {free} ({kept} kept for superusers, {in_use} in use) and "
    "DATABASE_CONNECTION_RESERVE={reserve} stay free for commands. Raise max_connections, or lower WEBSERVER_WORKERS "
    "or DATABASE_CONNECTION_RESERVE."
)
BUDGET_UNCHECKED = (
    "Could not check PostgreSQL's connection budget ({error}); starting with DATABASE_POOL_MAX_SIZE={pool_max}."
)


@dataclass(frozen=True)
class ConnectionFacts:
    """What PostgreSQL says about its connections."""

    max_connections: int
    kept: int  # superuser_reserved_connections (+ reserved_connections from PostgreSQL 16)
    in_use: int  # client connections open now, the check's own not counted


@dataclass(frozen=True)
class PoolDecision:
    """The pool size every server process uses; ``message`` is the one line to print (None: nothing to say);
    ``refused``: the server must not start."""

    pool_size: int
    message: str | None = None
    refused: bool = False


def pool_size_decide(*, facts: ConnectionFacts, processes: int, pool_max: int, reserve: int) -> PoolDecision:
    """The pool size for ``processes`` server processes that leaves ``reserve`` connections free. Never larger than
    ``pool_max``; smaller (with a message) when that does not fit; refused when not even ``POOL_MIN_SIZE`` fits."""
    allowed = facts.max_connections - facts.kept
    free = allowed - facts.in_use
    need = processes * pool_max
    if need + reserve <= free:
        return PoolDecision(pool_size=pool_max)
    sized = (free - reserve) // max(processes, 1)
    values = {
        "pool_max": pool_max,
        "processes": processes,
        "need": need,
        "allowed": allowed,
        "max_connections": facts.max_connections,
        "kept": facts.kept,
        "in_use": facts.in_use,
        "free": max(free, 0),
        "reserve": reserve,
        "sized": sized,
        "minimum": POOL_MIN_SIZE,
    }
    if sized < POOL_MIN_SIZE:
        return PoolDecision(pool_size=0, message=POOL_REFUSED.format(**values), refused=True)
    return PoolDecision(pool_size=sized, message=POOL_SIZED_DOWN.format(**values))


def connection_facts() -> ConnectionFacts:
    """Ask PostgreSQL (the default database, on a connection of its own outside the pool) about its connections."""
    import psycopg  # noqa: PLC0415 (deferred: psycopg is only installed where PostgreSQL is used)
    from django.db import connections  # noqa: PLC0415 (deferred: the supervisor imports this module before Django)

    params = connections["default"].get_connection_params()
    params["connect_timeout"] = CONNECT_TIMEOUT_S
    with psycopg.connect(**params, autocommit=True) as conn:
        max_connections = int(conn.execute("SHOW max_connections").fetchone()[0])
        kept = int(conn.execute("SHOW superuser_reserved_connections").fetchone()[0])
        row = conn.execute("SELECT setting FROM pg_settings WHERE name = 'reserved_connections'").fetchone()
        kept += int(row[0]) if row else 0
        in_use = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()"
        ).fetchone()[0]
    return ConnectionFacts(max_connections=max_connections, kept=kept, in_use=int(in_use))


def pool_budget_check(*, processes: int) -> PoolDecision | None:
    """The decision for this server's database: None when it is not PostgreSQL with a pool. When PostgreSQL cannot be
    asked, the configured size stands (the server answers 503 until the database is back) and the message says so.
    The decision is applied to this process's settings; ``prmsite.wsgi.serve`` passes it on to worker processes."""
    database = settings.DATABASES["default"]
    pool = database.get("OPTIONS", {}).get("pool")
    if database["ENGINE"] != "django.db.backends.postgresql" or not isinstance(pool, dict):
        return None
    pool_max = int(pool["max_size"])
    try:
        facts = connection_facts()
    except Exception as exc:  # any failure to ask leaves the configuration as it is
        first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return PoolDecision(pool_size=pool_max, message=BUDGET_UNCHECKED.format(error=first_line, pool_max=pool_max))
    decision = pool_size_decide(
        facts=facts, processes=processes, pool_max=pool_max, reserve=settings.DATABASE_CONNECTION_RESERVE
    )
    if not decision.refused:
        pool["max_size"] = decision.pool_size
        pool["min_size"] = min(pool.get("min_size", 1), decision.pool_size)
    return decision
