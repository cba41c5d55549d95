"""`make demo` on its embedded defaults: SQLite, its own Temporal dev server, a worker."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.temporal_support import ROOT, free_port


def test_demo_runs_a_real_backfill_to_the_end(tmp_path):
    env = {
        **{k: v for k, v in os.environ.items() if k != "DATABASE_URL"},
        "DJANGO_SETTINGS_MODULE": "project.settings",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'demo.sqlite3'}",
        "SOURCE_DATABASE_URL": f"sqlite:///{tmp_path / 'legacy.sqlite3'}",
        "DEMO_VAR_DIR": str(tmp_path),
        "TEMPORAL_ADDRESS": f"127.0.0.1:{free_port()}",
        "TEMPORAL_UI_URL": f"http://localhost:{free_port()}",
        "BACKFILLS_TASK_QUEUE": "demo-test",
    }

    result = subprocess.run(
        [sys.executable, "-m", "example.demo", "--no-serve", "--rows", "3000"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert "Starting a Temporal dev server" in result.stdout
    assert "Inserted 3,000 comments." in result.stdout
    assert "100.0%" in result.stdout
    assert "succeeded:" in result.stdout
    assert "Inserted 600 legacy comments." in result.stdout
    assert "600/600 rows" in result.stdout, "the legacy import read the other database"
    assert "no worker is polling" not in result.stderr
    assert (tmp_path / "temporal.db").exists()
