"""Throughput of a Python-transform backfill through the whole stack, against hand-written
baselines, on PostgreSQL with the app's default settings.

    make bench                          # 1,000,000 rows; make bench ROWS=100000
    python -m bench.throughput --rows 200000

Every measurement sets `testapp_item.value = value * 2 + 1` for the rows it covers, in
batches of 1000 where it batches, after the column is reset (`UPDATE ... SET value = 0`,
`VACUUM ANALYZE`, a checkpoint where allowed: outside the timing; autovacuum is off for the
table, so it cannot land in one measurement and not another), and is checked afterwards.

- full stack: `services.start("bench-transform")` run by a real `run_backfill_worker` process
  (tests/testapp/backfills.py; `backfills.writes.bulk_update`); rows/s from the run's
  started_at/finished_at, the workflow's history length, and the worker's peak RSS (VmHWM)
  for 100,000 rows and for all rows, each in a fresh worker;
- (a) a keyset loop in Python with one `UPDATE ... FROM unnest(...)` per batch: the target;
- (a') the same loop over model instances read with the ORM (Django builds them), written with
  `backfills.writes.bulk_update`; no Temporal, no checkpoint. Between (a) and (a') is the
  ORM's price for model instances; the full stack builds them itself, faster;
- (b) the same loop with Django's `bulk_update()`;
- (c) the same loop with `save(update_fields=...)` per row, on a capped sample;
- (d) one `UPDATE` statement for the whole table: the ceiling;
- (e) keyset batches done in SQL (`UPDATE ... WHERE id > %s AND id <= %s`): what a
  set-based backfill should reach (compared with `bench-set-based`, an `UpdateBackfill`);
- (f) one Temporal activity per batch (bench/one_activity_per_batch.py), capped;
- pause latency with fast batches (bench/pause_latency.py).

The comparisons the targets are about (full stack and (a), set-based and (e)) run
`--repeats` times (3), interleaved, each time after the same reset; the median of each is
reported with the spread, since a shared 2-core machine can swing one run by 20%. The rest
run once.

With DEBUG off (DJANGO_DEBUG=false unless set), as in production. Printed, written to
bench/results/throughput.json and drawn in bench/results/throughput.png.
Not asserted: the targets (full stack >= 0.9x of (a) and >= 8x of (b), set-based >= 0.85x of
(e)) are printed as met or missed.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.support import (
    RESULTS,
    positive_int,
    setup_django,
    temporal,
    worker_process,
    write_results,
)

BATCH_SIZE = 1000
SMALL_RUN_ROWS = 100_000
SAVE_SAMPLE_ROWS = 20_000
PER_BATCH_ACTIVITY_BATCHES = 100
#: touch-items must still be running through every pause/resume cycle.
PAUSE_ROWS = 3_000_000
TASK_QUEUE = "bench-throughput"
TARGETS = {"a": 0.9, "b": 8.0}
SET_BASED_TARGET = 0.85


# --- the table --------------------------------------------------------------------------


def sql(statement: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(statement, params)
        return cursor.fetchall() if cursor.description else []


def insert_rows(count: int, first_id: int = 1) -> None:
    sql(
        "INSERT INTO testapp_item (id, value, visits) "
        "SELECT g, 0, 0 FROM generate_series(%s::bigint, %s::bigint) g",
        [first_id, first_id + count - 1],
    )
    # Explicit ids: keep the identity sequence past them for rows created later.
    sql("SELECT setval(pg_get_serial_sequence('testapp_item', 'id'), %s)", [first_id + count - 1])
    # Each measurement leaves a dead version of every row; autovacuum would clean them up
    # during whichever measurement comes next, at random. reset() vacuums between them.
    sql("ALTER TABLE testapp_item SET (autovacuum_enabled = false)")
    sql("VACUUM ANALYZE testapp_item")


def reset() -> None:
    """Every row back to value 0, with the table vacuumed and (if allowed) a checkpoint, so
    that each measurement starts alike and pays for none of this."""
    from django.db import DatabaseError

    sql("UPDATE testapp_item SET value = 0")
    sql("VACUUM ANALYZE testapp_item")
    # Flush the reset's dirty pages now rather than during the next timed run. Needs superuser
    # or pg_checkpoint; without it the vacuum still evens the runs out.
    with contextlib.suppress(DatabaseError):
        sql("CHECKPOINT")


def check_done(done: int, total: int) -> None:
    """Exactly the first `done` rows hold the transformed value (0 * 2 + 1), the rest 0."""
    counts = dict(sql("SELECT value, count(*) FROM testapp_item GROUP BY value"))
    expected = {value: n for value, n in ((1, done), (0, total - done)) if n}
    if counts != expected:
        raise AssertionError(f"expected value counts {expected}, found {counts}")
    if done < total:
        (first_untouched,) = sql("SELECT min(id) FROM testapp_item WHERE value = 0")[0]
        if first_untouched != done + 1:
            raise AssertionError(f"rows past the first {done:,} were changed")


def measurement(
    key: str, label: str, rows: int, seconds: float, kind: str = "baseline", **extra: Any
) -> dict[str, Any]:
    return {
        "key": key,
        "label": label,
        "kind": kind,
        "rows": rows,
        "seconds": seconds,
        "rows_per_second": rows / seconds if seconds else None,
        **extra,
    }


# --- the full stack ---------------------------------------------------------------------


def wait_for_run(run_id: int, timeout: float) -> Any:
    from backfills.models import BackfillRun

    deadline = time.monotonic() + timeout
    while True:
        run = BackfillRun.objects.get(pk=run_id)
        if run.is_finished:
            return run
        if time.monotonic() > deadline:
            raise TimeoutError(f"run {run_id} not finished after {timeout:.0f} s: {run.status}")
        time.sleep(0.2)  # polling the run row is a query; keep it out of the way


def peak_rss_mib(pid: int) -> float:
    """The process's RSS high-water mark (VmHWM), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024  # kB
    raise RuntimeError(f"no VmHWM in /proc/{pid}/status")


