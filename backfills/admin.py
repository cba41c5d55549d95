"""Runs in the Django admin: live progress, Temporal links, and POST-only buttons that call
`backfills.services` (see STYLE.md: read-only rows, buttons in get_urls, permission checks)."""

from __future__ import annotations

import json
from typing import Any

from django.contrib import admin, messages
from django.contrib.admin.utils import flatten_fieldsets
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import (
    HttpRequest,
    HttpResponse,
    HttpResponseNotAllowed,
    HttpResponseRedirect,
    JsonResponse,
)
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html
from django.utils.translation import gettext_lazy as _
from django.views.decorators.http import require_POST

from backfills import live, services
from backfills.exceptions import BackfillError, InvalidParameters
from backfills.forms import StartBackfillForm, parameters_form
from backfills.models import BackfillRun, StatusChange, allowed_actions
from backfills.registry import registry

#: The buttons on a run: action name -> (service, label, message once done).
ACTIONS = {
    "pause": (services.pause, _("Pause"), _("Pause requested: run %(id)s is %(status)s.")),
    "resume": (services.resume, _("Resume"), _("Run %(id)s resumed: it is %(status)s.")),
    "cancel": (services.cancel, _("Cancel"), _("Cancel requested: run %(id)s is %(status)s.")),
    "retry": (services.retry, _("Retry"), _("Run %(id)s retried: it is %(status)s.")),
}
START_PERMISSION = "backfills.start_backfillrun"
CONTROL_PERMISSION = "backfills.control_backfillrun"
#: Runs newer than this many are not polled by a list page.
LIVE_LIMIT = 200


class StatusChangeInline(admin.TabularInline):
    model = StatusChange
    fields = ("changed_at", "from_status", "to_status", "changed_by", "note")
    readonly_fields = ("changed_at", "from_status", "to_status", "changed_by", "note")
    extra = 0
    can_delete = False
    verbose_name_plural = _("status changes")

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # Part of the run's record: whoever may see the run sees how it got there.
        return request.user.has_perm("backfills.view_backfillrun")


