"""The admin through Django's test client: who may see and do what, the buttons a run offers,
the start form, the live endpoint, the registered backfills page and the bulk actions. Runs
that must talk to Temporal are started for real on the dev server, with no worker."""

from __future__ import annotations

import html
import json
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from typing import Any

import pytest
from django.contrib.auth.models import Permission
from django.contrib.messages import get_messages
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from backfills import services
from backfills.models import BackfillRun, Status, StatusChange
from backfills.registry import registry

pytestmark = pytest.mark.django_db

VIEW = "view_backfillrun"
START = "start_backfillrun"
CONTROL = "control_backfillrun"
BUTTON_ACTIONS = ("pause", "resume", "cancel", "retry")
#: A status each button applies to.
ACTIONABLE = {
    "pause": Status.PENDING,
    "resume": Status.PAUSED,
    "cancel": Status.PENDING,
    "retry": Status.FAILED,
}
#: The buttons a run page must offer, by status (written out, not derived from the code).
BUTTONS = {
    Status.PENDING: {"pause", "cancel"},
    Status.RUNNING: {"pause", "cancel"},
    Status.PAUSING: {"resume", "cancel"},
    Status.PAUSED: {"resume", "cancel"},
    Status.CANCELLING: set(),
    Status.CANCELLED: set(),
    Status.SUCCEEDED: set(),
    Status.FAILED: {"retry"},
}
BULK_ACTIONS = {"pause_selected", "resume_selected", "cancel_selected", "retry_selected"}


# --- helpers ----------------------------------------------------------------------------


def url(name: str, *args: Any) -> str:
    return reverse(f"admin:backfills_backfillrun_{name}", args=args)


def make_run(status: Status = Status.PENDING, name: str = "touch-items", **fields: Any):
    return BackfillRun.objects.create(backfill_name=name, batch_size=10, status=status, **fields)


def state(run_id: int) -> tuple[Any, ...]:
    """What an action would change: status, workflow run, finish time, error, status log."""
    run = BackfillRun.objects.get(pk=run_id)
    log = StatusChange.objects.filter(run_id=run_id).values_list("to_status", "changed_by")
    return run.status, run.workflow_run_id, run.finished_at, run.error, list(log)


def messages_of(response: Any) -> list[tuple[str, str]]:
    """(level, text) of the messages a response queued; "ok" for info and success alike."""
    return [
        ("ok" if m.level_tag in ("info", "success") else m.level_tag, str(m.message))
        for m in get_messages(response.wsgi_request)
    ]


def page(response: Any) -> str:
    assert response.status_code == 200, response.status_code
    return response.content.decode()


def assert_redirects_to_login(response: Any) -> None:
    assert response.status_code == 302
    assert response["Location"].startswith(f"{reverse('admin:login')}?next=")


class Forms(HTMLParser):
    """The forms of a page: their attributes and the fields and options inside them."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.forms: list[dict[str, Any]] = []
        self._open: dict[str, Any] | None = None
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "form":
            self._open = {"attrs": values, "fields": [], "options": []}
            self.forms.append(self._open)
        elif self._open is not None and tag in ("input", "button", "select", "textarea"):
            self._open["fields"].append(values)
        elif self._open is not None and tag == "option":
            self._open["options"].append(values.get("value"))

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._open = None

    def names(self, form: dict[str, Any]) -> set[str]:
        return {field["name"] for field in form["fields"] if field.get("name")}


def button_forms(text: str, run_id: int) -> dict[str, dict[str, Any]]:
    """The run page's button forms, by action, found by the URL they post to."""
    targets = {url(action, run_id): action for action in BUTTON_ACTIONS}
    return {
        targets[form["attrs"]["action"]]: form
        for form in Forms(text).forms
        if form["attrs"].get("action") in targets
    }


def readonly_pre(text: str, field: str) -> Any:
    """The JSON a read-only field of the run page shows in its <pre>."""
    match = re.search(
        rf'field-{field}".*?<div class="readonly"><pre>(.*?)</pre>', text, flags=re.DOTALL
    )
    assert match, f"no read-only {field} on the page"
    return json.loads(html.unescape(match.group(1)))