def history_events(run: Any) -> int:
    from temporalio.client import Client

    from backfills.temporal.client import with_client

    async def fetch(client: Client) -> int:
        handle = client.get_workflow_handle(run.workflow_id, run_id=run.workflow_run_id or None)
        # The run row says "succeeded" a moment before the workflow itself completes.
        await handle.result()
        history = await handle.fetch_history()
        return len(history.events)

    return with_client(fetch)


def run_backfill(name: str, params: dict[str, Any], expected_rows: int) -> tuple[Any, float]:
    """Start a run, wait for it to succeed; the run and its started-to-finished seconds."""
    from backfills import services
    from backfills.models import Status

    run = services.start(name, params=params)
    run = wait_for_run(run.pk, timeout=max(600.0, expected_rows / 200))
    if run.status != Status.SUCCEEDED:
        raise RuntimeError(f"run {run.pk} of {name} ended {run.status}: {run.error}")
    if run.rows_processed != expected_rows:
        raise AssertionError(f"run {run.pk} processed {run.rows_processed:,} of {expected_rows:,}")
    return run, (run.finished_at - run.started_at).total_seconds()


def full_stack(
    key: str, rows: int, total: int, label: str, then: Callable[[], None] | None = None
) -> dict[str, Any]:
    """`bench-transform` over the first `rows` rows in a fresh worker process."""
    reset()
    params = {} if rows == total else {"up_to_id": rows}
    with worker_process(RESULTS / f"throughput.worker-{rows}.log") as worker:
        run, seconds = run_backfill("bench-transform", params, rows)
        peak = peak_rss_mib(worker.pid)  # before anything else runs in this worker
        events = history_events(run)
        check_done(rows, total)
        if then is not None:
            then()
    return measurement(
        key,
        label,
        rows,
        seconds,
        kind="backfill",
        history_events=events,
        worker_peak_rss_mib=peak,
        run_id=run.pk,
    )


def set_based(total: int) -> dict[str, Any]:
    """`bench-set-based` (an UpdateBackfill) over every row."""
    reset()
    run, seconds = run_backfill("bench-set-based", {}, total)
    check_done(total, total)
    return measurement(
        "set_based",
        "set-based: worker + bench-set-based (UpdateBackfill)",
        total,
        seconds,
        kind="backfill",
        history_events=history_events(run),
        run_id=run.pk,
    )


