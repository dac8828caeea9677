"""Settings for prmsite, read entirely from the environment (``.env`` in the project folder is loaded first).

Every variable is listed, with its default, in ``.env.example``.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from datetime import timedelta
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured
from dotenv import load_dotenv

BASE_DIR = Path(__file__).resolve().parent.parent

# Variables already in the environment win over the file, so a shell or CI can always override it.
load_dotenv(BASE_DIR / ".env", override=False)


def env_bool(name: str, default: bool = False) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off"}:
        return False
    raise ImproperlyConfigured(f"{name}={raw!r} is not a boolean (use 1/0, true/false, yes/no or on/off)")


def env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name}={raw!r} is not an integer") from exc


def env_list(name: str, default: str) -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


def env_path(name: str, default: Path) -> Path:
    """A path from the environment; unset or empty (as copied from .env.example) means ``default``."""
    raw = os.environ.get(name, "").strip()
    return Path(raw).expanduser() if raw else default


def env_paths(name: str, default: list[Path]) -> list[str]:
    """Folders separated by ':' (like PATH); unset or empty means ``default``."""
    raw = os.environ.get(name, "").strip()
    return [p for p in raw.split(os.pathsep) if p.strip()] if raw else [str(p) for p in default]


DEBUG = env_bool("DJANGO_DEBUG", False)

SECRET_KEY_FILE = env_path("DJANGO_SECRET_KEY_FILE", BASE_DIR / ".secret_key")


def _secret_key() -> str:
    """The key from DJANGO_SECRET_KEY, else one generated once on this machine and kept in a git-ignored file.

    Nothing is hard-coded; ``manage.py check --deploy`` warns (prmsite.W001) when the generated key is in use, since a
    production deployment should pass its own key through the environment.
    """
    key = os.environ.get("DJANGO_SECRET_KEY", "").strip()
    if key:
        return key
    if SECRET_KEY_FILE.exists():
        return SECRET_KEY_FILE.read_text().strip()
    key = secrets.token_urlsafe(64)
    SECRET_KEY_FILE.touch(mode=0o600)
    SECRET_KEY_FILE.write_text(key)
    return key


SECRET_KEY = _secret_key()
SECRET_KEY_FROM_ENV = bool(os.environ.get("DJANGO_SECRET_KEY", "").strip())

ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]")
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS", "")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "knox",
    "axes",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "simple_history",
    "prmsite",
    "forests",
    "rollouts",
    "adapters",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "prmsite.middleware.RejectNulMiddleware",
    "prmsite.middleware.DatabaseUnavailableMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    # Who made a change that keeps its history (schemes, gold items, adjudications): the request's user.
    "simple_history.middleware.HistoryRequestMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "csp.middleware.CSPMiddleware",
    # Last, as django-axes requires: it answers a locked-out login attempt.
    "axes.middleware.AxesMiddleware",
]

# Logins (the admin's and the labellers') go through django-axes first: after AXES_FAILURE_LIMIT failed attempts for
# one username from one address, that pair is locked out for ADMIN_LOGIN_COOLOFF_MIN minutes (429), even with the
# right password. Behind a load balancer, REMOTE_ADDR is the client's when WEBSERVER_FORWARDED_ALLOW_IPS names it.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = env_int("ADMIN_LOGIN_FAILURE_LIMIT", 5)
AXES_COOLOFF_TIME = timedelta(minutes=env_int("ADMIN_LOGIN_COOLOFF_MIN", 15))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_VERBOSE = False

ROOT_URLCONF = "prmsite.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "prmsite" / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

WSGI_APPLICATION = "prmsite.wsgi.application"

# --- Database -------------------------------------------------------------------------------------------------------
# Embedded default: a SQLite file in the project folder. DATABASE_URL=postgres://… switches to PostgreSQL.
DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("DATABASE_URL", "").strip() or f"sqlite:///{BASE_DIR / 'db.sqlite3'}",
        conn_max_age=env_int("DATABASE_CONN_MAX_AGE", 60),
        conn_health_checks=True,
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql" and env_int("DATABASE_POOL_MAX_SIZE", 20) > 0:
    # The ASGI server runs each request in a thread of its own, so a connection kept per thread (CONN_MAX_AGE) would
    # be opened anew for every request: share a pool per process instead (psycopg_pool; Django requires
    # CONN_MAX_AGE=0 with it). DATABASE_POOL_MAX_SIZE=0 turns it off.
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    # With a pool, Django has psycopg_pool check each connection (an empty query) when it hands it out, so after the
    # database restarts or drops its sessions no request gets a dead connection: the server recovers at once, not
    # with one 503 per stale connection.
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
    DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
        "min_size": 1,
        "max_size": env_int("DATABASE_POOL_MAX_SIZE", 20),
        "timeout": env_int("DATABASE_POOL_TIMEOUT_S", 30),
    }
# Behind PgBouncer in transaction mode (several replicas, more connections than max_connections allows), a cursor
# cannot outlive its transaction: DATABASE_DISABLE_SERVER_SIDE_CURSORS=1 makes .iterator() read through a client-side
# cursor (the result is held in memory by psycopg while it is iterated; docs/deployment.md).
DATABASES["default"]["DISABLE_SERVER_SIDE_CURSORS"] = env_bool("DATABASE_DISABLE_SERVER_SIDE_CURSORS", False)
# PostgreSQL connections the production server leaves free for manage.py commands and other clients: at start it
# sizes every process's pool down (or refuses to start) so that WEBSERVER_WORKERS x DATABASE_POOL_MAX_SIZE leaves
# this many of max_connections unused (prmsite/connection_budget.py).
DATABASE_CONNECTION_RESERVE = env_int("DATABASE_CONNECTION_RESERVE", 10)
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Django's backend, with write transactions queued in the kernel (a flock beside the database) rather than on
    # SQLite's busy handler, which sleeps and retries and so starves waiters under contention (prmsite/db/sqlite3).
    DATABASES["default"]["ENGINE"] = "prmsite.db.sqlite3"
    # Connections are kept (DATABASE_CONN_MAX_AGE): the production server runs requests in threads it keeps
    # (prmsite.asgi.RequestThreads), so a request finds its thread's connection open instead of opening a new one and
    # closing it after (with WAL, the last connection's close also checkpoints the log).
    DATABASES["default"]["OPTIONS"] = {
        # Take the write lock when a transaction starts, so two writers queue instead of one of them failing with
        # "database is locked" when it upgrades a read lock half-way through.
        "transaction_mode": "IMMEDIATE",
        "write_queue": env_bool("SQLITE_WRITE_QUEUE", True),
        "timeout": env_int("SQLITE_BUSY_TIMEOUT_S", 30),
        "init_command": (
            "PRAGMA journal_mode=WAL;"
            "PRAGMA synchronous=NORMAL;"
            f"PRAGMA busy_timeout={env_int('SQLITE_BUSY_TIMEOUT_S', 30) * 1000};"
        ),
    }
    # A file, not ":memory:", so live-server tests see the same data from every thread and process.
    DATABASES["default"]["TEST"] = {"NAME": str(BASE_DIR / ".test-db.sqlite3")}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = env_path("DJANGO_STATIC_ROOT", BASE_DIR / "staticfiles")
MEDIA_URL = "media/"
MEDIA_ROOT = env_path("DJANGO_MEDIA_ROOT", BASE_DIR / "media")
# Adapter zips go through the default storage. PRM_ADAPTER_STORAGE=file (the default): files under MEDIA_ROOT, which
# several replicas share when it is one shared folder (NFS, CephFS, …). PRM_ADAPTER_STORAGE=s3: a bucket of an
# S3-compatible object store (AWS S3, MinIO, Ceph RGW, …) through django-storages, under the names it gives its
# settings; credentials from AWS_S3_ACCESS_KEY_ID / AWS_S3_SECRET_ACCESS_KEY, else boto3's own chain (AWS_ACCESS_KEY_ID,
# ~/.aws, an instance role). Every replica must name the same storage (docs/deployment.md).
PRM_ADAPTER_STORAGE = os.environ.get("PRM_ADAPTER_STORAGE", "").strip().lower() or "file"
if PRM_ADAPTER_STORAGE == "file":
    _DEFAULT_STORAGE: dict = {"BACKEND": "django.core.files.storage.FileSystemStorage"}
elif PRM_ADAPTER_STORAGE == "s3":
    if not os.environ.get("AWS_STORAGE_BUCKET_NAME", "").strip():
        raise ImproperlyConfigured("PRM_ADAPTER_STORAGE=s3 needs AWS_STORAGE_BUCKET_NAME (the bucket adapters go to)")
    _DEFAULT_STORAGE = {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": os.environ["AWS_STORAGE_BUCKET_NAME"].strip(),
            # None (unset or empty): AWS itself; set it for any other S3-compatible server.
            "endpoint_url": os.environ.get("AWS_S3_ENDPOINT_URL", "").strip() or None,
            "region_name": os.environ.get("AWS_S3_REGION_NAME", "").strip() or None,
            "access_key": os.environ.get("AWS_S3_ACCESS_KEY_ID", "").strip() or None,
            "secret_key": os.environ.get("AWS_S3_SECRET_ACCESS_KEY", "").strip() or None,
            "location": os.environ.get("AWS_LOCATION", "").strip(),  # a key prefix, to share a bucket
            "addressing_style": os.environ.get("AWS_S3_ADDRESSING_STYLE", "").strip() or None,
            # Never replace a stored object: two adapters whose names collide get two keys, as in a folder, so
            # removing one (an upload that failed after its bytes were stored) can never remove the other.
            "file_overwrite": False,
            # Adapters are served through the API, with its authentication: the objects stay private.
            "default_acl": None,
            "querystring_auth": True,
        },
    }
else:
    raise ImproperlyConfigured(f"PRM_ADAPTER_STORAGE={PRM_ADAPTER_STORAGE!r} is neither 'file' nor 's3'")
STORAGES = {
    "default": _DEFAULT_STORAGE,
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
# whitenoise serves the admin's and the API's static files from the apps themselves, so neither the production server
# nor a fresh checkout needs collectstatic (it still works, into STATIC_ROOT, for a front proxy).
WHITENOISE_USE_FINDERS = True
with contextlib.suppress(OSError):  # whitenoise warns at every start when STATIC_ROOT does not exist yet.
    STATIC_ROOT.mkdir(parents=True, exist_ok=True)

# --- Security ---------------------------------------------------------------------------------------------------------
# Workers speak plain HTTP to the port of the specification (WEBSERVER_PORT=25565), so TLS-only settings are opt-in:
# set DJANGO_SECURE_TLS=1 when a TLS terminator stands in front of the server.
SECURE_TLS = env_bool("DJANGO_SECURE_TLS", False)
SECURE_SSL_REDIRECT = SECURE_TLS
SESSION_COOKIE_SECURE = SECURE_TLS
CSRF_COOKIE_SECURE = SECURE_TLS
SECURE_HSTS_SECONDS = env_int("DJANGO_SECURE_HSTS_SECONDS", 31536000 if SECURE_TLS else 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = SECURE_TLS
SECURE_HSTS_PRELOAD = env_bool("DJANGO_SECURE_HSTS_PRELOAD", SECURE_TLS)
if SECURE_TLS:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
SESSION_COOKIE_HTTPONLY = True
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
# Content-Security-Policy on every answer (django-csp): scripts only from this server (the pages, the admin, the
# browsable API and Swagger UI have no inline script), nothing framed, forms post only here. Model output is
# sanitised before it is shown; this is the second wall if that ever failed. Inline styles are allowed (the admin
# and Swagger UI use them; style attributes are stripped from model output).
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'", "'unsafe-inline'"],
        "img-src": ["'self'", "data:"],
        "font-src": ["'self'", "data:"],
        "object-src": ["'none'"],
        "base-uri": ["'self'"],
        "frame-ancestors": ["'none'"],
        "form-action": ["'self'"],
    }
}

# --- Uploads -------------------------------------------------------------------------------------------------------
# Largest request body Django accepts (adapter zips are limited separately by PRM_ADAPTER_MAX_BYTES).
DATA_UPLOAD_MAX_MEMORY_SIZE = env_int("DJANGO_DATA_UPLOAD_MAX_BYTES", 10 * 1024 * 1024)
FILE_UPLOAD_MAX_MEMORY_SIZE = 10 * 1024 * 1024

# --- Request bodies under the production server (prmsite.asgi.BodyGuardMiddleware) ---------------------------------
# Largest body a caller without valid credentials (worker token or logged-in session) may send: login forms fit well
# within it; a bigger anonymous body is refused with 401 before it is read.
WEBSERVER_ANONYMOUS_BODY_MAX_BYTES = env_int("WEBSERVER_ANONYMOUS_BODY_MAX_BYTES", 64 * 1024)
# A body must arrive within WEBSERVER_BODY_TIMEOUT_S seconds plus one second per WEBSERVER_BODY_MIN_BYTES_PER_S bytes
# of it (a 512 MiB adapter: 60 s + 2048 s); one that trickles or stalls beyond is cut off with 408.
WEBSERVER_BODY_TIMEOUT_S = env_int("WEBSERVER_BODY_TIMEOUT_S", 60)
WEBSERVER_BODY_MIN_BYTES_PER_S = env_int("WEBSERVER_BODY_MIN_BYTES_PER_S", 256 * 1024)
# Bytes of request bodies one server process holds in memory at once (each body counts up to
# FILE_UPLOAD_MAX_MEMORY_SIZE, beyond which Django spools it to disk); a body beyond it is refused with 503 and
# Retry-After. Anonymous bodies share an eighth of it, so they can never crowd out authenticated ones.
WEBSERVER_BODY_BUDGET_BYTES = env_int("WEBSERVER_BODY_BUDGET_BYTES", 256 * 1024 * 1024)

# --- REST framework and the OpenAPI schema ---------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "prmsite.authentication.WorkerTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    # Closed by default: a view that names no permission admits worker tokens and staff sessions only.
    "DEFAULT_PERMISSION_CLASSES": ["prmsite.permissions.IsWorkerOrStaff"],
    "DEFAULT_PARSER_CLASSES": ["prmsite.parsers.BoundedJSONParser"],
    "DEFAULT_RENDERER_CLASSES": [
        "rest_framework.renderers.JSONRenderer",
        "rest_framework.renderers.BrowsableAPIRenderer",
    ],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "prmsite.api.exception_handler",
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}
# Worker tokens are stored hashed (knox); they do not expire unless made with create_worker_token --expires_in_days.
REST_KNOX = {"AUTH_HEADER_PREFIX": "Token", "TOKEN_TTL": None, "AUTO_REFRESH": False}
SPECTACULAR_SETTINGS = {
    "TITLE": "prmsite active-learning API",
    "DESCRIPTION": "Rollouts, process reward labels and PRM adapters for the active-learning loop around a PRM.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # The schema and the docs are for workers and staff, like the API; Swagger UI's assets are served from here
    # (drf-spectacular-sidecar), never from a CDN.
    "SERVE_PERMISSIONS": ["prmsite.permissions.IsWorkerOrStaff"],
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

# --- Domain settings -------------------------------------------------------------------------------------------
# Seconds a rollout handed out by GET /rollout stays checked out for that prm_version.
PRM_CHECKOUT_TIMEOUT_S = env_int("PRM_CHECKOUT_TIMEOUT_S", 600)
# Seconds a labeller's invitation link (/label/invite/) stays valid; it works once, until the password is set.
LABELLER_INVITE_TIMEOUT_S = env_int("LABELLER_INVITE_TIMEOUT_S", 7 * 24 * 3600)
# Largest adapter zip accepted by POST /prm_adapter, in bytes.
PRM_ADAPTER_MAX_BYTES = env_int("PRM_ADAPTER_MAX_BYTES", 512 * 1024 * 1024)
# Longest long-poll GET /rollout?wait=… accepts, in seconds.
PRM_CHECKOUT_WAIT_MAX_S = env_int("PRM_CHECKOUT_WAIT_MAX_S", 60)
# Claim attempts the long-polls of one server process run at once (each takes a thread and a database connection while
# it runs); the others wait their turn in the event loop, holding nothing.
PRM_LONG_POLL_CONCURRENCY = env_int("PRM_LONG_POLL_CONCURRENCY", 4)
# Largest JSON answer of one GET /rollout claim, in bytes (it always holds at least one rollout).
PRM_CLAIM_MAX_BYTES = env_int("PRM_CLAIM_MAX_BYTES", 16 * 1024 * 1024)
# Most reasoning steps, and most characters of reasoning in all, one rollout may have (413 beyond): a rollout's insert
# into the trie is one short write transaction, whatever is posted.
PRM_ROLLOUT_MAX_STEPS = env_int("PRM_ROLLOUT_MAX_STEPS", 1000)
PRM_ROLLOUT_MAX_CHARS = env_int("PRM_ROLLOUT_MAX_CHARS", 1_000_000)
# Folders the admin's "Add forest" form may read local datasets from (colon-separated); the command line may read any.
PRM_DATASET_DIRS = env_paths("PRM_DATASET_DIRS", [BASE_DIR / "forests" / "demo"])
# Extra folders holding experiment-config modules (colon-separated, like PATH). prmsite.core.configs.loader reads the
# variable itself (the workers load configs without Django); the setting shows the value the server started with.
EXPERIMENT_CONFIG_DIRS = env_paths("EXPERIMENT_CONFIG_DIRS", [])
# The forest pages are the team's data: logged-in users only, through the admin's login page.
LOGIN_URL = "admin:login"
# Most nodes a tree page lays out at once; a node whose subtree did not fit links to a page of its own.
FOREST_TREE_MAX_NODES = env_int("FOREST_TREE_MAX_NODES", 2000)
# What one page view spends on texts, whatever they hold (rendering.PageBudget): characters parsed as markdown
# in all (tree, node and labelling pages; the rest shows as plain text), and bytes of text HTML (tree and node pages;
# a text cut there links to its whole text). Characters of each step a tree page shows (a longer one links to its page).
PAGE_MARKDOWN_MAX_CHARS = env_int("PAGE_MARKDOWN_MAX_CHARS", 50_000)
PAGE_TEXT_MAX_BYTES = env_int("PAGE_TEXT_MAX_BYTES", 2_000_000)
FOREST_TREE_STEP_CHARS = env_int("FOREST_TREE_STEP_CHARS", 4000)
# Most nodes the admin's "Compute search metrics" and "Download an export" read in one request (the selected forests
# together): the request's work stays bounded; larger forests go through beam_search --save and export_preferences.
ADMIN_ACTION_MAX_NODES = env_int("ADMIN_ACTION_MAX_NODES", 2_000_000)
# --- Forest growth (rollout_worker --forest_name): the expansion queue, its leases, batched rollouts ---
# Seconds an expansion handed out by POST /forest/<name>/expansions/claim stays leased to the claimer.
GROWTH_LEASE_S = env_int("GROWTH_LEASE_S", 600)
# Leases of one expansion handed out without an answer before it is given up (a prompt the model cannot take).
GROWTH_MAX_ATTEMPTS = env_int("GROWTH_MAX_ATTEMPTS", 3)
# Roots planned per batch as claims come in (planning never reads more than this many trees per request).
GROWTH_PLAN_BATCH = env_int("GROWTH_PLAN_BATCH", 500)
# Most rollouts one expansion (one lease) asks for; bigger needs are split into several expansions.
GROWTH_EXPANSION_MAX_COUNT = env_int("GROWTH_EXPANSION_MAX_COUNT", 8)
# Most rollouts one POST /rollout/batch takes.
ROLLOUT_BATCH_MAX = env_int("ROLLOUT_BATCH_MAX", 500)
# Most labels one POST /process_reward_label/batch takes.
PROCESS_REWARD_LABEL_BATCH_MAX = env_int("PROCESS_REWARD_LABEL_BATCH_MAX", 500)
# Name of the database the test suite creates (default: Django's test_<name>, or .test-db.sqlite3 on SQLite), for
# servers where only some database names may be used.
if os.environ.get("DATABASE_TEST_NAME", "").strip():
    DATABASES["default"]["TEST"] = {"NAME": os.environ["DATABASE_TEST_NAME"].strip()}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": os.environ.get("DJANGO_LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}