@admin.register(BackfillRun)
class BackfillRunAdmin(admin.ModelAdmin):
    list_display = [
        "id",
        "backfill_name",
        "status_display",
        "progress_display",
        "rows_display",
        "rate_display",
        "eta_display",
        "started_at",
        "finished_at",
        "heartbeat_display",
        "workflow_link",
    ]
    list_display_links = ["id", "backfill_name"]
    list_filter = ["status", "backfill_name", "dry_run"]
    search_fields = ["backfill_name", "=workflow_id"]
    ordering = ["-created_at", "-id"]
    list_per_page = 50
    actions = ["pause_selected", "resume_selected", "cancel_selected", "retry_selected"]
    inlines = [StatusChangeInline]
    fieldsets = [
        (
            None,
            {
                "fields": [
                    "backfill_name",
                    "status_display",
                    "dry_run",
                    "batch_size",
                    "params_display",
                    "created_by",
                    "created_at",
                ]
            },
        ),
        (
            _("Progress"),
            {
                "fields": [
                    "progress_display",
                    "rows_display",
                    "batches_processed",
                    "current_batch_size",
                    "rate_display",
                    "eta_display",
                    "cursor_display",
                    "started_at",
                    "finished_at",
                    "heartbeat_display",
                    "last_heartbeat_at",
                ]
            },
        ),
        (_("Temporal"), {"fields": ["workflow_link", "workflow_run_id"]}),
        (_("Error"), {"fields": ["error_display"]}),
    ]
    # Every field on a run's page is read-only: runs change only through the service layer.
    readonly_fields = flatten_fieldsets(fieldsets)

    class Media:
        css = {"all": ["backfills/admin/backfills.css"]}
        js = ["backfills/admin/live.js"]

    # --- permissions -------------------------------------------------------------------

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # runs start through the "Start backfill" form

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # runs are records: they change only through the service layer

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_start_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm(START_PERMISSION)

    def has_control_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm(CONTROL_PERMISSION)

    # --- columns and fields ------------------------------------------------------------

    @admin.display(description=_("status"), ordering="status")
    def status_display(self, run: BackfillRun) -> str:
        return live.status_badge(run)

    @admin.display(description=_("progress"))
    def progress_display(self, run: BackfillRun) -> str:
        return live.progress_bar(run)

    @admin.display(description=_("rows"), ordering="rows_processed")
    def rows_display(self, run: BackfillRun) -> str:
        return live.field(run, "rows", live.rows_text(run))

    @admin.display(description=_("rate"))
    def rate_display(self, run: BackfillRun) -> str:
        return live.field(run, "rate", live.rate_text(run))

    @admin.display(description=_("ETA"))
    def eta_display(self, run: BackfillRun) -> str:
        return live.field(run, "eta", live.format_duration(run.eta))

    @admin.display(description=_("last heartbeat"), ordering="last_heartbeat_at")
    def heartbeat_display(self, run: BackfillRun) -> str:
        return live.heartbeat_cell(run)

    @admin.display(description=_("workflow"), ordering="workflow_id")
    def workflow_link(self, run: BackfillRun) -> str:
        url = live.temporal_url(run)
        if not url:
            return "–"
        return format_html(
            '<a href="{}" target="_blank" rel="noopener">{}</a>', url, run.workflow_id
        )

    @admin.display(description=_("parameters"))
    def params_display(self, run: BackfillRun) -> str:
        return format_html("<pre>{}</pre>", json.dumps(run.params, indent=2, sort_keys=True))

    @admin.display(description=_("cursor"))
    def cursor_display(self, run: BackfillRun) -> str:
        return format_html("<pre>{}</pre>", json.dumps(run.cursor, indent=2))

    @admin.display(description=_("error"))
    def error_display(self, run: BackfillRun) -> str:
        if not run.error:
            return "–"
        return format_html(
            '<div class="bf-error"><strong>{}</strong>: {}<br>{} <code>{}</code>'
            "<pre>{}</pre></div>",
            run.error.get("class", ""),
            run.error.get("message", ""),
            _("Failing batch after cursor"),
            json.dumps(run.error.get("cursor")),
            run.error.get("traceback", ""),
        )

    # --- pages -------------------------------------------------------------------------

    def get_urls(self) -> list[URLPattern]:
        def view(function: Any) -> Any:
            return self.admin_site.admin_view(function)

        info = f"{self.opts.app_label}_{self.opts.model_name}"
        custom = [
            path("start/", view(self.start_view), name=f"{info}_start"),
            path("registered/", view(self.registered_view), name=f"{info}_registered"),
            path("live/", view(self.live_view), name=f"{info}_live"),
        ]
        custom += [
            path(
                f"<int:run_id>/{action}/",
                view(require_POST(self._action_view(action))),
                name=f"{info}_{action}",
            )
            for action in ACTIONS
        ]
        return custom + super().get_urls()

    def _context(self, request: HttpRequest, **extra: Any) -> dict[str, Any]:
        return {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "has_start_permission": self.has_start_permission(request),
            "has_control_permission": self.has_control_permission(request),
            "live_url": reverse("admin:backfills_backfillrun_live"),
            **extra,
        }

    def changelist_view(self, request: HttpRequest, extra_context: Any = None) -> HttpResponse:
        return super().changelist_view(request, {**self._context(request), **(extra_context or {})})

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: Any = None
    ) -> HttpResponse:
        run = self.get_object(request, object_id)
        extra = self._context(request)
        if run is not None:
            extra["run_actions"] = [
                (
                    action,
                    ACTIONS[action][1],
                    reverse(f"admin:backfills_backfillrun_{action}", args=[run.pk]),
                )
                for action in allowed_actions(run.status)
            ]
            extra["temporal_url"] = live.temporal_url(run)
            extra["run"] = run
        return super().change_view(request, object_id, form_url, {**extra, **(extra_context or {})})

    def _action_view(self, action: str) -> Any:
        def run_action(request: HttpRequest, run_id: int) -> HttpResponseRedirect:
            if not self.has_control_permission(request):
                raise PermissionDenied
            service, _label, done = ACTIONS[action]
            try:
                run = service(run_id, by=request.user.get_username())
            except BackfillError as exc:
                self.message_user(request, str(exc), messages.ERROR)
            else:
                self.message_user(
                    request,
                    done % {"id": run.pk, "status": run.get_status_display()},
                    messages.SUCCESS,
                )
            return redirect("admin:backfills_backfillrun_change", run_id)

        run_action.__name__ = f"{action}_view"
        return run_action

    def start_view(self, request: HttpRequest) -> HttpResponse:
        if not self.has_start_permission(request):
            raise PermissionDenied
        posted = request.method == "POST"
        chosen = request.POST.get("backfill") if posted else request.GET.get("backfill")
        form = StartBackfillForm(request.POST if posted else None, initial={"backfill": chosen})
        params = parameters_form(chosen, request.POST if posted else None)
        if posted and form.is_valid() and (params is None or params.is_valid()):
            name = form.cleaned_data["backfill"]
            backfill_class = registry.get(name)
            values = backfill_class.json_params(params.cleaned_data if params else {})
            try:
                run = services.start(
                    name,
                    batch_size=form.cleaned_data["batch_size"],
                    params=values,
                    dry_run=form.cleaned_data["dry_run"],
                    created_by=request.user.get_username(),
                )
            except InvalidParameters as exc:
                for key, errors in exc.errors.items():
                    target = params if params is not None and key in params.fields else form
                    for error in errors:
                        target.add_error(key if key in target.fields else None, error)
                if not exc.errors:
                    form.add_error(None, str(exc))
            except BackfillError as exc:
                form.add_error(None, str(exc))
            else:
                self.message_user(
                    request,
                    _("Started run %(id)s of %(name)s (workflow %(workflow)s).")
                    % {"id": run.pk, "name": name, "workflow": run.workflow_id},
                    messages.SUCCESS,
                )
                return redirect("admin:backfills_backfillrun_change", run.pk)
        return TemplateResponse(
            request,
            "admin/backfills/backfillrun/start.html",
            self._context(
                request,
                title=_("Start backfill"),
                form=form,
                params_form=params,
                chosen=registry.get(chosen) if chosen and chosen in registry else None,
                media=self.media + form.media,
            ),
        )

    def registered_view(self, request: HttpRequest) -> HttpResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        rows = [
            {
                "name": backfill.name,
                "description": backfill.description,
                "model": backfill.model._meta.label,
                "batch_size": backfill.batch_size,
                "cursor_fields": ", ".join(backfill.cursor_fields),
                "latest": BackfillRun.objects.of_backfill(backfill.name).first(),
            }
            for backfill in registry.all()
        ]
        return TemplateResponse(
            request,
            "admin/backfills/backfillrun/registered.html",
            self._context(request, title=_("Registered backfills"), rows=rows, media=self.media),
        )

    @staticmethod
    def _live_ids(request: HttpRequest) -> list[int]:
        raw = request.GET.get("ids", "")
        return [int(part) for part in raw.split(",") if part.strip().isdecimal()][:LIVE_LIMIT]

    def live_view(self, request: HttpRequest) -> JsonResponse:
        """Progress of the runs a page shows, polled by backfills/admin/live.js."""
        if request.method != "GET":
            return HttpResponseNotAllowed(["GET"])  # type: ignore[return-value]
        if not self.has_view_permission(request):
            raise PermissionDenied
        runs = BackfillRun.objects.filter(pk__in=self._live_ids(request))
        return JsonResponse({"runs": {str(run.pk): live.snapshot(run) for run in runs}})

    # --- bulk actions ------------------------------------------------------------------

    def _bulk(self, request: HttpRequest, queryset: QuerySet[BackfillRun], action: str) -> None:
        service, _label, _done = ACTIONS[action]
        done, refused = 0, []
        for run_id in queryset.values_list("pk", flat=True):
            try:
                service(run_id, by=request.user.get_username())
                done += 1
            except BackfillError as exc:
                refused.append(str(exc))
        if done:
            self.message_user(
                request,
                _("%(action)s: %(count)d run(s).") % {"action": action, "count": done},
                messages.SUCCESS,
            )
        for message in refused:
            self.message_user(request, message, messages.WARNING)

    @admin.action(description=_("Pause selected runs"), permissions=["control"])
    def pause_selected(self, request: HttpRequest, queryset: QuerySet[BackfillRun]) -> None:
        self._bulk(request, queryset, "pause")

    @admin.action(description=_("Resume selected runs"), permissions=["control"])
    def resume_selected(self, request: HttpRequest, queryset: QuerySet[BackfillRun]) -> None:
        self._bulk(request, queryset, "resume")

    @admin.action(description=_("Cancel selected runs"), permissions=["control"])
    def cancel_selected(self, request: HttpRequest, queryset: QuerySet[BackfillRun]) -> None:
        self._bulk(request, queryset, "cancel")

    @admin.action(description=_("Retry selected runs"), permissions=["control"])
    def retry_selected(self, request: HttpRequest, queryset: QuerySet[BackfillRun]) -> None:
        self._bulk(request, queryset, "retry")
