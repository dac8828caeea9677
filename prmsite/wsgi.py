"""WSGI entry point.

``gunicorn prmsite.wsgi`` serves ``application``. ``WEBSERVER_PORT=25565 python -m prmsite.wsgi`` starts the same
production server (gunicorn) on that port, as the specification shows; ``WEBSERVER_HOST`` (default 0.0.0.0),
``WEBSERVER_WORKERS`` and ``WEBSERVER_THREADS`` tune it.
"""

from __future__ import annotations

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "prmsite.settings")

application = get_wsgi_application()


def serve() -> None:
    from gunicorn.app.base import BaseApplication

    class PrmsiteServer(BaseApplication):
        def load_config(self) -> None:
            cpu = os.cpu_count() or 1
            # All interfaces by default: rollout workers on other machines are the point of this server.
            host = os.environ.get("WEBSERVER_HOST", "0.0.0.0")  # noqa: S104
            options = {
                "bind": f"{host}:{int(os.environ.get('WEBSERVER_PORT', '25565'))}",
                "workers": int(os.environ.get("WEBSERVER_WORKERS", str(2 * cpu + 1))),
                "worker_class": "gthread",
                "threads": int(os.environ.get("WEBSERVER_THREADS", "4")),
                # GET /rollout may long-poll (wait=…); give it room beyond the longest allowed wait.
                "timeout": int(os.environ.get("WEBSERVER_TIMEOUT_S", "120")),
                "accesslog": "-",
            }
            for key, value in options.items():
                self.cfg.set(key, value)

        def load(self):
            return application

    PrmsiteServer().run()


if __name__ == "__main__":
    serve()
