"""Long Django data backfills, run safely on Temporal."""

from backfills.base import ModelBackfill, UpdateBackfill
from backfills.registry import register

__all__ = ["ModelBackfill", "UpdateBackfill", "register"]