def status_change_rows(text: str) -> list[dict[str, str]]:
    """The cells of the status changes inline, row by row."""
    rows = re.findall(r'<tr class="form-row[^"]*"\s+id="status_changes-\d+">(.*?)</tr>', text, re.S)
    return [
        {
            name: " ".join(cell.split())
            for name, cell in re.findall(r'<td class="field-(\w+)">\s*<p>(.*?)</p>', row, re.S)
        }
        for row in rows
    ]


def start_data(changes: dict[str, str]) -> dict[str, str]:
    """A post of the start form for touch-items, with `changes`."""
    data = {"backfill": "touch-items", "batch_size": "", "param-sleep": "", "param-poison_id": ""}
    return {**data, **changes}


def counts() -> tuple[int, int]:
    return BackfillRun.objects.count(), StatusChange.objects.count()


@pytest.fixture
def login(client: Client, django_user_model: Any) -> Callable[..., Any]:
    """Log `client` in as a staff user holding exactly the given backfills permissions."""

    def log_in(*codenames: str, username: str = "operator") -> Any:
        user = django_user_model.objects.create_user(username=username, is_staff=True)
        permissions = Permission.objects.filter(
            content_type__app_label="backfills", codename__in=codenames
        )
        assert len(permissions) == len(codenames)
        user.user_permissions.add(*permissions)
        client.force_login(user)
        return user

    return log_in


# --- permissions ------------------------------------------------------------------------


PAGES = ["changelist", "change", "start", "live", "registered"]


def page_url(name: str, run_id: int) -> str:
    if name == "change":
        return url("change", run_id)
    if name == "live":
        return f"{url('live')}?ids={run_id}"
    return url(name)


@pytest.mark.parametrize("name", PAGES)
def test_anonymous_get_is_sent_to_the_login_page(client, name):
    run = make_run()
    assert_redirects_to_login(client.get(page_url(name, run.pk)))


@pytest.mark.parametrize("action", BUTTON_ACTIONS)
def test_anonymous_button_post_is_sent_to_the_login_page(client, action):
    run = make_run(ACTIONABLE[action])
    before = state(run.pk)

    assert_redirects_to_login(client.post(url(action, run.pk)))
    assert state(run.pk) == before


@pytest.mark.parametrize("name", PAGES)
def test_staff_without_view_permission_is_forbidden(client, login, name):
    login()
    run = make_run()
    assert client.get(page_url(name, run.pk)).status_code == 403


@pytest.mark.parametrize("name", ["changelist", "change", "live", "registered"])
def test_view_permission_opens_the_read_only_pages(client, login, name):
    login(VIEW)
    run = make_run()
    assert client.get(page_url(name, run.pk)).status_code == 200


def test_without_start_permission_the_start_form_is_forbidden(client, login, temporal):
    login(VIEW, CONTROL)

    assert client.get(url("start")).status_code == 403
    assert client.get(f"{url('start')}?backfill=touch-items").status_code == 403
    assert client.post(url("start"), start_data({"batch_size": "10"})).status_code == 403
    assert counts() == (0, 0)


@pytest.mark.parametrize(("permissions", "shown"), [((VIEW,), False), ((VIEW, START), True)])
def test_start_link_on_the_run_list_only_with_start_permission(client, login, permissions, shown):
    login(*permissions)
    text = page(client.get(url("changelist")))

    assert (f'href="{url("start")}"' in text) is shown
    assert f'href="{url("registered")}"' in text


@pytest.mark.parametrize("action", BUTTON_ACTIONS)
def test_without_control_permission_buttons_are_forbidden(client, login, action):
    login(VIEW, START)
    run = make_run(ACTIONABLE[action])
    before = state(run.pk)

    assert client.post(url(action, run.pk)).status_code == 403
    assert state(run.pk) == before


@pytest.mark.parametrize("status", [Status.PENDING, Status.PAUSED, Status.FAILED])
def test_without_control_permission_the_run_page_has_no_buttons(client, login, status):
    login(VIEW, START)
    run = make_run(status)
    text = page(client.get(url("change", run.pk)))

    assert button_forms(text, run.pk) == {}
    assert not any(url(action, run.pk) in text for action in BUTTON_ACTIONS)


@pytest.mark.parametrize(("permissions", "offered"), [((VIEW,), False), ((VIEW, CONTROL), True)])
def test_bulk_actions_are_offered_only_with_control_permission(client, login, permissions, offered):
    login(*permissions)
    make_run()
    response = client.get(url("changelist"))
    text = page(response)

    action_form = response.context["action_form"]
    choices = set() if action_form is None else {v for v, _ in action_form.fields["action"].choices}
    assert (choices == {"", *BULK_ACTIONS}) is offered
    assert all((name in text) is offered for name in BULK_ACTIONS)


