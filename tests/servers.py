"""Starting servers for tests: free ports, and the test database's address for a server in a subprocess."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests
from django.db import connection

PROJECT_ROOT = Path(__file__).resolve().parents[1]

# Generous deadlines for a server in a subprocess, so that a machine whose cores are busy with other work passes: they
# bound a wait, they measure nothing.
SERVER_START_TIMEOUT_S = 300
SERVER_GONE_TIMEOUT_S = 60


def database_url_for_subprocess() -> str:
    """DATABASE_URL of the database this test run uses, for a server started in a subprocess."""
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


class ServerProcess:
    """``python -m prmsite.wsgi`` on the test database, which a test can kill -9 and start again."""

    def __init__(self, tmp_path: Path, *, wrap: list[str] | None = None, **env: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tmp_path / f"server-{self.port}.log"
        self.wrap = wrap or []
        self.env = {
            **os.environ,
            "DATABASE_URL": database_url_for_subprocess(),
            "WEBSERVER_HOST": "127.0.0.1",
            "WEBSERVER_PORT": str(self.port),
            "WEBSERVER_WORKERS": "2",
            "WEBSERVER_ACCESS_LOG": "0",
            "DJANGO_LOG_LEVEL": "WARNING",
            **env,
        }
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = SERVER_START_TIMEOUT_S) -> ServerProcess:
        with self.log.open("a") as log:
            self.process = subprocess.Popen(
                [*self.wrap, sys.executable, "-m", "prmsite.wsgi"],
                cwd=PROJECT_ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while True:
            try:
                if requests.get(f"{self.url}/rollout", timeout=10).status_code == 401:
                    return self
            except requests.RequestException:  # not listening yet, or too busy to answer in time
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.kill9()
                raise RuntimeError(f"the server did not start: {self.log.read_text()[-3000:]}")
            time.sleep(0.1)

    def kill9(self) -> None:
        """SIGKILL to the whole process group: the supervisor and every worker process die at once."""
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()
        self.process = None
        # The kernel frees the port once the processes are gone; wait until nothing answers on it.
        deadline = time.monotonic() + SERVER_GONE_TIMEOUT_S
        while time.monotonic() < deadline:
            try:
                requests.get(f"{self.url}/rollout", timeout=0.5)
            except requests.ConnectionError:
                return
            except requests.Timeout:  # something still holds the port
                pass
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill9()
        self.process = None


class S3Server:
    """moto's S3-compatible server (``python -m moto.server``) on a free 127.0.0.1 port: the object store that
    replicas share, for the tests of ``PRM_ADAPTER_STORAGE=s3``. It keeps its objects in memory until it stops."""

    ACCESS_KEY = "prmsite-test"
    SECRET_KEY = "prmsite-test-secret"
    REGION = "us-east-1"

    def __init__(self, tmp_path: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tmp_path / f"s3-{self.port}.log"
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = SERVER_START_TIMEOUT_S) -> S3Server:
        with self.log.open("a") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                cwd=PROJECT_ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while True:
            try:
                if requests.get(f"{self.url}/moto-api/", timeout=10).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"moto did not start: {self.log.read_text()[-3000:]}")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        self.process = None

    def client(self, endpoint_url: str | None = None):
        """A boto3 S3 client of this server, to look at buckets behind the application's back."""
        import boto3  # deferred: only the object-store tests need boto3

        return boto3.client(
            "s3",
            endpoint_url=endpoint_url or self.url,
            region_name=self.REGION,
            aws_access_key_id=self.ACCESS_KEY,
            aws_secret_access_key=self.SECRET_KEY,
        )

    def env(self, bucket: str, endpoint_url: str | None = None) -> dict[str, str]:
        """The settings (environment) of a server storing its adapters in ``bucket`` here."""
        return {
            "PRM_ADAPTER_STORAGE": "s3",
            "AWS_STORAGE_BUCKET_NAME": bucket,
            "AWS_S3_ENDPOINT_URL": endpoint_url or self.url,
            "AWS_S3_REGION_NAME": self.REGION,
            "AWS_S3_ACCESS_KEY_ID": self.ACCESS_KEY,
            "AWS_S3_SECRET_ACCESS_KEY": self.SECRET_KEY,
        }

    def storages(self, bucket: str, endpoint_url: str | None = None) -> dict:
        """``settings.STORAGES`` as ``prmsite/settings.py`` makes it from ``env(bucket)``."""
        return {
            "default": {
                "BACKEND": "storages.backends.s3.S3Storage",
                "OPTIONS": {
                    "bucket_name": bucket,
                    "endpoint_url": endpoint_url or self.url,
                    "region_name": self.REGION,
                    "access_key": self.ACCESS_KEY,
                    "secret_key": self.SECRET_KEY,
                    "file_overwrite": False,
                    "default_acl": None,
                },
            },
            "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
        }
