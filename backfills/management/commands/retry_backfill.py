from __future__ import annotations

from backfills import services
from backfills.management.control import ControlCommand


class Command(ControlCommand):
    help = "Run a failed run again, continuing from the cursor of its failing batch."
    action = staticmethod(services.retry)
    verb = "retried"
