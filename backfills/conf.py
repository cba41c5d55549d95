"""The app's options, read lazily from Django settings so `override_settings` works.

Every option has one property here, with its default and what it is for.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.conf import settings as django_settings


class BackfillsSettings:
    def _get(self, name: str, default: Any) -> Any:
        return getattr(django_settings, name, default)

    @property
    def temporal_address(self) -> str:
        """host:port of the Temporal frontend."""
        return str(self._get("TEMPORAL_ADDRESS", "localhost:7233"))

    @property
    def temporal_namespace(self) -> str:
        return str(self._get("TEMPORAL_NAMESPACE", "default"))

    @property
    def temporal_ui_url(self) -> str:
        """Base URL of the Temporal web UI, for links to a run's workflow."""
        return str(self._get("TEMPORAL_UI_URL", "http://localhost:8233")).rstrip("/")

    @property
    def task_queue(self) -> str:
        """Task queue the workers poll and runs are started on."""
        return str(self._get("BACKFILLS_TASK_QUEUE", "backfills"))

    @property
    def workflow_id_prefix(self) -> str:
        """Prefix of workflow IDs (`<prefix><backfill name>`); set a distinct one per
        deployment when several share a Temporal namespace."""
        return str(self._get("BACKFILLS_WORKFLOW_ID_PREFIX", "backfill-"))

    @property
    def max_batch_size(self) -> int:
        """Largest batch size a run may ask for."""
        return int(self._get("BACKFILLS_MAX_BATCH_SIZE", 100_000))

    @property
    def heartbeat_timeout(self) -> timedelta:
        """Silence after which Temporal gives up on an attempt and retries it elsewhere."""
        return timedelta(seconds=float(self._get("BACKFILLS_HEARTBEAT_TIMEOUT", 30)))

    @property
    def heartbeat_throttle_interval(self) -> timedelta:
        """Cap on how long the worker buffers a heartbeat; bounds pause latency and the
        staleness of heartbeat details after a crash."""
        return timedelta(seconds=float(self._get("BACKFILLS_HEARTBEAT_THROTTLE_INTERVAL", 2)))

    @property
    def activity_timeout(self) -> timedelta:
        """Longest one attempt of a run may last; a longer run is retried and resumes."""
        return timedelta(seconds=float(self._get("BACKFILLS_ACTIVITY_TIMEOUT", 24 * 3600)))

    @property
    def max_attempts(self) -> int:
        """Attempts of a run's activity before the run is marked failed."""
        return int(self._get("BACKFILLS_MAX_ATTEMPTS", 10))

    @property
    def retry_initial_interval(self) -> timedelta:
        return timedelta(seconds=float(self._get("BACKFILLS_RETRY_INITIAL_INTERVAL", 1)))

    @property
    def retry_maximum_interval(self) -> timedelta:
        return timedelta(seconds=float(self._get("BACKFILLS_RETRY_MAXIMUM_INTERVAL", 60)))

    @property
    def continue_as_new_after_events(self) -> int:
        """Continue a run's workflow as new once its history has this many events; 0 leaves
        it to the server's suggestion (which comes long before its limits)."""
        return int(self._get("BACKFILLS_CONTINUE_AS_NEW_AFTER_EVENTS", 0))

    @property
    def worker_concurrency(self) -> int:
        """Runs one worker process executes at once (threads in its activity pool)."""
        return int(self._get("BACKFILLS_WORKER_CONCURRENCY", 4))

    @property
    def graceful_shutdown_timeout(self) -> timedelta:
        """How long a stopping worker waits for the current batches to commit."""
        return timedelta(seconds=float(self._get("BACKFILLS_GRACEFUL_SHUTDOWN_TIMEOUT", 60)))


backfills_settings = BackfillsSettings()