def test_bulk_action_without_control_permission_changes_nothing(client, login):
    login(VIEW)
    run = make_run()
    before = state(run.pk)

    response = client.post(
        url("changelist"), {"action": "pause_selected", "_selected_action": [run.pk]}
    )

    # With no action allowed, the list ignores the post and just shows itself again.
    assert response.status_code == 200
    assert messages_of(response) == []
    assert state(run.pk) == before


@pytest.mark.parametrize("action", BUTTON_ACTIONS)
def test_get_on_a_button_is_not_allowed(admin_client, action):
    run = make_run(ACTIONABLE[action])
    before = state(run.pk)

    response = admin_client.get(url(action, run.pk))

    assert response.status_code == 405
    assert response["Allow"] == "POST"
    assert state(run.pk) == before


def test_button_post_without_csrf_token_is_refused(login, temporal):
    run = services.start("touch-items", batch_size=10)
    before = state(run.pk)
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(login(VIEW, CONTROL))

    assert browser.post(url("pause", run.pk)).status_code == 403
    assert state(run.pk) == before

    # The same post with the page's token goes through: the token was what was missing.
    form = button_forms(page(browser.get(url("change", run.pk))), run.pk)["pause"]
    token = next(f["value"] for f in form["fields"] if f.get("name") == "csrfmiddlewaretoken")
    response = browser.post(url("pause", run.pk), {"csrfmiddlewaretoken": token})
    assert response.status_code == 302
    assert BackfillRun.objects.get(pk=run.pk).status == Status.PAUSING


def test_pause_button_pauses_the_run(client, login, temporal):
    run = services.start("touch-items", batch_size=10, created_by="starter")
    login(VIEW, CONTROL, username="ops-alice")

    response = client.post(url("pause", run.pk))

    assert response.status_code == 302
    assert response["Location"] == url("change", run.pk)
    assert messages_of(response) == [
        ("ok", f"Pause requested: run {run.pk} is Pausing."),
    ]
    assert BackfillRun.objects.get(pk=run.pk).status == Status.PAUSING
    assert state(run.pk)[-1] == [("pending", "starter"), ("pausing", "ops-alice")]
    last = StatusChange.objects.filter(run=run).last()
    assert last is not None
    assert (last.from_status, last.note) == ("pending", "pause")


def test_refused_action_reports_an_error_and_changes_nothing(client, login):
    run = make_run(Status.SUCCEEDED)
    before = state(run.pk)
    login(VIEW, CONTROL)

    response = client.post(url("pause", run.pk))

    assert response.status_code == 302
    assert response["Location"] == url("change", run.pk)
    assert messages_of(response) == [
        ("error", f"Cannot pause run {run.pk} (touch-items): it is succeeded. It is finished."),
    ]
    assert state(run.pk) == before


# --- the buttons a run offers -----------------------------------------------------------


@pytest.mark.parametrize("status", list(BUTTONS), ids=str)
def test_run_page_offers_exactly_the_allowed_buttons(client, login, status):
    login(VIEW, CONTROL)
    run = make_run(status)
    text = page(client.get(url("change", run.pk)))

    forms = button_forms(text, run.pk)
    assert set(forms) == BUTTONS[status]
    for action, form in forms.items():
        assert form["attrs"].get("method") == "post"
        tokens = [f for f in form["fields"] if f.get("name") == "csrfmiddlewaretoken"]
        assert len(tokens) == 1 and tokens[0].get("value"), f"{action}: no CSRF token"
    # No link or other form to a button that does not apply.
    for action in set(BUTTON_ACTIONS) - BUTTONS[status]:
        assert url(action, run.pk) not in text


# --- the start form ---------------------------------------------------------------------


def start_form(text: str) -> dict[str, Any]:
    return next(form for form in Forms(text).forms if form["attrs"].get("id") == "bf-start-form")


