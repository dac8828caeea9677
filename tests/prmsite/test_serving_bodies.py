"""Request bodies against the production server over real sockets (issue 17, item 3): anonymous bodies are refused
before they are read, so many of them do not grow the server's memory; a stalled body is cut off with 408, its
temporary disk freed; bodies in flight beyond the process's budget get 503 with Retry-After."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import select
import socket
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlparse

import psutil
import pytest
import requests

from tests.factories import make_worker_token
from tests.rollouts.conftest import rollout_body

# 10 MB less one byte: what each of the 300 anonymous connections sent (within the 10 MiB body limit).
ATTACK_BODY = 10_000_000 - 1
MiB = 1024 * 1024


@pytest.fixture
def token(transactional_db, django_user_model) -> str:
    return make_worker_token(django_user_model.objects.create_user("body-sender"))


def server_rss(pid: int) -> int:
    """Resident memory of the server: the supervisor and every process under it, in bytes."""
    root = psutil.Process(pid)
    total = 0
    for process in [root, *root.children(recursive=True)]:
        with contextlib.suppress(psutil.NoSuchProcess):
            total += process.memory_info().rss
    return total


def connect(base: str) -> socket.socket:
    address = urlparse(base)
    return socket.create_connection((address.hostname, address.port), timeout=10)


def request_head(base: str, path: str, *headers: str) -> bytes:
    lines = [f"POST {path} HTTP/1.1", f"Host: {urlparse(base).netloc}", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def push(sock: socket.socket, data: bytes, seconds: float) -> None:
    """Send as much of ``data`` as the server takes within ``seconds`` (it may close the connection instead)."""
    sock.settimeout(seconds)
    # OSError: refused and closed (reset, broken pipe), or the server stopped reading (timeout).
    with contextlib.suppress(OSError):
        sock.sendall(data)


def read_answer(sock: socket.socket, timeout: float = 30) -> bytes:
    """Everything the server sends until it closes the connection (or ``timeout`` passes)."""
    sock.settimeout(timeout)
    answer = b""
    try:
        while chunk := sock.recv(65536):
            answer += chunk
    except (TimeoutError, ConnectionResetError):
        pass
    return answer


def wait_for(condition: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_many_large_anonymous_bodies_do_not_grow_the_servers_memory(server_factory):
    # 300 such connections took the server from 1.2 to 4.2 GB: Django read every body before authentication.
    server = server_factory(WEBSERVER_WORKERS="2").start()
    for _ in range(20):  # each process loads what a request needs before the baseline is taken
        requests.post(f"{server.url}/rollout", json={"x": "y" * 1000}, timeout=30)
    baseline = server_rss(server.process.pid)
    payload = b"x" * (ATTACK_BODY - 1)
    sockets = []
    try:
        for index in range(40):
            sock = connect(server.url)
            sockets.append(sock)
            if index % 4 == 3:  # chunked: no length to refuse it by, it is cut off at 64 KiB
                sock.sendall(request_head(server.url, "/rollout", "Transfer-Encoding: chunked"))
                push(sock, f"{len(payload):x}\r\n".encode() + payload, seconds=3)
                continue
            # Half of the others send an invented token of the right form: it is looked up, and refused.
            credentials = [f"Authorization: Token {secrets.token_hex(32)}"] if index % 2 else []
            head = request_head(
                server.url, "/rollout", "Content-Type: application/json", f"Content-Length: {ATTACK_BODY}", *credentials
            )
            sock.sendall(head)
            push(sock, payload, seconds=3)
        grown = server_rss(server.process.pid) - baseline
        # 40 bodies of 10 MB read into memory would be 400 MB; refused before reading, they cost next to nothing.
        assert grown < 64 * MiB, f"the server grew by {grown / MiB:.0f} MiB"
    finally:
        for sock in sockets:
            sock.close()
    answer = read_after_refusal(server.url, ATTACK_BODY)
    assert answer.startswith(b"HTTP/1.1 401") and b'"not_authenticated"' in answer


def read_after_refusal(base: str, length: int) -> bytes:
    with connect(base) as sock:
        sock.sendall(request_head(base, "/rollout", "Content-Type: application/json", f"Content-Length: {length}"))
        return read_answer(sock)


def test_an_anonymous_login_form_still_works(server_factory, django_user_model):
    django_user_model.objects.create_user("staff", password="a-long-test-password", is_staff=True)
    server = server_factory().start()
    session = requests.Session()
    page = session.get(f"{server.url}/admin/login/", timeout=30)
    assert page.status_code == 200
    answer = session.post(
        f"{server.url}/admin/login/?next=/admin/",
        data={
            "username": "staff",
            "password": "a-long-test-password",
            "csrfmiddlewaretoken": session.cookies["csrftoken"],
            "next": "/admin/",
        },
        headers={"Referer": f"{server.url}/admin/login/"},
        allow_redirects=False,
        timeout=30,
    )
    assert answer.status_code == 302 and answer.headers["Location"] == "/admin/"


def server_temp_files(pid: int, folder: Path) -> list[str]:
    """Files under ``folder`` that the server's processes hold open (deleted ones included)."""
    root = psutil.Process(pid)
    held = []
    for process in [root, *root.children(recursive=True)]:
        fd_dir = Path(f"/proc/{process.pid}/fd")
        try:
            links = [os.readlink(fd) for fd in fd_dir.iterdir()]
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        held += [link for link in links if link.startswith(str(folder))]
    return held


