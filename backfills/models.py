"""`BackfillRun`: one row per run, its status machine and its committed position."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, ClassVar

from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _


class Status(models.TextChoices):
    PENDING = "pending", _("Pending")
    RUNNING = "running", _("Running")
    PAUSING = "pausing", _("Pausing")
    PAUSED = "paused", _("Paused")
    CANCELLING = "cancelling", _("Cancelling")
    CANCELLED = "cancelled", _("Cancelled")
    SUCCEEDED = "succeeded", _("Succeeded")
    FAILED = "failed", _("Failed")


#: Statuses of a run that holds its backfill's single active slot.
ACTIVE_STATUSES = frozenset(
    {Status.PENDING, Status.RUNNING, Status.PAUSING, Status.PAUSED, Status.CANCELLING}
)
FINISHED_STATUSES = frozenset({Status.CANCELLED, Status.SUCCEEDED, Status.FAILED})

#: Every allowed status change. Anything not listed is refused.
TRANSITIONS: dict[Status, frozenset[Status]] = {
    Status.PENDING: frozenset(
        {
            Status.RUNNING,  # the worker's first attempt took the run
            Status.PAUSING,  # paused before any worker picked it up
            Status.CANCELLING,  # cancelled before any worker picked it up
            Status.FAILED,  # the workflow gave up before the first batch
        }
    ),
    Status.RUNNING: frozenset(
        {
            Status.PAUSING,  # operator asked to pause; takes effect after the current batch
            Status.CANCELLING,  # operator asked to cancel; takes effect after the current batch
            Status.SUCCEEDED,  # the last batch committed
            Status.FAILED,  # retries exhausted or a non-retryable error
        }
    ),
    Status.PAUSING: frozenset(
        {
            Status.PAUSED,  # the activity stopped after committing its batch
            Status.RUNNING,  # resumed before the pause took effect
            Status.CANCELLING,  # cancel wins over a pause still in flight
            Status.SUCCEEDED,  # the run reached its end before the pause took effect
            Status.FAILED,
        }
    ),
    Status.PAUSED: frozenset(
        {
            Status.RUNNING,  # resumed from the committed cursor
            Status.CANCELLING,
        }
    ),
    Status.CANCELLING: frozenset(
        {
            Status.CANCELLED,  # stopped between batches, committed work kept
            Status.SUCCEEDED,  # the run reached its end before the cancel took effect
            Status.FAILED,
        }
    ),
    Status.FAILED: frozenset(
        {
            Status.PENDING,  # retried: continues from the failing batch's cursor
        }
    ),
    Status.CANCELLED: frozenset(),
    Status.SUCCEEDED: frozenset(),
}


def can_transition(current: str, new: str) -> bool:
    return Status(new) in TRANSITIONS[Status(current)]


#: What each operator action asks of a run: (statuses it applies to, the status it sets).
ACTIONS: dict[str, tuple[frozenset[Status], Status]] = {
    "pause": (frozenset({Status.PENDING, Status.RUNNING}), Status.PAUSING),
    "resume": (frozenset({Status.PAUSED, Status.PAUSING}), Status.RUNNING),
    "cancel": (
        frozenset({Status.PENDING, Status.RUNNING, Status.PAUSING, Status.PAUSED}),
        Status.CANCELLING,
    ),
    "retry": (frozenset({Status.FAILED}), Status.PENDING),
}


def allowed_actions(status: str) -> list[str]:
    return [name for name, (sources, _) in ACTIONS.items() if status in sources]


class BackfillRunQuerySet(models.QuerySet["BackfillRun"]):
    def active(self) -> BackfillRunQuerySet:
        """Runs that hold their backfill's single active slot."""
        return self.filter(status__in=ACTIVE_STATUSES)

    def finished(self) -> BackfillRunQuerySet:
        return self.filter(status__in=FINISHED_STATUSES)

    def stale(self, older_than: timedelta) -> BackfillRunQuerySet:
        """Runs that should be heartbeating (a worker holds them) but have not committed or
        heartbeated within `older_than`: candidates for `reconcile_backfills`."""
        cutoff = timezone.now() - older_than
        working = self.filter(status__in=[Status.RUNNING, Status.PAUSING, Status.CANCELLING])
        return working.filter(
            models.Q(last_heartbeat_at__lt=cutoff)
            | models.Q(last_heartbeat_at__isnull=True, created_at__lt=cutoff)
        )

    def of_backfill(self, name: str) -> BackfillRunQuerySet:
        return self.filter(backfill_name=name)


