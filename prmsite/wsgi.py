"""Entry points of the web server.

``WEBSERVER_PORT=25565 python -m prmsite.wsgi`` starts the production server on that port, as the specification
shows (the module keeps its name; the server it starts is ASGI): uvicorn serving ``prmsite.asgi:application`` with
``WEBSERVER_WORKERS`` processes. An asyncio server holds no thread for an idle, slow or long-polling connection, so
neither 100 workers long-polling ``GET /rollout?wait=60`` nor 100 sockets trickling their headers in keep anyone else
waiting (``bench/serving_check.py`` proves it); see ``prmsite.asgi`` for the long-poll and body layers.

Worker processes answer the supervisor's health check before they import Django. uvicorn starts them with
multiprocessing's ``spawn``: a fresh interpreter that first imports this module (the main module) and unpickles the
configuration, and only then starts the thread that answers the supervisor's pings. This module therefore imports no
Django at its top: ``application`` is made on first use, and Django is imported by each worker process when it loads
``prmsite.asgi``, while its ping thread already answers. Importing Django takes seconds on a loaded machine (9-10 s
at a load average of 27); when that happened before the ping thread started, the supervisor killed the process after
its 5 s health check and started another, which met the same load: a restart storm. The health check's timeout is
``WEBSERVER_HEALTHCHECK_S`` (30 s), for a process that stops answering for another reason.

``application`` is the plain WSGI application, for WSGI servers and tools that want one; under WSGI a long-poll holds
its thread for the whole wait.
"""

from __future__ import annotations

import os
import socket
import sys
from typing import Any

import uvicorn
from uvicorn.supervisors import Multiprocess

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "prmsite.settings")

# Request line and headers may not exceed this (h11 answers 400 beyond); GET /process_reward_label?keys=… with its
# maximum of ids fits well within it.
MAX_REQUEST_HEAD_BYTES = 64 * 1024
# Seconds a worker process may leave the supervisor's ping unanswered before it is killed and replaced (uvicorn's
# default is 5). Worker processes answer from a thread of their own, so only a process stuck in native code holding
# the GIL (or a machine too loaded to schedule it for this long) misses it.
HEALTHCHECK_S_DEFAULT = 30


def __getattr__(name: str) -> Any:
    """``application``, the WSGI application, made when it is first asked for (PEP 562)."""
    if name != "application":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    # Deferred: worker processes import this module before they can answer the supervisor's health check, and
    # importing Django there is what the supervisor used to kill them for (see the module docstring).
    from django.core.wsgi import get_wsgi_application  # noqa: PLC0415 (deferred: see the comment above)

    application = get_wsgi_application()
    globals()["application"] = application
    return application


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise SystemExit(f"{name}={raw!r} is not an integer") from None


def server_options() -> dict:
    """uvicorn's options, from the environment (every variable is in .env.example)."""
    cpu = os.cpu_count() or 1
    forwarded_allow = os.environ.get("WEBSERVER_FORWARDED_ALLOW_IPS", "").strip()
    return {
        # All interfaces by default: rollout workers on other machines are the point of this server.
        "host": os.environ.get("WEBSERVER_HOST", "").strip() or "0.0.0.0",  # noqa: S104
        "port": _env_int("WEBSERVER_PORT", 25565),
        "workers": _env_int("WEBSERVER_WORKERS", 2 * cpu + 1),
        "http": "h11",
        "h11_max_incomplete_event_size": MAX_REQUEST_HEAD_BYTES,
        "lifespan": "off",
        "timeout_keep_alive": _env_int("WEBSERVER_KEEPALIVE_S", 5),
        "timeout_graceful_shutdown": _env_int("WEBSERVER_GRACEFUL_S", 30),
        "timeout_worker_healthcheck": max(1, _env_int("WEBSERVER_HEALTHCHECK_S", HEALTHCHECK_S_DEFAULT)),
        "access_log": os.environ.get("WEBSERVER_ACCESS_LOG", "1").strip() not in {"0", "false", "no", "off"},
        # Behind a load balancer (docs/deployment.md), the client's address comes from X-Forwarded-For, believed only
        # from the balancer's own addresses: logs and login lockouts (django-axes) then see the real client.
        "proxy_headers": bool(forwarded_allow),
        "forwarded_allow_ips": forwarded_allow or None,
        "server_header": False,
    }


class ServerConfig(uvicorn.Config):
    """uvicorn's configuration, with TCP_NODELAY on every connection of every worker process.

    uvicorn binds its listening socket with proto 0, and asyncio sets TCP_NODELAY only on sockets whose proto is TCP:
    every keep-alive answer from a worker process then waited ~40 ms for the client's delayed ACK (Nagle). Accepted
    sockets inherit the listening socket's proto, so declaring it here gives them all TCP_NODELAY. (Module level:
    the configuration is pickled into the worker processes.)
    """

    def bind_socket(self) -> socket.socket:
        sock = super().bind_socket()
        if sock.family in {socket.AF_INET, socket.AF_INET6}:
            return socket.socket(sock.family, sock.type, socket.IPPROTO_TCP, fileno=sock.detach())
        return sock


def serve() -> None:
    """Check the database connection budget, then run uvicorn (a supervisor and its worker processes when
    ``WEBSERVER_WORKERS`` > 1). Exits with one line on stderr when the budget cannot be met."""
    options = server_options()
    # Deferred: the budget check needs Django's settings, which this module does not import at its top (see the
    # module docstring); the supervisor imports them once, before any worker process starts.
    from prmsite.connection_budget import pool_budget_check  # noqa: PLC0415 (deferred: see the comment above)

    decision = pool_budget_check(processes=options["workers"])
    if decision is not None and decision.message:
        print(decision.message, file=sys.stderr, flush=True)
        if decision.refused:
            raise SystemExit(1)
        # Worker processes read their settings from the environment they inherit.
        os.environ["DATABASE_POOL_MAX_SIZE"] = str(decision.pool_size)
    config = ServerConfig("prmsite.asgi:application", **options)
    if config.workers > 1:
        Multiprocess(config, sockets=[config.bind_socket()]).run()
    else:
        uvicorn.Server(config).run()


if __name__ == "__main__":
    serve()
