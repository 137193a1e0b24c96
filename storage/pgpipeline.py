"""Single statements on a few PostgreSQL connections in pipeline mode (libpq's, through psycopg's pq layer).

Why not psycopg's async cursors on a pool: each statement there checks a connection out and back
in, and waits for its own result (a reader added to the loop and removed again). Under load that
cost ~150 µs of the event loop's CPU per statement, more than PostgreSQL spent running it. Here a
connection keeps one reader for its life, the statements of one loop turn leave in one write, and
results come back in order, several per wake-up: reserve+settle pairs cost ~100 µs of the loop's
CPU instead of ~300 (bench/bench_postgres.py).

Each statement is followed by its own Sync, so it is its own implicit transaction, as on an
autocommit connection: it commits alone, a failure aborts nothing else, no lock outlives it. (One
Sync for unrelated statements would be group commit, with the row locks of the whole batch held to
its end: see storage/postgres.py.) The exception is `run_together`: the statements of one state
change (an answer's credits settled and the answer closed) share one Sync, so they are one
transaction and one round trip. Statements on one connection run one after another, so a statement
goes to the connection with the fewest in flight.

Parameters are adapted by psycopg (the connection's dumpers and loaders, as its cursors would) and
a statement seen twice is prepared on its connection, as psycopg's cursors do after five runs.
"""

from __future__ import annotations

import asyncio
import ctypes
import functools
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any

import psycopg
from psycopg import errors, pq
from psycopg._queries import PostgresQuery  # the query converter psycopg's own cursors use
from psycopg.adapt import Transformer

from storage.pgconn import Row

_TUPLES_OK = pq.ExecStatus.TUPLES_OK
_FATAL = pq.ExecStatus.FATAL_ERROR
_ABORTED = pq.ExecStatus.PIPELINE_ABORTED
_SYNC = pq.ExecStatus.PIPELINE_SYNC
_BAD = pq.ConnStatus.BAD

# Statements prepared per connection at most (the repositories' SQL is a few hundred fixed texts);
# past it, new texts run unprepared. Texts seen once are counted, forgotten past _SEEN_MAX.
_PREPARED_MAX = 512
_SEEN_MAX = 4096
# how long close() lets statements in flight end
_CLOSE_WAIT = 5.0
# Statements in flight per connection at most, and how long one more waits for room: a flood that
# PostgreSQL cannot keep up with is refused (StorageBusy) instead of queueing without bound, as a
# pool's checkout timeout did.
IN_FLIGHT_MAX = 256
ROOM_WAIT = 30.0


class StorageBusy(psycopg.OperationalError):
    """Every pipelined connection had IN_FLIGHT_MAX statements in flight for ROOM_WAIT seconds."""


def _sync_without_flush() -> Callable[[pq.abc.PGconn], None] | None:
    """libpq's PQsendPipelineSync (libpq 17+), which psycopg does not wrap: PQpipelineSync, which
    it does, also flushes, so each statement would cost a send() of its own (15% of the loop's time
    in a /wechat profile). Found in the very libpq psycopg loaded (a PGconn must not meet another
    build); None where that cannot be told (then statements sync with a flush each)."""
    try:
        with open("/proc/self/maps", encoding="utf-8") as maps:
            paths = {line.split()[-1] for line in maps if "/libpq" in line}
        if len(paths) != 1:
            return None
        send_sync = ctypes.CDLL(paths.pop()).PQsendPipelineSync
    except (OSError, AttributeError):
        return None
    send_sync.argtypes = [ctypes.c_void_p]
    send_sync.restype = ctypes.c_int

    def sync(pg: pq.abc.PGconn) -> None:
        if not send_sync(pg.pgconn_ptr):
            raise psycopg.OperationalError(pg.get_error_message())
    return sync


class _Prepare:
    """A statement being prepared (its result comes before its first run's)."""

    __slots__ = ("key",)

    def __init__(self, key: tuple[bytes, tuple[int, ...]]) -> None:
        self.key = key


class _Run:
    """A statement waiting for its result."""

    __slots__ = ("future", "tx")

    def __init__(self, future: asyncio.Future[list[Row]], tx: Transformer) -> None:
        self.future = future
        self.tx = tx


_SYNC_WITHOUT_FLUSH = _sync_without_flush()