def test_start_form_lists_every_registered_backfill(client, login):
    login(VIEW, START)
    text = page(client.get(url("start")))

    chooser = next(form for form in Forms(text).forms if form["attrs"].get("method") == "get")
    names = [backfill.name for backfill in registry.all()]
    assert {"touch-items", "touch-uuid-items", "copy-comments-to-search"} <= set(names)
    assert chooser["options"] == ["", *names]
    assert not any(name.startswith("param-") for name in Forms(text).names(start_form(text)))


def test_start_form_shows_the_chosen_backfills_parameters(client, login):
    login(VIEW, START)
    text = page(client.get(f"{url('start')}?backfill=touch-items"))

    fields = Forms(text).names(start_form(text))
    assert {"param-sleep", "param-poison_id", "param-transient"} <= fields
    assert {"backfill", "batch_size", "dry_run"} <= fields
    assert re.search(r'<option value="touch-items"\s+selected>', text)

    other = page(client.get(f"{url('start')}?backfill=copy-comments-to-search"))
    assert not any(name.startswith("param-") for name in Forms(other).names(start_form(other)))


INVALID_STARTS = [
    ("unknown-backfill", {"backfill": "no-such-backfill"}, "form", "backfill", "valid choice"),
    ("batch-size-zero", {"batch_size": "0"}, "form", "batch_size", "greater than or equal to 1"),
    (
        "batch-size-too-big",
        {"batch_size": "501"},
        "form",
        "batch_size",
        "less than or equal to 500",
    ),
    ("negative-sleep", {"param-sleep": "-1"}, "params_form", "sleep", "greater than or equal"),
    ("sleep-not-a-number", {"param-sleep": "abc"}, "params_form", "sleep", "Enter a number."),
]


@pytest.mark.parametrize(
    ("data", "form", "field", "message"),
    [case[1:] for case in INVALID_STARTS],
    ids=[case[0] for case in INVALID_STARTS],
)
def test_invalid_start_shows_inline_errors_and_creates_nothing(
    client, login, settings, temporal, data, form, field, message
):
    settings.BACKFILLS_MAX_BATCH_SIZE = 500
    login(VIEW, START)

    response = client.post(url("start"), start_data(data))
    text = page(response)

    errors = response.context[form].errors
    assert list(errors) == [field]
    assert message in " ".join(errors[field])
    assert f'class="form-row errors field-{field}"' in text
    assert html.escape(message) in text
    assert counts() == (0, 0)


def test_valid_start_creates_one_run_and_opens_it(client, login, temporal):
    login(VIEW, START, username="ops-bob")

    response = client.post(
        url("start"),
        start_data(
            {"batch_size": "25", "dry_run": "on", "param-sleep": "0.5", "param-poison_id": "7"}
        ),
    )

    run = BackfillRun.objects.get()
    assert response.status_code == 302
    assert response["Location"] == url("change", run.pk)
    assert (run.backfill_name, run.status, run.batch_size, run.dry_run, run.created_by) == (
        "touch-items",
        Status.PENDING,
        25,
        True,
        "ops-bob",
    )
    assert run.params == {"sleep": 0.5, "poison_id": 7, "transient": False}
    assert run.workflow_id == f"{temporal.workflow_id_prefix}touch-items"
    assert run.workflow_run_id
    assert state(run.pk)[-1] == [("pending", "ops-bob")]
    assert messages_of(response) == [
        ("ok", f"Started run {run.pk} of touch-items (workflow {run.workflow_id})."),
    ]


def test_start_with_the_default_batch_size_and_no_parameters(client, login, temporal):
    login(VIEW, START)

    response = client.post(url("start"), {"backfill": "copy-comments-to-search"})

    run = BackfillRun.objects.get()
    assert response["Location"] == url("change", run.pk)
    assert (run.batch_size, run.params, run.dry_run) == (1000, {}, False)


def test_start_while_another_run_is_active_shows_the_conflict(client, login, temporal):
    active = make_run(Status.PAUSED)
    login(VIEW, START)

    response = client.post(url("start"), start_data({"batch_size": "10"}))
    text = page(response)

    errors = response.context["form"].non_field_errors()
    assert len(errors) == 1
    assert f"already has an active run: #{active.pk} (paused)" in errors[0]
    assert html.escape(errors[0]) in text
    assert counts() == (1, 0)


def test_start_with_temporal_unreachable_shows_an_error(client, login, settings):
    settings.TEMPORAL_ADDRESS = "127.0.0.1:1"
    login(VIEW, START)

    response = client.post(url("start"), start_data({"batch_size": "10"}))
    page(response)

    errors = response.context["form"].non_field_errors()
    assert len(errors) == 1
    assert errors[0].startswith("Cannot reach Temporal at 127.0.0.1:1")
    assert counts() == (0, 0)


