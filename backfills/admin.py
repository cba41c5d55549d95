"""Runs in the Django admin: read-only pages of `BackfillRun`."""

from __future__ import annotations

import json
from typing import Any

from django.contrib import admin
from django.http import HttpRequest
from django.utils.html import format_html
from django.utils.translation import gettext_lazy as _

from backfills.conf import backfills_settings
from backfills.models import BackfillRun


@admin.register(BackfillRun)
class BackfillRunAdmin(admin.ModelAdmin):
    list_display = [
        "id",
        "backfill_name",
        "status",
        "progress_display",
        "rows_processed",
        "rows_total",
        "started_at",
        "finished_at",
        "last_heartbeat_at",
        "workflow_link",
    ]
    list_filter = ["status", "backfill_name"]
    search_fields = ["backfill_name", "workflow_id"]
    ordering = ["-created_at", "-id"]
    readonly_fields = [
        "backfill_name",
        "status",
        "params",
        "batch_size",
        "dry_run",
        "cursor_display",
        "rows_processed",
        "batches_processed",
        "rows_total",
        "workflow_link",
        "workflow_run_id",
        "created_at",
        "started_at",
        "finished_at",
        "last_heartbeat_at",
        "created_by",
        "error_display",
    ]
    exclude = ["cursor", "error", "workflow_id"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description=_("progress"))
    def progress_display(self, run: BackfillRun) -> str:
        progress = run.progress
        return "–" if progress is None else f"{progress:.1%}"

    @admin.display(description=_("cursor"))
    def cursor_display(self, run: BackfillRun) -> str:
        return format_html("<pre>{}</pre>", json.dumps(run.cursor, indent=2))

    @admin.display(description=_("error"))
    def error_display(self, run: BackfillRun) -> str:
        if not run.error:
            return "–"
        return format_html(
            "<strong>{}</strong>: {}<br>cursor: <code>{}</code><pre>{}</pre>",
            run.error.get("class", ""),
            run.error.get("message", ""),
            json.dumps(run.error.get("cursor")),
            run.error.get("traceback", ""),
        )

    @admin.display(description=_("workflow"))
    def workflow_link(self, run: BackfillRun) -> str:
        if not run.workflow_id:
            return "–"
        url = (
            f"{backfills_settings.temporal_ui_url}/namespaces/"
            f"{backfills_settings.temporal_namespace}/workflows/{run.workflow_id}"
        )
        if run.workflow_run_id:
            url += f"/{run.workflow_run_id}"
        return format_html(
            '<a href="{}" target="_blank" rel="noopener">{}</a>', url, run.workflow_id
        )
