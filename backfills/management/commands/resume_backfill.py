from __future__ import annotations

from backfills import services
from backfills.management.control import ControlCommand


class Command(ControlCommand):
    help = "Resume a paused run from its committed cursor."
    action = staticmethod(services.resume)
    verb = "resumed"
