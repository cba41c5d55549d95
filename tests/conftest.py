from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings as django_settings

from backfills.registry import registry
from tests.temporal_support import (
    DevServer,
    InProcessWorker,
    WorkerProcess,
    database_url,
    worker_processes,
)


@pytest.fixture(scope="session")
def temporal_server() -> Iterator[DevServer]:
    """One real Temporal dev server for the whole session."""
    server = DevServer()
    server.start()
    yield server
    server.stop()


@dataclass
class TemporalTest:
    server: DevServer
    task_queue: str
    workflow_id_prefix: str


@pytest.fixture
def temporal(temporal_server: DevServer, settings: Any) -> TemporalTest:
    """Point the app at the dev server, with a task queue and workflow IDs of this test's own
    so that nothing left over from another test can interfere."""
    tag = uuid.uuid4().hex[:8]
    settings.TEMPORAL_ADDRESS = temporal_server.address
    settings.BACKFILLS_TASK_QUEUE = f"test-{tag}"
    settings.BACKFILLS_WORKFLOW_ID_PREFIX = f"test-{tag}-"
    return TemporalTest(temporal_server, settings.BACKFILLS_TASK_QUEUE, f"test-{tag}-")


@pytest.fixture
def worker(temporal: TemporalTest, transactional_db: None) -> Iterator[InProcessWorker]:
    """A real worker on a thread of the test process."""
    with InProcessWorker(temporal.task_queue) as running:
        yield running


@pytest.fixture
def worker_env(temporal: TemporalTest, transactional_db: None) -> dict[str, str]:
    """Environment for `manage.py` subprocesses: this test's database, server and queue."""
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "DATABASE_URL": database_url(),
        "TEMPORAL_ADDRESS": temporal.server.address,
        "BACKFILLS_TASK_QUEUE": temporal.task_queue,
        "BACKFILLS_WORKFLOW_ID_PREFIX": temporal.workflow_id_prefix,
        "BACKFILLS_HEARTBEAT_TIMEOUT": str(django_settings.BACKFILLS_HEARTBEAT_TIMEOUT),
        "PYTHONUNBUFFERED": "1",
    }


@pytest.fixture
def spawn_worker(
    temporal: TemporalTest, worker_env: dict[str, str], tmp_path: Path
) -> Iterator[Callable[[], WorkerProcess]]:
    """Start real worker processes (`manage.py run_backfill_worker`) that a test may kill."""
    with worker_processes(temporal.task_queue, worker_env, tmp_path) as spawn:
        yield spawn


@pytest.fixture
def registered() -> Iterator[Callable[[Any], Any]]:
    """Register backfill classes for one test: `registered(SomeBackfill)`."""
    saved = dict(registry._backfills)
    yield registry.register
    registry._backfills.clear()
    registry._backfills.update(saved)


@pytest.fixture
def server_side_binding() -> Iterator[None]:
    """The test's PostgreSQL connection binds parameters on the server, as Django's
    `server_side_binding` option makes it (psycopg 3): its cursors are made that way."""
    from django.db import connection

    if connection.vendor != "postgresql":
        pytest.skip("server-side binding is psycopg's")
    from django.db.backends.postgresql.base import ServerBindingCursor

    connection.ensure_connection()
    raw = connection.connection
    client_binding, raw.cursor_factory = raw.cursor_factory, ServerBindingCursor
    try:
        yield
    finally:
        raw.cursor_factory = client_binding