def test_a_stalled_body_is_cut_off_with_408_and_its_temporary_disk_freed(server_factory, token, tmp_path):
    # Four unfinished adapter uploads held 1.6 GB of temporary disk for as long as their sockets stayed open.
    spool = tmp_path / "server-tmp"
    spool.mkdir()
    server = server_factory(
        TMPDIR=str(spool), WEBSERVER_BODY_TIMEOUT_S="3", WEBSERVER_BODY_MIN_BYTES_PER_S=str(10**9)
    ).start()
    with connect(server.url) as sock:
        sock.sendall(
            request_head(
                server.url,
                "/prm_adapter",
                f"Authorization: Token {token}",
                "Content-Type: multipart/form-data; boundary=b",
                f"Content-Length: {30 * MiB}",
            )
        )
        push(sock, b"x" * (12 * MiB), seconds=10)  # past the 10 MiB Django keeps in memory: it spools to disk
        wait_for(lambda: server_temp_files(server.process.pid, spool), timeout=120, what="the spooled body")
        answer = read_answer(sock, timeout=60)  # then nothing more is sent
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    body = json.loads(answer.split(b"\r\n\r\n", 1)[1])
    assert body["code"] == "request_timeout"
    assert b"connection: close" in answer.lower()  # and the server closed it: read_answer saw the end
    wait_for(lambda: not server_temp_files(server.process.pid, spool), timeout=120, what="the temporary file to go")


def test_an_unfinished_upload_whose_connection_goes_holds_no_temporary_disk(server_factory, token, tmp_path):
    spool = tmp_path / "server-tmp"
    spool.mkdir()
    server = server_factory(TMPDIR=str(spool)).start()
    with connect(server.url) as sock:
        sock.sendall(
            request_head(
                server.url,
                "/prm_adapter",
                f"Authorization: Token {token}",
                "Content-Type: multipart/form-data; boundary=b",
                f"Content-Length: {30 * MiB}",
            )
        )
        push(sock, b"x" * (12 * MiB), seconds=10)
        wait_for(lambda: server_temp_files(server.process.pid, spool), timeout=120, what="the spooled body")
    # The client has gone: Django sees the disconnect and closes (deletes) its spooled body.
    wait_for(lambda: not server_temp_files(server.process.pid, spool), timeout=120, what="the temporary file to go")


def test_a_trickling_body_is_cut_off(server_factory, token):
    server = server_factory(WEBSERVER_BODY_TIMEOUT_S="2", WEBSERVER_BODY_MIN_BYTES_PER_S=str(10**9)).start()
    with connect(server.url) as sock:
        sock.sendall(
            request_head(
                server.url, "/rollout", f"Authorization: Token {token}", "Content-Length: 5000", "Content-Type: a/b"
            )
        )
        sock.settimeout(1)
        answer = b""
        deadline = time.monotonic() + 60
        while not answer and time.monotonic() < deadline:  # a byte now and then, never the whole body
            try:
                sock.sendall(b"x")
                answer = sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                break
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]


def test_bodies_beyond_the_processs_budget_get_503_with_retry_after(server_factory, token):
    server = server_factory(WEBSERVER_WORKERS="1", WEBSERVER_BODY_BUDGET_BYTES=str(2 * MiB)).start()
    headers = {"Authorization": f"Token {token}"}
    big_rollout = {**rollout_body(), "padding": "x" * (MiB // 2)}

    def post_big() -> requests.Response:
        return requests.post(f"{server.url}/rollout", json=big_rollout, headers=headers, timeout=30)

    def open_holder() -> socket.socket:
        """A body of 1.8 MiB that never finishes: it holds most of the budget."""
        sock = connect(server.url)
        sock.sendall(
            request_head(
                server.url,
                "/rollout",
                f"Authorization: Token {token}",
                "Content-Type: application/json",
                f"Content-Length: {int(1.8 * MiB)}",
            )
            + b'{"'
        )
        return sock

    holder = open_holder()
    try:
        deadline = time.monotonic() + 60
        while (refused := post_big()).status_code != 503:
            # A big post that came first may have taken the budget the holder needed: then it was refused; again.
            if select.select([holder], [], [], 0)[0]:
                holder.close()
                holder = open_holder()
            assert time.monotonic() < deadline, "no 503"
        assert refused.headers["Retry-After"] == "5" and refused.json()["code"] == "busy"
        small = requests.post(f"{server.url}/rollout", json=rollout_body(), headers=headers, timeout=30)
        assert small.status_code == 200  # small bodies still fit
    finally:
        holder.close()
    # The budget comes back when the body's connection goes.
    wait_for(lambda: post_big().status_code == 200, timeout=120, what="the budget to come back")
