"""Long Django data backfills, run safely on Temporal."""

from backfills.base import ModelBackfill
from backfills.registry import register

__all__ = ["ModelBackfill", "register"]