# --- baselines --------------------------------------------------------------------------


def timed(work: Callable[[], int]) -> tuple[int, float]:
    started = time.perf_counter()
    rows = work()
    return rows, time.perf_counter() - started


def unnest_loop() -> int:
    """(a) Keyset SELECT, transform in Python, one UPDATE ... FROM unnest; a transaction each."""
    from django.db import connection, transaction

    # As one would write it by hand, types spelled out (testapp's ids are bigint).
    update = (
        "UPDATE testapp_item SET value = v.value FROM (SELECT unnest(%s::bigint[]) AS id, "
        "unnest(%s::integer[]) AS value) AS v WHERE testapp_item.id = v.id"
    )
    last, done = 0, 0
    while True:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(
                "SELECT id, value FROM testapp_item WHERE id > %s ORDER BY id LIMIT %s",
                [last, BATCH_SIZE],
            )
            batch = cursor.fetchall()
            if not batch:
                return done
            cursor.execute(update, [[row[0] for row in batch], [row[1] * 2 + 1 for row in batch]])
        last, done = batch[-1][0], done + len(batch)


def orm_loop(write: Callable[[list[Any]], None], up_to_id: int | None = None) -> int:
    """(a'), (b), (c): keyset batches of Item instances, transformed, written by `write`."""
    from django.db import transaction

    from tests.testapp.models import Item

    items = Item.objects.all() if up_to_id is None else Item.objects.filter(id__lte=up_to_id)
    last, done = 0, 0
    while True:
        with transaction.atomic():
            batch = list(items.filter(id__gt=last).order_by("id")[:BATCH_SIZE])
            if not batch:
                return done
            for item in batch:
                item.value = item.value * 2 + 1
            write(batch)
        last, done = batch[-1].id, done + len(batch)


def writes_bulk_update(batch: list[Any]) -> None:
    from backfills.writes import bulk_update

    bulk_update(batch, ["value"])


def django_bulk_update(batch: list[Any]) -> None:
    from tests.testapp.models import Item

    Item.objects.bulk_update(batch, ["value"])


def save_each(batch: list[Any]) -> None:
    for item in batch:
        item.save(update_fields=["value"])