# --- the run list and the live endpoint: queries do not grow with the runs --------------


def finished_runs(first: int, count: int) -> list[BackfillRun]:
    statuses = [Status.SUCCEEDED, Status.FAILED, Status.CANCELLED]
    return BackfillRun.objects.bulk_create(
        BackfillRun(
            backfill_name=f"backfill-{i % 7}",
            batch_size=100,
            status=statuses[i % 3],
            rows_processed=50,
            rows_total=200,
            workflow_id=f"wf-{i}",
            workflow_run_id=f"run-{i}",
            last_heartbeat_at=timezone.now(),
        )
        for i in range(first, first + count)
    )


def queries_of(client: Client, path: str) -> tuple[int, Any]:
    with CaptureQueriesContext(connection) as queries:
        response = client.get(path)
    assert response.status_code == 200
    return len(queries), response


def test_run_list_queries_do_not_grow_with_the_runs(client, login, settings):
    settings.TEMPORAL_UI_URL = "https://temporal.example.com"
    login(VIEW, CONTROL)
    finished_runs(0, 8)
    make_run(Status.RUNNING, "touch-items", rows_per_second=10.0, rows_total=100)
    make_run(Status.PAUSED, "touch-events")
    client.get(url("changelist"))  # sessions, content types: cached from here on

    few, _ = queries_of(client, url("changelist"))
    finished_runs(10, 4990)
    many, response = queries_of(client, url("changelist"))

    assert response.context["cl"].result_count == 5000
    assert few == many
    newest = BackfillRun.objects.order_by("-created_at", "-id").first()
    assert newest is not None and newest.workflow_id == "wf-4999"
    text = response.content.decode()
    assert re.search(
        rf'<div class="bf-progress" data-bf-run="{newest.pk}" data-bf-field="progress" '
        r'role="progressbar"[^>]*aria-valuenow="25.0"',
        text,
    )
    assert (
        '<a href="https://temporal.example.com/namespaces/default/workflows/wf-4999/run-4999/'
        'history" target="_blank" rel="noopener">wf-4999</a>'
    ) in text


def test_live_queries_do_not_grow_with_the_ids(client, login):
    login(VIEW)
    runs = finished_runs(0, 200)
    ids = [run.pk for run in runs]
    client.get(f"{url('live')}?ids={ids[0]}")

    few, _ = queries_of(client, f"{url('live')}?ids={ids[0]},{ids[1]}")
    many, response = queries_of(client, f"{url('live')}?ids={','.join(map(str, ids))}")

    assert len(response.json()["runs"]) == 200
    assert few == many


# --- the run page -----------------------------------------------------------------------


def failed_run_with_history() -> BackfillRun:
    run = make_run(
        Status.FAILED,
        "touch-events",
        params={"sleep": 0.0, "poison_id": 7},
        cursor=["2024-05-01T12:00:00+00:00", 40],
        rows_processed=40,
        workflow_id="test-wf-touch-events",
        workflow_run_id="run-abc",
        error={
            "class": "ValueError",
            "message": "poisoned <row> 7",
            "traceback": 'Traceback (most recent call last):\n  File "x.py"\nValueError',
            "cursor": ["2024-05-01T12:00:00+00:00", 40],
        },
    )
    for minute, (old, new, by) in enumerate(
        [("", "pending", "alice"), ("pending", "running", "worker"), ("running", "failed", "")]
    ):
        StatusChange.objects.create(
            run=run,
            from_status=old,
            to_status=new,
            changed_by=by,
            changed_at=datetime(2024, 5, 1, 9, 15 + minute, tzinfo=UTC),
        )
    return run


