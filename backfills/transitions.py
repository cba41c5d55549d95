"""Every status change of a run: checked against `TRANSITIONS`, logged as a `StatusChange`,
and announced (the backfill's hooks, Django signals) once it commits."""

from __future__ import annotations

import logging
from typing import Any

from django.db import router, transaction
from django.utils import timezone

from backfills import signals
from backfills.exceptions import IllegalTransition
from backfills.models import (
    FINISHED_STATUSES,
    TRANSITIONS,
    BackfillRun,
    Status,
    StatusChange,
    can_transition,
)

logger = logging.getLogger(__name__)

WORKER = "worker"


def change_status(
    run: BackfillRun,
    to: Status,
    *,
    by: str = WORKER,
    note: str = "",
    **fields: Any,
) -> BackfillRun:
    """Move `run` to `to`, with `fields` written in the same UPDATE.

    Call inside a transaction that holds the run row locked (`select_for_update`), so the
    status read and the status written cannot interleave with another change.
    """
    current = Status(run.status)
    if not can_transition(current, to):
        allowed = ", ".join(sorted(TRANSITIONS[current])) or "none: the run is finished"
        raise IllegalTransition(
            f"Run {run.pk} is {current}; it cannot become {to} (from {current} it can become: "
            f"{allowed})."
        )
    run.status = to
    if to in FINISHED_STATUSES:
        fields.setdefault("finished_at", timezone.now())
    for name, value in fields.items():
        setattr(run, name, value)
    run.save(update_fields=["status", *fields])
    StatusChange.objects.create(
        run=run, from_status=current, to_status=to, changed_by=by, note=note[:2000]
    )
    using = router.db_for_write(BackfillRun)
    transaction.on_commit(lambda: announce(run, current, to), using=using)
    return run


#: (hook method name, signal) by status reached; a resume is running reached from a pause.
_ANNOUNCEMENTS = {
    Status.PAUSED: ("on_pause", signals.backfill_paused),
    Status.CANCELLED: ("on_cancel", signals.backfill_cancelled),
    Status.SUCCEEDED: ("on_complete", signals.backfill_completed),
    Status.FAILED: ("on_error", signals.backfill_failed),
}


def announce(run: BackfillRun, from_status: Status, to_status: Status) -> None:
    if to_status == Status.RUNNING:
        if from_status == Status.PENDING:
            hook, signal = "on_start", signals.backfill_started
        else:
            hook, signal = "on_resume", signals.backfill_resumed
    elif to_status in _ANNOUNCEMENTS:
        hook, signal = _ANNOUNCEMENTS[to_status]
    else:
        hook, signal = "", None
    _notify(
        run,
        hook,
        [(signals.status_changed, {"from_status": from_status, "to_status": to_status})]
        + ([(signal, {})] if signal is not None else []),
    )


def announce_start(run: BackfillRun) -> None:
    """The first attempt took a run that was paused and resumed before any worker had."""
    _notify(run, "on_start", [(signals.backfill_started, {})])


def _notify(
    run: BackfillRun, hook: str, sends: list[tuple[signals.Signal, dict[str, Any]]]
) -> None:
    from backfills.registry import registry

    backfill_class = registry.get(run.backfill_name) if run.backfill_name in registry else None
    if hook and backfill_class is not None:
        try:
            backfill = backfill_class(params=backfill_class.typed_params(run.params))
            getattr(backfill, hook)(run)
        except Exception:
            # A hook must not break the run's state machine: the change has committed.
            logger.exception("Run %s: the %s hook of %s raised", run.pk, hook, run.backfill_name)
    for signal, extra in sends:
        for receiver, response in signal.send_robust(sender=backfill_class, run=run, **extra):
            if isinstance(response, Exception):
                logger.error("Run %s: signal receiver %r raised %r", run.pk, receiver, response)


def locked(run_id: int) -> BackfillRun:
    """The run row, locked until the surrounding transaction ends."""
    return BackfillRun.objects.select_for_update().get(pk=run_id)
