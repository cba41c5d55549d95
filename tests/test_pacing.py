"""Adaptive batch size and throttling, on the batch loop itself."""

from __future__ import annotations

from typing import Any

import pytest

from backfills.checkpoint import Lease
from backfills.models import BackfillRun, Status
from backfills.pacing import MAX_GROWTH, MAX_SHRINK, BatchSizer, DatabaseHealth
from backfills.runner import BatchRunner, StopRequested
from tests.testapp.backfills import TouchItems
from tests.testapp.models import Item

pytestmark = pytest.mark.django_db


def make_run(name: str, batch_size: int, **fields: Any) -> BackfillRun:
    return BackfillRun.objects.create(backfill_name=name, batch_size=batch_size, **fields)


def test_batch_sizer_grows_and_shrinks_within_its_caps():
    sizer = BatchSizer(100, target_seconds=1.0, minimum=10, maximum=1000)
    sizes = [sizer.record(sizer.size, 0.01) for _ in range(30)]  # far too fast: grow
    assert all(b <= round(a * MAX_GROWTH) for a, b in zip([100, *sizes], sizes, strict=False))
    assert sizes[-1] == 1000  # reached the maximum, not beyond

    slow = [sizer.record(sizer.size, 100.0) for _ in range(20)]  # far too slow: shrink
    assert all(b >= round(a * MAX_SHRINK) for a, b in zip([1000, *slow], slow, strict=False))
    assert slow[-1] == 10


def test_batch_sizer_settles_near_the_target():
    sizer = BatchSizer(50, target_seconds=0.5, minimum=1, maximum=100_000)
    for _ in range(60):
        sizer.record(sizer.size, sizer.size * 0.001)  # 1 ms per row: 500 rows per 0.5 s
    assert 450 <= sizer.size <= 550


def test_batch_sizer_without_target_keeps_the_size_and_ignores_short_batches():
    fixed = BatchSizer(100, target_seconds=None, minimum=1, maximum=1000)
    assert fixed.record(100, 50.0) == 100
    adaptive = BatchSizer(100, target_seconds=1.0, minimum=1, maximum=1000)
    assert adaptive.record(7, 0.0001) == 100  # the last, short batch says nothing of pace


class AdaptiveTouch(TouchItems):
    name = "adaptive-touch"
    target_batch_seconds = 0.05
    min_batch_size = 5
    max_batch_size = 400


def test_adaptive_run_records_the_batch_size_in_use(registered):
    registered(AdaptiveTouch)
    Item.objects.bulk_create(Item(value=i) for i in range(3000))
    run = make_run("adaptive-touch", 10)
    seen: list[int] = []

    def heartbeat(progress: Any) -> None:
        seen.append(BackfillRun.objects.get(pk=run.pk).current_batch_size or 0)

    BatchRunner(run.pk, Lease(1, 1), heartbeat=heartbeat).run()

    sizes = [size for size in seen if size]
    assert sizes[0] == 10
    assert max(sizes) > 10, "fast batches should have grown the size"
    assert max(sizes) <= 400
    assert set(Item.objects.values_list("visits", flat=True)) == {1}


class HookThrottled(TouchItems):
    name = "hook-throttled"
    asked: list[str] = []

    def throttle(self) -> Any:
        # The run row shows the reason while the hold lasts.
        shown = BackfillRun.objects.get(backfill_name=self.name).throttled_reason
        HookThrottled.asked.append(shown)
        if len(HookThrottled.asked) <= 2:
            return (0.05, "maintenance window")
        return None


def test_throttle_hook_holds_batches_and_shows_why(registered):
    registered(HookThrottled)
    HookThrottled.asked = []
    Item.objects.bulk_create(Item(value=i) for i in range(20))
    run = make_run("hook-throttled", 10)

    BatchRunner(run.pk, Lease(1, 1)).run()

    assert HookThrottled.asked[:3] == ["", "maintenance window", "maintenance window"]
    run.refresh_from_db()
    assert run.throttled_reason == ""
    assert run.status == Status.SUCCEEDED


class RateCapped(TouchItems):
    name = "rate-capped"
    max_rows_per_second = 1000


def test_rate_cap_holds_between_batches_and_a_pause_still_stops_it(registered):
    registered(RateCapped)
    Item.objects.bulk_create(Item(value=i) for i in range(5000))
    run = make_run("rate-capped", 500)  # each batch is worth half a second at the cap
    reasons: list[str] = []

    def should_stop() -> str | None:
        # Asked between batches and, while held, every half second at most.
        reasons.append(BackfillRun.objects.get(pk=run.pk).throttled_reason)
        return "cancelled" if reasons[-1] else None

    with pytest.raises(StopRequested):
        BatchRunner(run.pk, Lease(1, 1), should_stop=should_stop).run()

    assert "rate limit 1,000 rows/s" in reasons
    run.refresh_from_db()
    assert run.batches_processed == 1, "the pause landed during the hold, before batch 2"


def test_database_health_reads_postgres_statistics():
    health = DatabaseHealth.for_table(
        "default", "testapp_item", max_replica_lag=-1, max_autovacuum=600, interval=0
    )
    assert health is not None
    hold = health.hold()  # no replicas: the lag is 0, above a limit of -1
    assert hold is not None and hold.reason == "replica lag 0 s > -1 s"

    relaxed = DatabaseHealth.for_table(
        "default", "testapp_item", max_replica_lag=30, max_autovacuum=600, interval=0
    )
    assert relaxed is not None and relaxed.hold() is None


def test_a_throttled_run_says_why_in_the_admin_data():
    from backfills import live

    running = make_run("touch-items", 10, status=Status.RUNNING, throttled_reason="replica lag")
    finished = make_run("touch-uuid-items", 10, status=Status.SUCCEEDED, throttled_reason="x")

    assert live.snapshot(running)["throttled"] == "throttled: replica lag"
    assert "throttled: replica lag" in live.status_badge(running)
    assert live.snapshot(finished)["throttled"] == ""