def single_statement() -> int:
    """(d) The whole table in one UPDATE."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("UPDATE testapp_item SET value = value * 2 + 1")
        return int(cursor.rowcount)


def sql_keyset_batches() -> int:
    """(e) Per batch: the upper id of the next 1000 rows, then one UPDATE of that id range."""
    from django.db import connection, transaction

    last, done = 0, 0
    while True:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(
                "SELECT max(id) FROM (SELECT id FROM testapp_item WHERE id > %s "
                "ORDER BY id LIMIT %s) AS batch",
                [last, BATCH_SIZE],
            )
            (upper,) = cursor.fetchone() or (None,)
            if upper is None:
                return done
            cursor.execute(
                "UPDATE testapp_item SET value = value * 2 + 1 WHERE id > %s AND id <= %s",
                [last, upper],
            )
            done += cursor.rowcount
        last = upper


def baseline_a(total: int) -> dict[str, Any]:
    reset()
    rows, seconds = timed(unnest_loop)
    check_done(total, total)
    return measurement("a", "(a) keyset loop + UPDATE ... FROM unnest", rows, seconds)


def baseline_e(total: int) -> dict[str, Any]:
    reset()
    rows, seconds = timed(sql_keyset_batches)
    check_done(total, total)
    return measurement("e", "(e) keyset batches in SQL (UPDATE id range)", rows, seconds)


def baselines(total: int) -> list[dict[str, Any]]:
    """The baselines measured once: (a'), (b), (c), (d), (f)."""
    from bench import one_activity_per_batch

    results = []

    reset()
    rows, seconds = timed(lambda: orm_loop(writes_bulk_update))
    check_done(total, total)
    results.append(
        measurement("a_orm", "(a') keyset loop of instances + writes.bulk_update", rows, seconds)
    )

    reset()
    rows, seconds = timed(lambda: orm_loop(django_bulk_update))
    check_done(total, total)
    results.append(measurement("b", "(b) keyset loop + Django bulk_update()", rows, seconds))

    sample = min(SAVE_SAMPLE_ROWS, total)
    reset()
    rows, seconds = timed(lambda: orm_loop(save_each, up_to_id=sample))
    check_done(sample, total)
    results.append(
        measurement(
            "c",
            f"(c) keyset loop + save() per row (first {sample:,} rows)",
            rows,
            seconds,
            sampled=True,
        )
    )

    reset()
    rows, seconds = timed(single_statement)
    check_done(total, total)
    results.append(measurement("d", "(d) one UPDATE statement", rows, seconds))

    capped = min(total, PER_BATCH_ACTIVITY_BATCHES * BATCH_SIZE)
    reset()
    per_batch = one_activity_per_batch.measure(capped, BATCH_SIZE, f"{TASK_QUEUE}-per-batch")
    check_done(capped, total)
    results.append(
        measurement(
            "f",
            f"(f) one activity per batch (first {capped:,} rows)",
            capped,
            per_batch["seconds"],
            sampled=capped < total,
            batches=per_batch["batches"],
            history_events=per_batch["history_events"],
            history_events_projected=round(
                per_batch["history_events"] * (total / BATCH_SIZE) / max(per_batch["batches"], 1)
            ),
        )
    )
    return results


def median(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median rate, with every run's rate alongside."""
    ranked = sorted(runs, key=lambda m: m["rows_per_second"])
    chosen = dict(ranked[(len(ranked) - 1) // 2])
    chosen["runs_rows_per_second"] = [m["rows_per_second"] for m in runs]
    return chosen


# --- report -----------------------------------------------------------------------------


def ratios(full: dict[str, Any], others: list[dict[str, Any]]) -> dict[str, float]:
    return {
        other["key"]: full["rows_per_second"] / other["rows_per_second"]
        for other in others
        if other["rows_per_second"]
    }


def report(results: dict[str, Any]) -> None:
    by_key = {m["key"]: m for m in results["measurements"]}
    full = by_key["full_stack"]
    print()
    print(
        f"Throughput over {results['rows']:,} rows of testapp_item, batches of "
        f"{results['batch_size']:,}, PostgreSQL {results['postgresql']}"
    )
    print(f"  {'':<58} {'rows/s':>10}  {'full stack is':>13}")
    for m in results["measurements"]:
        ratio = results["ratios"].get(m["key"])
        target = TARGETS.get(m["key"])
        verdict = ""
        if ratio is not None and target is not None:
            verdict = f"  (target >= {target}x: {'met' if ratio >= target else 'MISSED'})"
        shown = f"{ratio:.2f}x" if ratio is not None else ""
        note = " *" if m.get("sampled") else (" †" if m.get("runs_rows_per_second") else "")
        print(f"  {m['label'] + note:<58} {m['rows_per_second']:>10,.0f}  {shown:>13}{verdict}")
    print("  * measured on the sample named, rate = sample rows / its seconds")
    repeated = [m for m in results["measurements"] if m.get("runs_rows_per_second")]
    if repeated:
        print(f"  † median of {len(repeated[0]['runs_rows_per_second'])} interleaved runs:")
        for m in repeated:
            runs = ", ".join(f"{rate:,.0f}" for rate in m["runs_rows_per_second"])
            print(f"      {m['key']}: {runs}")
    set_based = by_key["set_based"]
    ratio = set_based["rows_per_second"] / by_key["e"]["rows_per_second"]
    print(
        f"  set-based backfill vs (e) keyset batches in SQL: {ratio:.2f}x "
        f"(target >= {SET_BASED_TARGET}x: {'met' if ratio >= SET_BASED_TARGET else 'MISSED'})"
    )

    small = results["full_stack_small"]
    per_batch = by_key["f"]
    print("History events:")
    print(
        f"  full stack: {small['history_events']} at {small['rows']:,} rows, "
        f"{full['history_events']} at {full['rows']:,} rows"
    )
    print(
        f"  one activity per batch: {per_batch['history_events']:,} for "
        f"{per_batch['batches']} batches (about {per_batch['history_events_projected']:,} "
        f"for {results['rows']:,} rows)"
    )
    memory = results["worker_peak_rss_mib"]
    print(
        f"Worker peak RSS (VmHWM, fresh worker each): {memory['small']:.1f} MiB at "
        f"{small['rows']:,} rows, {memory['full']:.1f} MiB at {full['rows']:,} rows "
        f"({memory['growth_percent']:+.1f}%)"
    )
    pause = results["pause_latency"]
    print(
        f"Pause latency (fast batches, {pause['cycles']} cycles): median "
        f"{pause['median']:.2f} s, min {pause['min']:.2f} s, max {pause['max']:.2f} s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=(__doc__ or "").split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--rows", type=positive_int, default=1_000_000)
    parser.add_argument("--pause-cycles", type=positive_int, default=5)
    parser.add_argument(
        "--repeats", type=positive_int, default=3, help="interleaved runs of the compared pairs"
    )
    args = parser.parse_args()
    total = args.rows
    small_rows = min(SMALL_RUN_ROWS, total)

    # As a production worker runs (and the worker process inherits it). With DEBUG on, Django
    # keeps each connection's last 9,000 queries, and each batch's UPDATE carries its values
    # inline (about 10 kB): that costs time and shows as memory growing with the run.
    os.environ.setdefault("DJANGO_DEBUG", "false")
    setup_django("backfills_bench_throughput")
    from django.db import connection

    from bench import chart, pause_latency

    insert_rows(total)
    (version,) = sql("SHOW server_version")[0]
    RESULTS.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {
        "rows": total,
        "small_rows": small_rows,
        "batch_size": BATCH_SIZE,
        "postgresql": version.split()[0],
        "database": connection.settings_dict["NAME"],
    }
    measurements: list[dict[str, Any]] = []

    with temporal(TASK_QUEUE):
        print(f"full stack over {small_rows:,} rows ...", flush=True)
        small = full_stack(
            "full_stack_small", small_rows, total, f"full stack, first {small_rows:,} rows"
        )
        rounds: dict[str, list[dict[str, Any]]] = {
            "full_stack": [],
            "set_based": [],
            "a": [],
            "e": [],
        }
        for number in range(1, args.repeats + 1):
            print(
                f"round {number}/{args.repeats} over {total:,} rows: full stack, set-based, "
                f"(a), (e) ...",
                flush=True,
            )
            rounds["full_stack"].append(
                full_stack(
                    "full_stack",
                    total,
                    total,
                    "full stack: worker + bench-transform (writes.bulk_update)",
                    # In the same worker, once its peak memory is read.
                    then=lambda: rounds["set_based"].append(set_based(total)),
                )
            )
            rounds["a"].append(baseline_a(total))
            rounds["e"].append(baseline_e(total))
        full = median(rounds["full_stack"])
        measurements.append(full)
        if small_rows != total:
            measurements.append(small)
        measurements.append(median(rounds["set_based"]))
        measurements.append(median(rounds["a"]))
        print("other baselines ...", flush=True)
        measurements.extend(baselines(total))
        measurements.append(median(rounds["e"]))

        print("pause latency ...", flush=True)
        if total < PAUSE_ROWS:
            insert_rows(PAUSE_ROWS - total, first_id=total + 1)
        with worker_process(RESULTS / "throughput.worker-pause.log"):
            pause = pause_latency.measure(0.0, args.pause_cycles)

    results["measurements"] = measurements
    # The smaller run, also under its own key: its events and memory are reported apart.
    results["full_stack_small"] = small
    others = [m for m in measurements if m["kind"] == "baseline"]
    results["ratios"] = ratios(full, others)
    results["worker_peak_rss_mib"] = {
        "small": small["worker_peak_rss_mib"],
        "full": full["worker_peak_rss_mib"],
        "growth_percent": 100
        * (full["worker_peak_rss_mib"] - small["worker_peak_rss_mib"])
        / small["worker_peak_rss_mib"],
    }
    results["pause_latency"] = pause
    report(results)
    print(f"written to {write_results('throughput', results)}")
    drawn = chart.draw(results, RESULTS / "throughput.png")
    print(
        f"chart in {drawn}"
        if drawn
        else "no chart: matplotlib is missing (pip install -r requirements-bench.txt)"
    )


if __name__ == "__main__":
    main()
