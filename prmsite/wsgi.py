"""Entry points of the web server.

``WEBSERVER_PORT=25565 python -m prmsite.wsgi`` starts the production server on that port, as the specification
shows (the module keeps its name; the server it starts is ASGI): uvicorn serving ``prmsite.asgi:application`` with
``WEBSERVER_WORKERS`` processes. An asyncio server holds no thread for an idle, slow or long-polling connection, so
neither 100 workers long-polling ``GET /rollout?wait=60`` nor 100 sockets trickling their headers in keep anyone else
waiting (``bench/serving_check.py`` proves it); see ``prmsite.asgi`` for the long-poll and body-size layers.

``application`` is the plain WSGI application, for WSGI servers and tools that want one; under WSGI a long-poll holds
its thread for the whole wait.
"""

from __future__ import annotations

import os
import socket

import uvicorn
from django.core.wsgi import get_wsgi_application
from uvicorn.supervisors import Multiprocess

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "prmsite.settings")

application = get_wsgi_application()

# Request line and headers may not exceed this (h11 answers 400 beyond); GET /process_reward_label?keys=… with its
# maximum of ids fits well within it.
MAX_REQUEST_HEAD_BYTES = 64 * 1024


def server_options() -> dict:
    """uvicorn's options, from the environment (every variable is in .env.example)."""
    cpu = os.cpu_count() or 1
    return {
        # All interfaces by default: rollout workers on other machines are the point of this server.
        "host": os.environ.get("WEBSERVER_HOST", "").strip() or "0.0.0.0",  # noqa: S104
        "port": int(os.environ.get("WEBSERVER_PORT", "").strip() or 25565),
        "workers": int(os.environ.get("WEBSERVER_WORKERS", "").strip() or 2 * cpu + 1),
        "http": "h11",
        "h11_max_incomplete_event_size": MAX_REQUEST_HEAD_BYTES,
        "lifespan": "off",
        "timeout_keep_alive": int(os.environ.get("WEBSERVER_KEEPALIVE_S", "").strip() or 5),
        "timeout_graceful_shutdown": int(os.environ.get("WEBSERVER_GRACEFUL_S", "").strip() or 30),
        "access_log": os.environ.get("WEBSERVER_ACCESS_LOG", "1").strip() not in {"0", "false", "no", "off"},
        "proxy_headers": False,
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
    config = ServerConfig("prmsite.asgi:application", **server_options())
    if config.workers > 1:
        Multiprocess(config, sockets=[config.bind_socket()]).run()
    else:
        uvicorn.Server(config).run()


if __name__ == "__main__":
    serve()
