"""Settings come from the environment, and production mode passes Django's deployment checks."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection

ROOT = Path(__file__).resolve().parents[2]


def run_manage(*args: str, **env: str) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "DATABASE_URL"))}
    environ.update(env)
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=environ, capture_output=True, text=True, timeout=120
    )


def test_deploy_check_reports_nothing_with_a_key_and_tls():
    result = run_manage(
        "check", "--deploy", "--fail-level", "WARNING", DJANGO_SECRET_KEY="k" * 20 + "x9!Q" * 10, DJANGO_SECURE_TLS="1"
    )
    assert result.returncode == 0, result.stderr
    assert "no issues" in result.stdout


def test_deploy_check_without_tls_reports_only_what_needs_a_tls_terminator():
    result = run_manage("check", "--deploy", DJANGO_SECRET_KEY="k" * 20 + "x9!Q" * 10)
    reported = {line.split(")")[0].split("(")[-1] for line in result.stderr.splitlines() if line.startswith("?: (")}
    assert reported == {"security.W004", "security.W008", "security.W012", "security.W016"}


def test_deploy_check_warns_when_the_secret_key_is_not_from_the_environment():
    result = run_manage("check", "--deploy", DJANGO_SECURE_TLS="1")
    assert "prmsite.W001" in result.stderr


def test_debug_is_off_unless_asked_for():
    result = run_manage("shell", "--no-imports", "-c", "from django.conf import settings; print(settings.DEBUG)")
    assert result.stdout.strip() == "False"


def test_a_bad_boolean_is_a_clear_error():
    result = run_manage("check", DJANGO_DEBUG="maybe")
    assert result.returncode != 0
    assert "DJANGO_DEBUG='maybe' is not a boolean" in result.stderr


def test_database_url_switches_to_postgresql():
    result = run_manage(
        "shell",
        "--no-imports",
        "-c",
        "from django.conf import settings; print(settings.DATABASES['default']['ENGINE'])",
        DATABASE_URL="postgres://postgres@127.0.0.1:5432/whatever",
    )
    assert result.stdout.strip() == "django.db.backends.postgresql"


@pytest.mark.skipif("sqlite3" not in settings.DATABASES["default"]["ENGINE"], reason="SQLite only")
def test_sqlite_takes_the_write_lock_up_front_and_waits_when_busy():
    options = settings.DATABASES["default"]["OPTIONS"]
    assert options["transaction_mode"] == "IMMEDIATE"
    assert options["timeout"] >= 5
    assert "journal_mode=WAL" in options["init_command"]


@pytest.mark.django_db
@pytest.mark.skipif("sqlite3" not in settings.DATABASES["default"]["ENGINE"], reason="SQLite only")
def test_sqlite_runs_in_wal_mode():
    with connection.cursor() as cursor:
        cursor.execute("PRAGMA journal_mode")
        assert cursor.fetchone()[0] == "wal"


def test_bootstrap_admin_prints_a_fresh_password_once(tmp_path):
    db = tmp_path / "boot.sqlite3"
    env = {"DATABASE_URL": f"sqlite:///{db}"}
    assert run_manage("migrate", "--noinput", **env).returncode == 0
    first = run_manage("bootstrap_admin", "--url", "http://127.0.0.1:9/admin/", **env)
    assert first.returncode == 0, first.stderr
    assert "Created superuser 'admin' with password: " in first.stdout
    password = first.stdout.split("password: ")[1].split()[0]
    assert len(password) >= 12
    second = run_manage("bootstrap_admin", **env)
    assert password not in second.stdout
    assert "existing superuser (admin)" in second.stdout


def test_env_example_lists_every_variable_the_settings_read():
    root = Path(__file__).resolve().parents[2]
    source = (root / "prmsite" / "settings.py").read_text()
    read = set(
        re.findall(
            r"""(?:environ\.get|environ\[|env_int|env_bool|env_list|env_path|env_paths)\(?\s*["']([A-Z][A-Z0-9_]+)["']""",
            source,
        )
    )
    assert "DATABASE_URL" in read and "PRM_CHECKOUT_TIMEOUT_S" in read  # the pattern finds them
    listed = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]+)=", (root / ".env.example").read_text(), re.MULTILINE))
    assert sorted(read - listed) == []


def test_env_example_copied_as_is_gives_the_documented_defaults(tmp_path):
    values = dict(re.findall(r"^([A-Z][A-Z0-9_]+)=(.*)$", (ROOT / ".env.example").read_text(), re.MULTILINE))
    values["DJANGO_SECRET_KEY_FILE"] = ""  # as copied: empty means the default file
    code = (
        "import django, os; os.environ['DJANGO_SETTINGS_MODULE'] = 'prmsite.settings'; django.setup(); "
        "from django.conf import settings as s; "
        "print(s.SECRET_KEY_FILE.name, s.MEDIA_ROOT.name, s.STATIC_ROOT.name, len(s.PRM_DATASET_DIRS), "
        "s.EXPERIMENT_CONFIG_DIRS, s.DATABASES['default']['ENGINE'].rsplit('.', 1)[-1])"
    )
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "DATABASE_URL", "PRM_"))}
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**environ, **values},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [".secret_key", "media", "staticfiles", "1", "[]", "sqlite3"]