def test_run_page_shows_cursor_parameters_error_history_and_temporal_link(admin_client, settings):
    settings.TEMPORAL_UI_URL = "https://temporal.example.com/"
    settings.TEMPORAL_NAMESPACE = "ops"
    run = failed_run_with_history()

    text = page(admin_client.get(url("change", run.pk)))

    assert readonly_pre(text, "cursor_display") == ["2024-05-01T12:00:00+00:00", 40]
    assert readonly_pre(text, "params_display") == {"sleep": 0.0, "poison_id": 7}
    assert (
        '<div class="bf-error"><strong>ValueError</strong>: poisoned &lt;row&gt; 7<br>'
        "Failing batch after cursor "
        "<code>[&quot;2024-05-01T12:00:00+00:00&quot;, 40]</code>"
        "<pre>Traceback (most recent call last):\n  File &quot;x.py&quot;\nValueError</pre>"
    ) in text
    assert status_change_rows(text) == [
        {
            "changed_at": "May 1, 2024, 9:15 a.m.",
            "from_status": "-",
            "to_status": "Pending",
            "changed_by": "alice",
            "note": "-",
        },
        {
            "changed_at": "May 1, 2024, 9:16 a.m.",
            "from_status": "Pending",
            "to_status": "Running",
            "changed_by": "worker",
            "note": "-",
        },
        {
            "changed_at": "May 1, 2024, 9:17 a.m.",
            "from_status": "Running",
            "to_status": "Failed",
            "changed_by": "-",
            "note": "-",
        },
    ]
    link = (
        "https://temporal.example.com/namespaces/ops/workflows/test-wf-touch-events/run-abc/history"
    )
    assert f'<li><a href="{link}" target="_blank" rel="noopener">Open in Temporal</a></li>' in text
    assert f'<a href="{link}" target="_blank" rel="noopener">test-wf-touch-events</a>' in text


def test_run_page_without_error_or_workflow(admin_client):
    run = make_run(Status.PENDING)
    text = page(admin_client.get(url("change", run.pk)))

    assert "bf-error" not in text
    assert "Open in Temporal" not in text
    assert readonly_pre(text, "cursor_display") is None


def test_viewer_sees_the_status_changes(client, login):
    login(VIEW, CONTROL)
    run = failed_run_with_history()

    text = page(client.get(url("change", run.pk)))

    assert [row["changed_by"] for row in status_change_rows(text)] == ["alice", "worker", "-"]


# --- the live endpoint ------------------------------------------------------------------


def test_live_returns_the_requested_runs_only(client, login, settings):
    settings.BACKFILLS_HEARTBEAT_TIMEOUT = 30
    login(VIEW)
    now = timezone.now()
    fresh = make_run(
        Status.RUNNING,
        "touch-items",
        rows_processed=1234,
        rows_total=5000,
        rows_per_second=12.4,
        last_heartbeat_at=now - timedelta(seconds=5),
    )
    silent = make_run(
        Status.RUNNING,
        "touch-events",
        rows_processed=10,
        last_heartbeat_at=now - timedelta(minutes=2),
    )
    done = make_run(Status.SUCCEEDED, "touch-uuid-items", rows_processed=7, rows_total=7)
    make_run(Status.PAUSED, "touch-odd-items")  # not asked for

    response = client.get(f"{url('live')}?ids={fresh.pk}, {silent.pk},{done.pk},999999,x")

    assert response.status_code == 200
    runs = response.json()["runs"]
    assert set(runs) == {str(fresh.pk), str(silent.pk), str(done.pk)}
    heartbeats = {key: run.pop("heartbeat") for key, run in runs.items()}
    assert runs[str(fresh.pk)] == {
        "id": fresh.pk,
        "status": "running",
        "status_label": "Running",
        "active": True,
        "percent": 24.7,
        "rows": "1,234 / 5,000",
        "rate": "12 rows/s",
        "eta": "5m 04s",  # 3,766 rows left at 12.4 rows/s
        "stale": False,
        "actions": ["pause", "cancel"],
        "throttled": "",
        "batch_size": 10,
    }
    assert re.fullmatch(r"[5-9]s ago", heartbeats[str(fresh.pk)])
    assert runs[str(silent.pk)]["stale"] is True
    assert (runs[str(silent.pk)]["percent"], runs[str(silent.pk)]["rows"]) == (None, "10 / ?")
    assert re.fullmatch(r"2m 0\ds ago", heartbeats[str(silent.pk)])
    assert runs[str(done.pk)] == {
        "id": done.pk,
        "status": "succeeded",
        "status_label": "Succeeded",
        "active": False,
        "percent": 100.0,
        "rows": "7 / 7",
        "rate": "–",
        "eta": "–",
        "stale": False,
        "actions": [],
        "throttled": "",
        "batch_size": 10,
    }
    assert heartbeats[str(done.pk)] == "–"


