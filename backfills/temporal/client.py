"""Connecting to Temporal from sync Django code (commands, services, the admin)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from asgiref.sync import async_to_sync
from temporalio.client import Client

from backfills.conf import backfills_settings
from backfills.exceptions import TemporalUnavailable

T = TypeVar("T")

CONNECT_TIMEOUT_SECONDS = 10


async def connect() -> Client:
    address = backfills_settings.temporal_address
    namespace = backfills_settings.temporal_namespace
    try:
        return await asyncio.wait_for(
            Client.connect(address, namespace=namespace), CONNECT_TIMEOUT_SECONDS
        )
    except Exception as exc:
        raise TemporalUnavailable(
            f"Cannot reach Temporal at {address} (namespace {namespace!r}): {exc}. Start it "
            f"(`temporal server start-dev`, or `make temporal`) or set TEMPORAL_ADDRESS."
        ) from exc


def with_client(operation: Callable[[Client], Awaitable[T]]) -> T:
    """Connect, run `operation(client)` and return its result, from sync code."""

    async def connected() -> T:
        return await operation(await connect())

    return async_to_sync(connected)()
