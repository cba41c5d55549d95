"""Settings of the example project; every deploy-time value comes from the environment."""

from __future__ import annotations

from pathlib import Path

import environ

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()

SECRET_KEY = env("DJANGO_SECRET_KEY", default="insecure-example-key-change-me")
DEBUG = env.bool("DJANGO_DEBUG", default=True)
ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=["localhost", "127.0.0.1"])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "backfills",
    "example",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "project.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
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

WSGI_APPLICATION = "project.wsgi.application"

# SQLite next to the checkout unless DATABASE_URL names another database. "legacy" is the
# database of another service the example reads comments from (SOURCE_DATABASE_URL).
DATABASES = {
    "default": env.db("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'var' / 'db.sqlite3'}"),
    "legacy": env.db(
        "SOURCE_DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'var' / 'legacy.sqlite3'}"
    ),
}
for _database in DATABASES.values():
    if _database["ENGINE"] == "django.db.backends.sqlite3":
        # The worker writes while the admin and `--wait` read: WAL lets readers go on, and
        # IMMEDIATE transactions wait for the write lock instead of failing mid-transaction.
        _database.setdefault("OPTIONS", {}).update(
            {
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
                "transaction_mode": "IMMEDIATE",
                "timeout": 30,
            }
        )
    elif _database["ENGINE"] == "django.db.backends.mysql":
        # READ COMMITTED: each batch is its own transaction; REPEATABLE READ would add gap
        # locks on the batch's writes that block the application's inserts (see
        # tests/settings.py). utf8mb4: the whole of UTF-8.
        _database.setdefault("OPTIONS", {}).update(
            {"isolation_level": "read committed", "charset": "utf8mb4"}
        )
DATABASE_ROUTERS = ["example.routers.LegacyRouter"]
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "var" / "static"

# Temporal, read by the backfills app (see backfills/conf.py for its other options).
TEMPORAL_ADDRESS = env("TEMPORAL_ADDRESS", default="localhost:7233")
TEMPORAL_NAMESPACE = env("TEMPORAL_NAMESPACE", default="default")
TEMPORAL_UI_URL = env("TEMPORAL_UI_URL", default="http://localhost:8233")
BACKFILLS_TASK_QUEUE = env("BACKFILLS_TASK_QUEUE", default="backfills")
BACKFILLS_WORKFLOW_ID_PREFIX = env("BACKFILLS_WORKFLOW_ID_PREFIX", default="backfill-")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {
        "backfills": {"handlers": ["console"], "level": env("BACKFILLS_LOG_LEVEL", default="INFO")},
    },
}
