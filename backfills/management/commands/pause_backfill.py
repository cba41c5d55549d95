from __future__ import annotations

from backfills import services
from backfills.management.control import ControlCommand


class Command(ControlCommand):
    help = "Pause a run after its current batch commits; resume it later from its cursor."
    action = staticmethod(services.pause)
    verb = "pause requested"