class BackfillRun(models.Model):
    backfill_name = models.CharField(_("backfill"), max_length=200, db_index=True)
    status = models.CharField(
        _("status"), max_length=20, choices=Status.choices, default=Status.PENDING
    )
    params = models.JSONField(_("parameters"), default=dict, blank=True)
    batch_size = models.PositiveIntegerField(_("batch size"))
    dry_run = models.BooleanField(_("dry run"), default=False)

    # The committed position: moves only in the transaction that commits a batch.
    cursor = models.JSONField(_("cursor"), null=True, blank=True)
    rows_processed = models.BigIntegerField(_("rows processed"), default=0)
    batches_processed = models.BigIntegerField(_("batches processed"), default=0)
    rows_total = models.BigIntegerField(_("rows total (estimate)"), null=True, blank=True)
    #: Smoothed over the last half minute or so of batches (see backfills/progress.py).
    rows_per_second = models.FloatField(_("rows per second"), null=True, blank=True)
    #: The batch size in use: `batch_size` unless the backfill adapts it.
    current_batch_size = models.PositiveIntegerField(_("current batch size"), null=True, blank=True)
    #: Why the run is holding its next batch, while it is (rate limit, replica lag, ...).
    throttled_reason = models.CharField(_("throttled"), max_length=255, blank=True)

    workflow_id = models.CharField(_("workflow ID"), max_length=255, blank=True, db_index=True)
    workflow_run_id = models.CharField(_("workflow run ID"), max_length=255, blank=True)

    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    started_at = models.DateTimeField(_("started at"), null=True, blank=True)
    finished_at = models.DateTimeField(_("finished at"), null=True, blank=True)
    last_heartbeat_at = models.DateTimeField(_("last heartbeat at"), null=True, blank=True)

    #: {"class", "message", "traceback", "cursor"} of the last failing batch.
    error = models.JSONField(_("error"), null=True, blank=True)
    created_by = models.CharField(_("created by"), max_length=150, blank=True)

    #: The backfill's name while the run is active, NULL after: a unique column that allows
    #: one active run per backfill on every database (MariaDB has no partial indexes).
    active_backfill_name = models.GeneratedField(
        expression=models.Case(
            models.When(status__in=sorted(ACTIVE_STATUSES), then=models.F("backfill_name")),
            default=None,
        ),
        output_field=models.CharField(max_length=200, null=True),
        db_persist=True,
    )

    # Fencing: the attempt allowed to commit. Ordered (epoch, attempt) and only ever raised;
    # every checkpoint is a compare-and-set on it (see backfills/checkpoint.py).
    lease_epoch = models.PositiveBigIntegerField(default=0, editable=False)
    lease_attempt = models.PositiveIntegerField(default=0, editable=False)

    objects: ClassVar[BackfillRunQuerySet] = BackfillRunQuerySet.as_manager()  # type: ignore[assignment]

    class Meta:
        verbose_name = _("backfill run")
        verbose_name_plural = _("backfill runs")
        ordering = ["-created_at", "-id"]
        permissions = [
            ("start_backfillrun", _("Can start backfill runs")),
            ("control_backfillrun", _("Can pause, resume, cancel and retry backfill runs")),
        ]
        constraints = [
            # Unique over active runs only: the column is NULL once a run is finished.
            models.UniqueConstraint(
                fields=["active_backfill_name"],
                name="backfills_one_active_run_per_backfill",
            ),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.backfill_name} ({self.status})"

    @property
    def is_active(self) -> bool:
        return self.status in ACTIVE_STATUSES

    @property
    def is_finished(self) -> bool:
        return self.status in FINISHED_STATUSES

    @property
    def eta(self) -> timedelta | None:
        """Time left at the current rate, while the run is working."""
        if self.status not in (Status.RUNNING, Status.PAUSING) or not self.rows_per_second:
            return None
        if self.rows_total is None:
            return None
        remaining = max(0, self.rows_total - self.rows_processed)
        return timedelta(seconds=round(remaining / self.rows_per_second))

    def heartbeat_age(self, now: datetime | None = None) -> timedelta | None:
        if self.last_heartbeat_at is None:
            return None
        return (now or timezone.now()) - self.last_heartbeat_at

    def is_stale(self, heartbeat_timeout: timedelta, now: datetime | None = None) -> bool:
        """A worker should be heartbeating this run but has been silent for too long."""
        if self.status not in (Status.RUNNING, Status.PAUSING, Status.CANCELLING):
            return False
        age = self.heartbeat_age(now)
        return age is None or age > heartbeat_timeout

    @property
    def progress(self) -> float | None:
        """Fraction done in [0, 1], or None without an estimate."""
        if self.status == Status.SUCCEEDED:
            return 1.0
        if not self.rows_total:
            return None
        return min(1.0, self.rows_processed / self.rows_total)

    def describe_error(self) -> str:
        if not self.error:
            return ""
        error: dict[str, Any] = self.error
        return f"{error.get('class', 'Error')}: {error.get('message', '')}"


