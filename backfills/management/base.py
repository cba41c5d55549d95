"""What every backfills command shares: service errors as CommandError, a clean exit."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from backfills.exceptions import BackfillError


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be above 0, got {text}")
    return value


def run_id(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"RUN_ID must be a run's number, got {text!r}") from None
    return value


class BackfillCommand(BaseCommand):
    #: Log level of the `backfills` loggers at the default verbosity (1).
    default_log_level = logging.WARNING

    def execute(self, *args: Any, **options: Any) -> str | None:
        verbosity = options.get("verbosity", 1)
        level = {0: logging.ERROR, 1: self.default_log_level}.get(verbosity, logging.DEBUG)
        logging.getLogger("backfills").setLevel(level)
        try:
            return super().execute(*args, **options)
        except BackfillError as exc:
            raise CommandError(str(exc)) from exc

    def run_from_argv(self, argv: list[str]) -> None:
        # A process that used the Temporal SDK can abort at interpreter exit
        # (temporalio/sdk-python#300): flush and end the process here instead.
        code = 0
        try:
            super().run_from_argv(argv)
        except SystemExit as exit:
            code = exit.code if isinstance(exit.code, int) else 1
        except KeyboardInterrupt:
            code = 130
        except BaseException:
            import traceback

            traceback.print_exc()
            code = 1
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
