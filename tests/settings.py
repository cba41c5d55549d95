"""Settings for the test suite: the example project plus a test app, short timeouts.

The database comes from DATABASE_URL: PostgreSQL (the default: a throwaway server when unset),
SQLite (`sqlite:////tmp/backfills.sqlite3`) or MariaDB/MySQL
(`mysql://root@127.0.0.1:3306/backfills`). `make test-engines` runs the core suite on the
last two."""

from __future__ import annotations

import copy
import os
import tempfile
from pathlib import Path

from project.settings import *  # noqa: F403
from project.settings import INSTALLED_APPS, env

if not os.environ.get("DATABASE_URL"):
    # No database given: start a throwaway PostgreSQL (worker subprocesses inherit the URL).
    from tests.throwaway_postgres import start

    os.environ["DATABASE_URL"] = start()

DATABASES = {"default": env.db("DATABASE_URL")}
_database = DATABASES["default"]
if _database["ENGINE"] == "django.db.backends.sqlite3":
    # As project/settings.py: WAL so that readers go on while the worker writes, IMMEDIATE
    # transactions that wait for the write lock instead of failing mid-transaction.
    _database.setdefault("OPTIONS", {}).update(
        {
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            "transaction_mode": "IMMEDIATE",
            "timeout": 30,
        }
    )
    # The test database must be a file: worker threads and `manage.py` subprocesses open
    # their own connections to it, and each connection to `:memory:` is a database of its
    # own. Django would make the test database of a file SQLite in memory; name a file
    # beside the given one instead (`test_` + its name), so sessions with different
    # DATABASE_URLs do not share it.
    _name = str(_database.get("NAME") or "")
    if _name in ("", ":memory:") or _name.startswith("file:"):
        _test_name = Path(tempfile.gettempdir()) / f"test_backfills_{os.getpid()}.sqlite3"
    else:
        _path = Path(_name).resolve()
        _test_name = _path.with_name(f"test_{_path.name}")
    _database["TEST"] = {"NAME": str(_test_name)}
elif _database["ENGINE"] == "django.db.backends.mysql":
    _database["OPTIONS"] = {
        **_database.get("OPTIONS", {}),
        # READ COMMITTED (also Django's default for MySQL; said here so nobody "fixes" it).
        # Each batch is its own transaction, and InnoDB takes a REPEATABLE READ snapshot at
        # a transaction's first read, so the keyset read would not miss rows committed
        # before its batch began either way. What REPEATABLE READ would change: locking
        # reads and UPDATEs (the batch's writes, the lease check on the run row) take
        # next-key locks on the gaps they scan, which block the application's inserts
        # into those ranges for the whole batch and make deadlocks likelier; and a batch's
        # plain reads would see the snapshot of its start while its writes see the newest
        # rows. Under READ COMMITTED every statement sees the latest committed rows and
        # only the rows written stay locked.
        "isolation_level": "read committed",
        # The full UTF-8 (MySQL's `utf8` is 3 bytes and refuses emoji).
        "charset": "utf8mb4",
    }
    _database["TEST"] = {"CHARSET": "utf8mb4"}

# A second database on the same server, for backfills that write to another database than
# the run row's (tests/test_across_databases.py). Its name follows the default's, so a worker
# subprocess given the test database's URL finds the second test database too.
_other = copy.deepcopy(_database)
if _database["ENGINE"] == "django.db.backends.sqlite3":
    _default_file = Path(str(_database["TEST"]["NAME"]))
    _other["NAME"] = str(Path(str(_database["NAME"] or _default_file)).with_suffix("")) + "_other"
    _other["TEST"] = {"NAME": str(_default_file.with_suffix("")) + "_other.sqlite3"}
else:
    _other["NAME"] = f"{_database['NAME']}_other"
DATABASES["other"] = _other
if _database["ENGINE"] != "django.db.backends.sqlite3":
    # And a database of another engine, for copies between engines.
    _mixed_file = Path(tempfile.gettempdir()) / f"backfills_mixed_{_database['NAME']}.sqlite3"
    DATABASES["mixed"] = {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": str(_mixed_file),
        "TEST": {"NAME": str(_mixed_file.with_name("test_" + _mixed_file.name))},
        "OPTIONS": {"transaction_mode": "IMMEDIATE", "timeout": 30},
    }

INSTALLED_APPS = [*INSTALLED_APPS, "tests.testapp"]
# The example's "legacy" database is not part of the tests' setup.
DATABASE_ROUTERS = []

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

# Short timeouts so crash tests recover in seconds; worker subprocesses read the same.
BACKFILLS_HEARTBEAT_TIMEOUT = env.float("BACKFILLS_HEARTBEAT_TIMEOUT", default=3.0)
BACKFILLS_HEARTBEAT_THROTTLE_INTERVAL = 0.5
BACKFILLS_RETRY_INITIAL_INTERVAL = 0.2
BACKFILLS_RETRY_MAXIMUM_INTERVAL = 1.0
BACKFILLS_MAX_ATTEMPTS = env.int("BACKFILLS_MAX_ATTEMPTS", default=10)
BACKFILLS_GRACEFUL_SHUTDOWN_TIMEOUT = 15.0
BACKFILLS_WORKER_CONCURRENCY = 2
