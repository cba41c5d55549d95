"""What the admin shows of a run's progress, as HTML cells and as the JSON the pages poll."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import SafeString
from django.utils.translation import gettext as _

from backfills.conf import backfills_settings
from backfills.models import BackfillRun, allowed_actions


def format_duration(delta: timedelta | None) -> str:
    if delta is None:
        return "–"
    seconds = max(0, int(delta.total_seconds()))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m"
    if minutes:
        return f"{minutes}m {seconds:02d}s"
    return f"{seconds}s"


def snapshot(run: BackfillRun, now: datetime | None = None) -> dict[str, Any]:
    """The live fields of a run, as the admin's polling script expects them."""
    now = now or timezone.now()
    progress = run.progress
    stale = run.is_stale(backfills_settings.heartbeat_timeout, now)
    return {
        "id": run.pk,
        "status": run.status,
        "status_label": run.get_status_display(),
        "active": run.is_active,
        "percent": None if progress is None else round(progress * 100, 1),
        "rows": rows_text(run),
        "rate": rate_text(run),
        "eta": format_duration(run.eta) if run.eta is not None else "–",
        "heartbeat": heartbeat_text(run, now),
        "stale": stale,
        "actions": allowed_actions(run.status),
        "throttled": throttled_text(run),
        "batch_size": run.current_batch_size or run.batch_size,
    }


def throttled_text(run: BackfillRun) -> str:
    if not run.throttled_reason or not run.is_active:
        return ""
    return _("throttled: %(reason)s") % {"reason": run.throttled_reason}


def rows_text(run: BackfillRun) -> str:
    total = "?" if run.rows_total is None else f"{run.rows_total:,}"
    return f"{run.rows_processed:,} / {total}"


def rate_text(run: BackfillRun) -> str:
    if not run.rows_per_second or not run.is_active:
        return "–"
    return _("%(rate)s rows/s") % {"rate": f"{run.rows_per_second:,.0f}"}


def heartbeat_text(run: BackfillRun, now: datetime) -> str:
    age = run.heartbeat_age(now)
    if age is None:
        return "–"
    return _("%(age)s ago") % {"age": format_duration(age)}


def field(run: BackfillRun, name: str, content: Any) -> SafeString:
    """A cell the polling script keeps up to date."""
    return format_html('<span data-bf-run="{}" data-bf-field="{}">{}</span>', run.pk, name, content)


def status_badge(run: BackfillRun) -> SafeString:
    return format_html(
        '<span class="bf-badge bf-{}" data-bf-run="{}" data-bf-field="status">{}</span>'
        '<br><small class="bf-throttled" data-bf-run="{}" data-bf-field="throttled">{}</small>',
        run.status,
        run.pk,
        run.get_status_display(),
        run.pk,
        throttled_text(run),
    )


def progress_bar(run: BackfillRun) -> SafeString:
    progress = run.progress
    percent = 0.0 if progress is None else progress * 100
    label = "?" if progress is None else f"{percent:.1f}%"
    return format_html(
        '<div class="bf-progress" data-bf-run="{}" data-bf-field="progress" '
        'role="progressbar" aria-valuemin="0" aria-valuemax="100" aria-valuenow="{}">'
        '<div class="bf-progress-bar" style="width: {}%"></div>'
        '<span class="bf-progress-label">{}</span></div>',
        run.pk,
        f"{percent:.1f}",
        f"{percent:.1f}",
        label,
    )


def heartbeat_cell(run: BackfillRun) -> SafeString:
    now = timezone.now()
    stale = run.is_stale(backfills_settings.heartbeat_timeout, now)
    return format_html(
        '<span class="{}" data-bf-run="{}" data-bf-field="heartbeat" title="{}">{}</span>',
        "bf-stale" if stale else "",
        run.pk,
        _("No heartbeat for longer than the heartbeat timeout: is a worker running?")
        if stale
        else "",
        heartbeat_text(run, now),
    )


def temporal_url(run: BackfillRun) -> str:
    if not run.workflow_id:
        return ""
    url = (
        f"{backfills_settings.temporal_ui_url}/namespaces/"
        f"{backfills_settings.temporal_namespace}/workflows/{run.workflow_id}"
    )
    if run.workflow_run_id:
        url += f"/{run.workflow_run_id}"
    return url + "/history"
