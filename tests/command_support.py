"""Running `manage.py` commands in tests: in-process, or as real processes."""

from __future__ import annotations

import io
import subprocess
import sys

import pytest
from django.core.management import CommandError, call_command

from tests.temporal_support import ROOT


def refused(*args: str) -> str:
    """Run a command in this process that must fail; return its error message."""
    with pytest.raises(CommandError) as excinfo:
        call_command(*args, stdout=io.StringIO(), stderr=io.StringIO())
    return str(excinfo.value)


def manage(
    env: dict[str, str], *args: str, timeout: float = 240
) -> subprocess.CompletedProcess[str]:
    """Run `python manage.py ARGS` as a real process."""
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def assert_clean_failure(result: subprocess.CompletedProcess[str], code: int, text: str) -> None:
    """Exit code `code`, `text` on stderr, and no traceback anywhere."""
    assert result.returncode == code, result
    assert text in result.stderr, result
    assert "Traceback" not in result.stderr + result.stdout