class StatusChange(models.Model):
    """One status change of a run: who or what made it, and when."""

    run = models.ForeignKey(
        BackfillRun, on_delete=models.CASCADE, related_name="status_changes", verbose_name=_("run")
    )
    #: Empty for the run's creation.
    from_status = models.CharField(_("from"), max_length=20, choices=Status.choices, blank=True)
    to_status = models.CharField(_("to"), max_length=20, choices=Status.choices)
    changed_at = models.DateTimeField(_("changed at"), default=timezone.now)
    #: A user name, "name (manage.py)", or "worker" for changes the run makes itself.
    changed_by = models.CharField(_("changed by"), max_length=150, blank=True)
    note = models.TextField(_("note"), blank=True)

    class Meta:
        verbose_name = _("status change")
        verbose_name_plural = _("status changes")
        ordering = ["changed_at", "id"]

    def __str__(self) -> str:
        return f"{self.from_status} → {self.to_status}"


class Checkpoint(models.Model):
    """The commit record of a run whose writes go to another database than the run row's.

    It lives in the target database (`manage.py migrate backfills --database=<target>`) and
    commits in the same transaction as each batch's writes there, with the same lease as the
    run row. The run row is then brought up to it, never moved backwards. One row per
    partition of a run (a single partition, 0, today).
    """

    run_id = models.BigIntegerField(_("run"))
    partition = models.PositiveIntegerField(_("partition"), default=0)
    cursor = models.JSONField(_("cursor"), null=True, blank=True)
    rows_processed = models.BigIntegerField(_("rows processed"), default=0)
    batches_processed = models.BigIntegerField(_("batches processed"), default=0)
    lease_epoch = models.PositiveBigIntegerField(default=0)
    lease_attempt = models.PositiveIntegerField(default=0)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

    class Meta:
        verbose_name = _("checkpoint")
        verbose_name_plural = _("checkpoints")
        constraints = [
            models.UniqueConstraint(
                fields=["run_id", "partition"], name="backfills_one_checkpoint_per_partition"
            )
        ]

    def __str__(self) -> str:
        return f"run {self.run_id} partition {self.partition}: {self.batches_processed} batches"
