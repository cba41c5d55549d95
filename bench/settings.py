"""Settings for the benchmarks: the example project with the app's DEFAULT timeouts (unlike
tests/settings.py), plus the test app's tables. PostgreSQL from DATABASE_URL, or a throwaway
one."""

from __future__ import annotations

import os

from project.settings import *  # noqa: F403
from project.settings import INSTALLED_APPS, env

if not os.environ.get("DATABASE_URL"):
    from tests.throwaway_postgres import start

    os.environ["DATABASE_URL"] = start()

DATABASES = {"default": env.db("DATABASE_URL")}
INSTALLED_APPS = [*INSTALLED_APPS, "tests.testapp"]
LOGGING = {"version": 1, "disable_existing_loggers": False}
