from __future__ import annotations

from backfills import services
from backfills.management.control import ControlCommand


class Command(ControlCommand):
    help = "Cancel a run after its current batch commits; the work committed so far stays."
    action = staticmethod(services.cancel)
    verb = "cancel requested"
