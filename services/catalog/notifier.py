"""Wakes WatchCatalog streams when a catalog transaction commits (Postgres LISTEN/NOTIFY)."""

from __future__ import annotations

import asyncio
import contextlib

import asyncpg
import structlog

from services.catalog.repository import NOTIFY_CHANNEL
from tally.db import asyncpg_dsn

log = structlog.get_logger()


class ChangeNotifier:
    """One LISTEN connection per process, fanned out to every watcher.

    Watchers also poll on a short timeout, so a lost connection delays changes by at most
    that timeout and never loses them: the changes table, not the notification, is the truth.
    """

    def __init__(self, database_url: str) -> None:
        self._dsn = asyncpg_dsn(database_url)
        self._event = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._draining = False

    @property
    def draining(self) -> bool:
        """True once the server is shutting down: watchers finish their streams."""
        return self._draining

    def ticket(self) -> asyncio.Event:
        """Take before reading the changes table; it is set by any commit after that."""
        return self._event

    async def drain(self) -> None:
        """Wake every watcher so it ends its stream; clients reconnect to a live instance."""
        self._draining = True
        self._notify()

    def _notify(self, *_args) -> None:
        event, self._event = self._event, asyncio.Event()
        event.set()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._listen(), name="catalog-change-listener")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._notify()

    async def _listen(self) -> None:
        backoff = 0.2
        while True:
            conn = None
            try:
                conn = await asyncpg.connect(
                    self._dsn, server_settings={"application_name": "tally-catalog-listen"}
                )
                await conn.add_listener(NOTIFY_CHANNEL, self._notify)
                backoff = 0.2
                # Wake everyone once: anything committed while we were not listening is picked up.
                self._notify()
                while not conn.is_closed():
                    await asyncio.sleep(1.0)
            except asyncio.CancelledError:
                raise
            except Exception as error:  # noqa: BLE001 - keep listening; watchers fall back to polling
                log.warning("catalog_listener_failed", error=str(error), retry_in_seconds=backoff)
            finally:
                if conn is not None and not conn.is_closed():
                    with contextlib.suppress(Exception):
                        await asyncio.shield(conn.close())
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 5.0)
