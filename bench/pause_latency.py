"""Pause latency with the app's default settings: from `services.pause()` returning to the
run being `paused` (its last batch committed), for fast and for slow batches.

    make bench-pause            # or: python -m bench.pause_latency --cycles 10

Latency is bounded by the worker's heartbeat throttle (BACKFILLS_HEARTBEAT_THROTTLE_INTERVAL,
2 s by default: the cancel reaches the activity with a heartbeat's answer) plus the rest of
the batch in flight. Printed, and written to bench/results/pause_latency.json; not asserted.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

from bench.support import (
    RESULTS,
    positive_int,
    setup_django,
    temporal,
    worker_process,
    write_results,
)


def wait_for(condition: Any, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("benchmark step timed out")
        time.sleep(0.01)


def measure(batch_sleep: float, cycles: int) -> dict[str, Any]:
    from backfills import services
    from backfills.conf import backfills_settings
    from backfills.models import BackfillRun, Status

    def status(run_id: int) -> str:
        return BackfillRun.objects.values_list("status", flat=True).get(pk=run_id)

    run = services.start("touch-items", batch_size=500, params={"sleep": str(batch_sleep)})
    wait_for(lambda: BackfillRun.objects.get(pk=run.pk).batches_processed >= 1)
    latencies = []
    for _ in range(cycles):
        time.sleep(max(1.0, 3 * batch_sleep))  # let the resumed activity get going
        started = time.monotonic()
        services.pause(run.pk)
        wait_for(lambda: status(run.pk) == Status.PAUSED)
        latencies.append(time.monotonic() - started)
        services.resume(run.pk)
    services.cancel(run.pk)
    wait_for(lambda: BackfillRun.objects.get(pk=run.pk).is_finished)
    return {
        "batch_seconds": batch_sleep,
        "heartbeat_throttle_seconds": backfills_settings.heartbeat_throttle_interval.seconds,
        "cycles": cycles,
        "min": min(latencies),
        "median": statistics.median(latencies),
        "max": max(latencies),
        "all": latencies,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cycles", type=positive_int, default=8)
    parser.add_argument("--rows", type=positive_int, default=3_000_000)
    args = parser.parse_args()

    setup_django("backfills_bench_pause")
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO testapp_item (value, visits) SELECT g, 0 FROM generate_series(1, %s) g",
            [args.rows],
        )
    RESULTS.mkdir(parents=True, exist_ok=True)
    results = {}
    with temporal("bench-pause"), worker_process(RESULTS / "pause_latency.worker.log"):
        for label, batch_sleep in (("fast batches", 0.0), ("1 s batches", 1.0)):
            result = measure(batch_sleep, args.cycles)
            results[label] = result
            print(
                f"{label:>13}: pause latency median {result['median']:.2f} s, "
                f"min {result['min']:.2f} s, max {result['max']:.2f} s "
                f"({args.cycles} cycles, heartbeat throttle "
                f"{result['heartbeat_throttle_seconds']} s)"
            )
    print(f"written to {write_results('pause_latency', results)}")


if __name__ == "__main__":
    main()