class PipelinedConnection:
    """One connection in pipeline mode: `submit` sends, a reader matches results to statements."""

    def __init__(self, conn: psycopg.AsyncConnection) -> None:
        self._conn = conn
        self._pg = conn.pgconn
        self._loop = asyncio.get_running_loop()
        self._pending: deque[_Prepare | _Run] = deque()
        self._result: pq.abc.PGresult | None = None
        self._failed_prepare: psycopg.Error | None = None
        self._prepared: dict[tuple[bytes, tuple[int, ...]], bytes] = {}
        self._seen: set[tuple[bytes, tuple[int, ...]]] = set()
        self._flush_soon = False
        self._writing = False
        self.broken: psycopg.Error | None = None
        self.on_results: Callable[[], None] | None = None  # after each read of results, and on breaking
        self._pg.nonblocking = 1
        self._pg.enter_pipeline_mode()
        self._fd = self._pg.socket
        self._loop.add_reader(self._fd, self._readable)

    @classmethod
    async def connect(cls, url: str, configure: Callable[[psycopg.AsyncConnection], Awaitable[None]],
                      **kwargs: Any) -> "PipelinedConnection":
        conn = await psycopg.AsyncConnection.connect(url, **kwargs)
        try:
            await configure(conn)
            return cls(conn)
        except BaseException:
            await conn.close()
            raise

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    def submit(self, statements: Sequence[tuple[str, Iterable[Any] | Mapping[str, Any]]]
               ) -> list[asyncio.Future[list[Row]]]:
        """Send statements (psycopg placeholders) followed by one Sync: one implicit transaction,
        all or nothing, in one round trip. A future per statement gets its rows or its error; after
        a failure, the statements behind it in the same transaction fail as not run."""
        if self.broken is not None:
            raise self.broken
        converted = []
        for query, params in statements:  # a value that cannot be adapted fails before anything is sent
            tx = Transformer(self._conn)
            q = PostgresQuery(tx)
            q.convert(query, params)
            converted.append((q, tx))
        futures: list[asyncio.Future[list[Row]]] = []
        try:
            for q, tx in converted:
                self._send(q)
                future: asyncio.Future[list[Row]] = self._loop.create_future()
                self._pending.append(_Run(future, tx))
                futures.append(future)
            if _SYNC_WITHOUT_FLUSH is not None:
                _SYNC_WITHOUT_FLUSH(self._pg)
            else:
                self._pg.pipeline_sync()
        except psycopg.Error as e:
            self._break(e)
            raise
        if not self._flush_soon:  # every statement of this loop turn in one write
            self._flush_soon = True
            self._loop.call_soon(self._flush)
        return futures

    def _send(self, q: PostgresQuery) -> None:
        key = (q.query, q.types)
        name = self._prepared.get(key)
        if name is None and key in self._seen and len(self._prepared) < _PREPARED_MAX:
            name = self._prepared[key] = b"mpgpt_%d" % len(self._prepared)
            self._pg.send_prepare(name, q.query, param_types=q.types)
            self._pending.append(_Prepare(key))
        if name is not None:
            self._pg.send_query_prepared(name, q.params, param_formats=q.formats)
            return
        if len(self._seen) >= _SEEN_MAX:
            self._seen.clear()
        self._seen.add(key)
        self._pg.send_query_params(q.query, q.params, param_types=q.types, param_formats=q.formats)

    def _flush(self) -> None:
        self._flush_soon = False
        if self.broken is not None or self._writing:
            return
        try:
            if self._pg.flush():  # the socket's buffer is full: the rest when it drains
                self._writing = True
                self._loop.add_writer(self._fd, self._writable)
        except psycopg.Error as e:
            self._break(e)

    def _writable(self) -> None:
        try:
            if not self._pg.flush():
                self._writing = False
                self._loop.remove_writer(self._fd)
        except psycopg.Error as e:
            self._break(e)

    def _readable(self) -> None:
        pg = self._pg
        try:
            pg.consume_input()
            while not pg.is_busy():
                result = pg.get_result()
                if result is None:  # the end of one statement's results
                    if self._result is None:
                        break
                    done, self._result = self._result, None
                    self._finish(done)
                elif result.status != _SYNC:
                    self._result = result
        except psycopg.Error as e:
            self._break(e)
            return
        if pg.status == _BAD:
            self._break(psycopg.OperationalError("the connection to PostgreSQL was lost"))
        elif self.on_results is not None:
            self.on_results()

    def _finish(self, result: pq.abc.PGresult) -> None:
        item = self._pending.popleft()
        if isinstance(item, _Prepare):
            if result.status == _FATAL:  # not prepared after all: its run is aborted, and says why
                self._prepared.pop(item.key, None)
                self._failed_prepare = errors.error_from_result(result, encoding=self._pg_encoding())
            return
        future = item.future
        failed, self._failed_prepare = self._failed_prepare, None
        if future.done():  # its caller was cancelled: the statement ran anyway
            return
        status = result.status
        if status == _TUPLES_OK:
            try:  # a value that cannot be loaded fails its statement, not the connection
                tx = item.tx
                tx.set_pgresult(result)
                keys = {result.fname(i).decode(): i for i in range(result.nfields)}
                future.set_result(tx.load_rows(0, result.ntuples, functools.partial(Row, keys)))
            except Exception as e:  # noqa: BLE001 - handed to the statement's caller
                future.set_exception(e)
        elif status == _FATAL:
            future.set_exception(errors.error_from_result(result, encoding=self._pg_encoding()))
        elif status == _ABORTED:
            future.set_exception(failed or psycopg.OperationalError("the statement was not run"))
        else:
            future.set_result([])

    def _pg_encoding(self) -> str:
        return self._conn.info.encoding

    def _break(self, error: psycopg.Error) -> None:
        """The connection is unusable: every statement in flight fails with `error`."""
        if self.broken is not None:
            return
        self.broken = error
        self._loop.remove_reader(self._fd)
        if self._writing:
            self._loop.remove_writer(self._fd)
        while self._pending:
            item = self._pending.popleft()
            if isinstance(item, _Run) and not item.future.done():
                item.future.set_exception(error)
        if self.on_results is not None:
            self.on_results()

    async def close(self, wait: float = 0.0) -> None:
        """Close, after the statements in flight end (at most `wait` seconds)."""
        running = [item.future for item in self._pending if isinstance(item, _Run) and not item.future.done()]
        if running and wait > 0 and self.broken is None:
            await asyncio.wait(running, timeout=wait)
        self._break(psycopg.OperationalError("the database is closed"))
        await self._conn.close()