@pytest.mark.parametrize(
    ("status", "timeout", "age", "stale"),
    [
        (Status.RUNNING, 30, 60, True),
        (Status.RUNNING, 30, 10, False),
        (Status.RUNNING, 120, 60, False),
        (Status.CANCELLING, 30, 60, True),
        (Status.PAUSED, 30, 60, False),  # no worker should be heartbeating a paused run
    ],
)
def test_live_marks_runs_stale_after_the_heartbeat_timeout(
    client, login, settings, status, timeout, age, stale
):
    settings.BACKFILLS_HEARTBEAT_TIMEOUT = timeout
    login(VIEW)
    run = make_run(status, last_heartbeat_at=timezone.now() - timedelta(seconds=age))

    runs = client.get(f"{url('live')}?ids={run.pk}").json()["runs"]

    assert runs[str(run.pk)]["stale"] is stale


def test_live_refuses_post(admin_client):
    run = make_run()
    response = admin_client.post(f"{url('live')}?ids={run.pk}")
    assert response.status_code == 405
    assert response["Allow"] == "GET"


def test_live_ignores_ids_that_are_not_numbers(admin_client):
    run = make_run()
    response = admin_client.get(f"{url('live')}?ids={run.pk},²")
    assert response.status_code == 200
    assert set(response.json()["runs"]) == {str(run.pk)}


# --- the registered backfills page ------------------------------------------------------


def registered_row(text: str, name: str) -> str:
    match = re.search(rf"<td><strong>{re.escape(name)}</strong></td>(.*?)</tr>", text, re.S)
    assert match, f"{name} is not listed"
    return match.group(1)


@pytest.mark.parametrize(("permissions", "can_start"), [((VIEW,), False), ((VIEW, START), True)])
def test_registered_page_lists_every_backfill(client, login, permissions, can_start):
    login(*permissions)
    make_run(Status.SUCCEEDED, "touch-items")
    latest = make_run(Status.FAILED, "touch-items")

    text = page(client.get(url("registered")))

    for backfill in registry.all():
        row = registered_row(text, backfill.name)
        assert f"<td>{backfill.model._meta.label}</td>" in row
        start_link = f'href="{url("start")}?backfill={backfill.name}"'
        assert (start_link in row) is can_start
    expected = {
        "touch-items": ("testapp.Item", 100, "pk"),
        "touch-uuid-items": ("testapp.UUIDItem", 100, "pk"),
        "touch-events": ("testapp.Event", 100, "created_at, id"),
        "copy-comments-to-search": ("example.Comment", 1000, "pk"),
    }
    for name, (label, batch_size, cursor) in expected.items():
        row = registered_row(text, name)
        assert f"<td>{label}</td>" in row
        assert f"<td>{batch_size}</td>" in row
        assert f"<td><code>{cursor}</code></td>" in row
    touch_items = registered_row(text, "touch-items")
    assert f'href="{url("change", latest.pk)}">#{latest.pk}</a>' in touch_items
    assert '<span class="bf-badge bf-failed">Failed</span>' in touch_items
    assert "bf-badge" not in registered_row(text, "touch-events")


# --- bulk actions -----------------------------------------------------------------------


def test_bulk_pause_pauses_the_selected_runs_and_reports_refusals(client, login, temporal):
    items = services.start("touch-items", batch_size=10)
    uuids = services.start("touch-uuid-items", batch_size=10)
    done = make_run(Status.SUCCEEDED, "touch-events")
    untouched = make_run(Status.PENDING, "touch-odd-items")
    before = {run.pk: state(run.pk) for run in (done, untouched)}
    login(VIEW, CONTROL, username="ops-carol")

    response = client.post(
        url("changelist"),
        {"action": "pause_selected", "_selected_action": [items.pk, uuids.pk, done.pk]},
    )

    assert response.status_code == 302
    assert messages_of(response) == [
        ("ok", "pause: 2 run(s)."),
        ("warning", f"Cannot pause run {done.pk} (touch-events): it is succeeded. It is finished."),
    ]
    for run in (items, uuids):
        assert state(run.pk)[0] == Status.PAUSING
        assert state(run.pk)[-1] == [("pending", ""), ("pausing", "ops-carol")]
    assert {run.pk: state(run.pk) for run in (done, untouched)} == before
