"""Starting servers for tests: free ports, and the test database's address for a server in a subprocess."""

from __future__ import annotations

import socket
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def database_url_for_subprocess() -> str:
    """DATABASE_URL of the database this test run uses, for a server started in a subprocess."""
    from django.db import connection

    settings = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{settings['NAME']}"
    user = settings.get("USER") or "postgres"
    password = f":{settings['PASSWORD']}" if settings.get("PASSWORD") else ""
    host = f"{settings.get('HOST') or '127.0.0.1'}:{settings.get('PORT') or 5432}"
    return f"postgres://{user}{password}@{host}/{settings['NAME']}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
