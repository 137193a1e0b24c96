"""LISTEN/NOTIFY for PostgreSQL: a write on one host wakes what another host waits for.

After a write commits, its repository calls `db.announce(key)` (a NOTIFY of its own); a waiter calls
`changed(key, timeout)`. One thread per process holds one listening connection (LISTEN needs a
session of its own, outside the pool) and hands each notification to the event loop. If it loses the
server, waiters fall back to their timeouts (the poll they replace) until it is back.
"""

from __future__ import annotations

import asyncio
import threading

import psycopg

CHANNEL = "mpgpt"


class Notifications:
    def __init__(self, url: str, connect_timeout: float = 5.0) -> None:
        self.url = url
        self.connect_timeout = connect_timeout
        self._waiters: dict[str, set[asyncio.Future]] = {}
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    async def changed(self, key: str, timeout: float) -> None:
        """Wait until `key` is notified, at most `timeout` seconds."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._listen, args=(asyncio.get_running_loop(),),
                                            name="mpgpt-pg-listen", daemon=True)
            self._thread.start()
        waiter = asyncio.get_running_loop().create_future()
        waiting = self._waiters.setdefault(key, set())
        waiting.add(waiter)
        try:
            await asyncio.wait({waiter}, timeout=timeout)
        finally:
            waiting.discard(waiter)
            if not waiting:
                self._waiters.pop(key, None)
            waiter.cancel()

    async def close(self) -> None:
        thread, self._thread = self._thread, None
        if thread is not None:
            self._stop.set()
            await asyncio.to_thread(thread.join, 2.0)

    def _listen(self, loop: asyncio.AbstractEventLoop) -> None:
        while not self._stop.is_set():
            try:
                with psycopg.connect(self.url, autocommit=True,
                                     connect_timeout=max(1, round(self.connect_timeout))) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    while not self._stop.is_set():
                        for note in conn.notifies(timeout=0.5):
                            loop.call_soon_threadsafe(self._wake, note.payload)
            except psycopg.Error:
                self._stop.wait(1.0)  # the server is away: waiters poll meanwhile
            except RuntimeError:  # the event loop closed under us: nobody is left to wake
                return

    def _wake(self, key: str) -> None:
        for waiter in self._waiters.get(key, ()):
            if not waiter.done():
                waiter.set_result(None)