class PipelinedStatements:
    """`size` pipelined connections; each statement to the one with the fewest in flight. A lost
    connection fails its statements in flight (as a pool's would) and is replaced on next use."""

    def __init__(self, url: str, size: int, configure: Callable[[psycopg.AsyncConnection], Awaitable[None]],
                 *, in_flight_max: int = IN_FLIGHT_MAX, room_wait: float = ROOM_WAIT, **connect: Any) -> None:
        self._url = url
        self._in_flight_max = in_flight_max
        self._room_wait = room_wait
        self._room_made: asyncio.Future[None] | None = None  # for statements waiting for room, if any
        self._configure = configure
        self._connect = connect
        self._size = size
        self._conns: list[PipelinedConnection] = []
        self._replacing: dict[int, asyncio.Task[PipelinedConnection]] = {}

    async def open(self) -> None:
        """Every connection up front (none is made while a request waits); on failure, close() ends
        those made."""
        while len(self._conns) < self._size:
            self._conns.append(await self._new())

    async def _new(self) -> PipelinedConnection:
        conn = await PipelinedConnection.connect(self._url, self._configure, autocommit=True, **self._connect)
        conn.on_results = self._results_came
        return conn

    async def run(self, query: str, params: Iterable[Any] | Mapping[str, Any]) -> list[Row]:
        """One statement (psycopg placeholders) to its end: its rows, if any."""
        (rows,) = await self.run_together([(query, params)])
        return rows

    async def run_together(self, statements: Sequence[tuple[str, Iterable[Any] | Mapping[str, Any]]]
                           ) -> list[list[Row]]:
        """Statements as one transaction (one Sync), in one round trip: each one's rows; or the
        error of the first that failed, with nothing of them committed."""
        i = self._least_busy()
        if not self._fits(self._conns[i], len(statements)):
            i = await self._room_for(len(statements))
        conn = self._conns[i]
        if conn.broken is not None:
            conn = await self._replace(i, conn)
        futures = conn.submit(statements)
        if len(futures) == 1:
            return [await futures[0]]
        results = await asyncio.gather(*futures, return_exceptions=True)
        for got in results:  # the first failure is the cause; those after it were not run
            if isinstance(got, BaseException):
                raise got
        return results  # type: ignore[return-value]

    def _least_busy(self) -> int:
        """The connection with the fewest statements in flight (its index)."""
        conns = self._conns
        if not conns:
            raise psycopg.OperationalError("the database is closed")
        return min(range(len(conns)), key=lambda k: conns[k].in_flight)

    def _fits(self, conn: PipelinedConnection, n: int) -> bool:
        return conn.in_flight == 0 or conn.in_flight + n <= self._in_flight_max

    async def _room_for(self, n: int) -> int:
        """Every connection is full: wait until one has room for `n` more (its index), at most
        room_wait seconds; then StorageBusy."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._room_wait
        while True:
            i = self._least_busy()
            if self._fits(self._conns[i], n):
                return i
            if self._room_made is None:
                self._room_made = loop.create_future()
            try:
                await asyncio.wait_for(asyncio.shield(self._room_made), deadline - loop.time())
            except TimeoutError:
                raise StorageBusy(f"PostgreSQL is behind: no room for a statement in {self._room_wait:g} s") from None

    def _results_came(self) -> None:
        """A connection read results (or broke): statements waiting for room look again."""
        made, self._room_made = self._room_made, None
        if made is not None and not made.done():
            made.set_result(None)

    async def _replace(self, i: int, dead: PipelinedConnection) -> PipelinedConnection:
        task = self._replacing.get(i)
        if task is None:  # one reconnection per slot, however many statements wait for it
            task = self._replacing[i] = asyncio.ensure_future(self._new())
            task.add_done_callback(lambda _t: self._replacing.pop(i, None))
            await dead.close()
        new = await asyncio.shield(task)
        if not self._conns:  # closed meanwhile
            await new.close()
            raise psycopg.OperationalError("the database is closed")
        if self._conns[i] is dead:
            self._conns[i] = new
        return new

    async def close(self) -> None:
        conns, self._conns = self._conns, []
        for task in list(self._replacing.values()):
            task.cancel()
        # statements sent before close (a shutdown's last writes) end first, as a pool's would
        await asyncio.gather(*(c.close(wait=_CLOSE_WAIT) for c in conns), return_exceptions=True)
