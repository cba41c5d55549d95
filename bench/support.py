"""What the benchmarks share: a fresh PostgreSQL database, a dev server, worker processes."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"


def positive_int(text: str) -> int:
    """An argparse type: a whole number of at least 1 (rows, runs, cycles)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def setup_django(database: str) -> None:
    """Point DATABASE_URL at a fresh database named `database` and migrate it."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings")
    import django

    django.setup()  # starts a throwaway PostgreSQL if DATABASE_URL is unset
    import psycopg

    parts = urlsplit(os.environ["DATABASE_URL"])
    admin_url = urlunsplit(parts._replace(path="/postgres"))
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{database}"')
        admin.execute(f'CREATE DATABASE "{database}"')
    os.environ["DATABASE_URL"] = urlunsplit(parts._replace(path=f"/{database}"))

    from django.conf import settings
    from django.db import connections

    settings.DATABASES["default"]["NAME"] = database
    connections.close_all()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


@contextmanager
def temporal(task_queue: str) -> Iterator[str]:
    from django.conf import settings

    from tests.temporal_support import DevServer

    server = DevServer()
    server.start()
    settings.TEMPORAL_ADDRESS = server.address
    settings.BACKFILLS_TASK_QUEUE = task_queue
    os.environ["TEMPORAL_ADDRESS"] = server.address
    os.environ["BACKFILLS_TASK_QUEUE"] = task_queue
    try:
        yield server.address
    finally:
        server.stop()


@contextmanager
def worker_process(log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """`manage.py run_backfill_worker` with the bench settings (default timeouts)."""
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "bench.settings"}
    with open(log, "wb") as output:
        process = subprocess.Popen(
            [sys.executable, "manage.py", "run_backfill_worker"],
            cwd=ROOT,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        yield process
    finally:
        process.terminate()
        process.wait(120)


def write_results(name: str, results: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(results, indent=2) + "\n")
    return path
