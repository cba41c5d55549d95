"""Settings for the test suite: the example project plus a test app, short timeouts."""

from __future__ import annotations

import os

from project.settings import *  # noqa: F403
from project.settings import INSTALLED_APPS, env

if not os.environ.get("DATABASE_URL"):
    # No database given: start a throwaway PostgreSQL (worker subprocesses inherit the URL).
    from tests.throwaway_postgres import start

    os.environ["DATABASE_URL"] = start()

DATABASES = {"default": env.db("DATABASE_URL")}
INSTALLED_APPS = [*INSTALLED_APPS, "tests.testapp"]

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

# Short timeouts so crash tests recover in seconds; worker subprocesses read the same.
BACKFILLS_HEARTBEAT_TIMEOUT = env.float("BACKFILLS_HEARTBEAT_TIMEOUT", default=3.0)
BACKFILLS_HEARTBEAT_THROTTLE_INTERVAL = 0.5
BACKFILLS_RETRY_INITIAL_INTERVAL = 0.2
BACKFILLS_RETRY_MAXIMUM_INTERVAL = 1.0
BACKFILLS_MAX_ATTEMPTS = env.int("BACKFILLS_MAX_ATTEMPTS", default=10)
BACKFILLS_GRACEFUL_SHUTDOWN_TIMEOUT = 15.0
BACKFILLS_WORKER_CONCURRENCY = 2
