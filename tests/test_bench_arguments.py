"""The benchmark scripts refuse bad arguments before they create a database or start a
server."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    ("script", "arguments", "message"),
    [
        ("bench.throughput", ["--repeats", "0"], "--repeats: must be at least 1, got 0"),
        ("bench.throughput", ["--rows", "-5"], "--rows: must be at least 1, got -5"),
        ("bench.throughput", ["--pause-cycles", "x"], "expected a whole number, got 'x'"),
        ("bench.pause_latency", ["--rows", "many"], "--rows: expected a whole number"),
        ("bench.pause_latency", ["--cycles", "0"], "--cycles: must be at least 1, got 0"),
    ],
)
def test_bad_arguments_are_refused_naming_them(
    script: str, arguments: list[str], message: str
) -> None:
    finished = subprocess.run(
        [sys.executable, "-m", script, *arguments],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert finished.returncode == 2
    assert message in finished.stderr
