"""The operator's admin in a real browser: Playwright driving Debian's headless Chromium
against a live server, with a real worker and a real Temporal dev server.

Screenshots land in test-artifacts/ (kept by CI as the look of the list and a run's page).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.db import connections

from backfills.models import BackfillRun, Status
from tests.temporal_support import ROOT
from tests.testapp.models import Item

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = ROOT / "test-artifacts"

pytestmark = [
    pytest.mark.django_db(transaction=True),
    # Skipped on a bare machine; CI installs Chromium and must never skip it.
    pytest.mark.skipif(
        not shutil.which(CHROMIUM) and not os.environ.get("CI"),
        reason=f"{CHROMIUM} missing: apt-get install chromium",
    ),
]


@pytest.fixture
def browser_page() -> Iterator[object]:
    # Playwright's sync API runs an event loop in this thread; the ORM calls the test makes
    # between browser steps are plain blocking calls, which Django would otherwise refuse.
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--no-first-run",
            ],
        )
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        try:
            yield page
        finally:
            browser.close()
    os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)


@pytest.fixture
def admin_server(transactional_db: None) -> Iterator[str]:
    """A live server of this test's own, stopped (with its database connections) at the end."""
    from django.contrib.staticfiles.handlers import StaticFilesHandler
    from django.test.testcases import LiveServerThread

    thread = LiveServerThread("127.0.0.1", StaticFilesHandler, connections_override={}, port=0)
    thread.daemon = True
    thread.start()
    thread.is_ready.wait()
    if thread.error:
        raise thread.error
    try:
        yield f"http://127.0.0.1:{thread.port}"
    finally:
        thread.terminate()


def screenshot(page, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def progress_of(page) -> float:
    label = page.locator('[data-bf-field="progress"] .bf-progress-label').first.inner_text()
    return -1.0 if label == "?" else float(label.rstrip("%"))


def test_operator_starts_watches_pauses_resumes_a_run(
    worker, admin_server, django_user_model, browser_page
):
    try:
        operate(browser_page, admin_server, django_user_model)
    finally:
        # Django keeps connections per context, and Playwright's sync API runs the test body
        # in a context of its own: close them here, or the test database cannot be dropped.
        connections.close_all()


def operate(page, admin_server: str, django_user_model) -> None:
    from playwright.sync_api import expect

    django_user_model.objects.create_superuser("operator", "op@example.com", "secret-pw")
    Item.objects.bulk_create(Item(value=i) for i in range(6000))

    page.goto(f"{admin_server}/admin/login/")
    page.fill("#id_username", "operator")
    page.fill("#id_password", "secret-pw")
    page.click("input[type=submit]")

    # Start from the runs list: the Start backfill control, the form, its parameters.
    page.goto(f"{admin_server}/admin/backfills/backfillrun/")
    page.click("text=Start backfill")
    page.select_option("#bf-choose-backfill", "touch-items")  # reloads with its parameters
    page.wait_for_selector("#id_param-sleep")
    page.fill("#id_batch_size", "100")
    page.fill("#id_param-sleep", "0.15")
    page.click("input[name=start]")
    expect(page.locator(".messagelist")).to_contain_text("Started run")
    run = BackfillRun.objects.get()

    # The page follows the run by itself: the bar moves with no navigation in between.
    expect(page.locator('[data-bf-field="status"]').first).to_have_text("Running", timeout=30_000)
    page.evaluate("window.bfMarker = 'same page'")
    first = progress_of(page)
    page.wait_for_function(
        f"""() => {{
            const label = document.querySelector('[data-bf-field="progress"] .bf-progress-label');
            return label && parseFloat(label.textContent) > {max(first, 0) + 5};
        }}""",
        timeout=30_000,
    )
    assert page.evaluate("window.bfMarker") == "same page"
    assert progress_of(page) > first
    rate = page.locator('[data-bf-field="rate"]').first.inner_text()
    assert "rows/s" in rate

    page.click("button.bf-action-pause")
    expect(page.locator(".messagelist")).to_contain_text("Pause requested")
    expect(page.locator('[data-bf-field="status"]').first).to_have_text("Paused", timeout=30_000)
    paused = BackfillRun.objects.get(pk=run.pk)
    assert paused.status == Status.PAUSED
    assert 0 < paused.rows_processed < 6000
    assert page.locator("button.bf-action-pause").count() == 0
    screenshot(page, "admin-run-paused")

    page.click("button.bf-action-resume")
    expect(page.locator(".messagelist")).to_contain_text("resumed")
    expect(page.locator('[data-bf-field="status"]').first).to_have_text("Succeeded", timeout=60_000)
    expect(page.locator(".bf-progress-label").first).to_have_text("100.0%")
    done = BackfillRun.objects.get(pk=run.pk)
    assert done.status == Status.SUCCEEDED and done.rows_processed == 6000
    assert list(Item.objects.values_list("visits", flat=True).distinct()) == [1]
    expect(page.locator("#statuschange_set-group, .inline-group").first).to_contain_text("operator")
    screenshot(page, "admin-run")

    page.goto(f"{admin_server}/admin/backfills/backfillrun/")
    expect(page.locator("#result_list")).to_contain_text("touch-items")
    screenshot(page, "admin-list")
    page.emulate_media(color_scheme="dark")
    page.reload()
    screenshot(page, "admin-list-dark")
