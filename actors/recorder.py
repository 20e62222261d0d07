"""The recorder: the one writer of a store (named ``recorder`` in the Ray dashboard).

Every other actor sends it rows; it owns the store connection (a DuckDB file admits one writing
process, and one writer per PostgreSQL database keeps transactions short) and writes in batches
through :meth:`engine.store.base.Store.write_live` (DuckDB Arrow appends, PostgreSQL ``COPY``): rows
accumulate until ``flush_rows`` are buffered or ``flush_interval_s`` has passed, then every table
goes in one transaction. Fills, signals, snapshots, events and rejections are idempotent by their
ids and orders, positions and checkpoints are upserts, so a replayed batch (a bot restarted from a
checkpoint) changes nothing. A bot's checkpoint is written in the same transaction as the rows it
sent before it, so a stored checkpoint never runs ahead of the stored records. A batch the store
rejects (a row breaking a rule) is not written at all; its rows are counted in ``dropped`` and the
error kept in :meth:`Recorder.stats` (``tradectl run`` prints them).

Reads (control plane, restarts) go through it too: the store is not opened by anyone else.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pyarrow as pa
import ray

from engine.errors import StoreError
from engine.store import m2m as m2m_store
from engine.store.base import open_store
from engine.store.live import LIVE_TABLES


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=-1)
class Recorder:
    """See the module docstring. ``db_url`` as ``tradectl --db`` takes it (None: the default store)."""

    def __init__(self, db_url: str | None, flush_rows: int = 20_000, flush_interval_s: float = 0.2) -> None:
        self.store = open_store(db_url, migrate=True)
        self.flush_rows = flush_rows
        self.flush_interval_s = flush_interval_s
        self._rows: dict[str, list[dict[str, Any]]] = {}
        self._arrow: dict[str, list[pa.Table]] = {}
        self._buffered = 0
        self._last_flush = time.monotonic()
        self.written: dict[str, int] = {}
        self.flushes = 0
        self.errors: list[str] = []
        self.dropped = 0

    # ------------------------------------------------------------------ writes
    def write(self, tables: dict[str, Any]) -> int:
        """Buffer rows (per table: a list of dicts with the columns of its Arrow schema, timestamps as
        int ns UTC, or an Arrow table with those columns) and flush when due. Returns the rows now
        buffered."""
        for name, rows in tables.items():
            n = rows.num_rows if isinstance(rows, pa.Table) else len(rows)
            if n:
                if name not in LIVE_TABLES:
                    raise ValueError(f"recorder: unknown live table {name!r}")
                if isinstance(rows, pa.Table):
                    self._arrow.setdefault(name, []).append(rows)
                else:
                    self._rows.setdefault(name, []).extend(rows)
                self._buffered += n
        if self._buffered >= self.flush_rows or time.monotonic() - self._last_flush >= self.flush_interval_s:
            self.flush()
        return self._buffered

    def write_now(self, tables: dict[str, Any]) -> dict[str, int]:
        """Buffer rows and flush at once (control-plane writes: accounts, instances, bots)."""
        self.write(tables)
        return self.flush()

    def flush(self) -> dict[str, int]:
        """Write everything buffered in one transaction; returns rows per table."""
        self._last_flush = time.monotonic()
        if not self._buffered:
            return {}
        rows, self._rows, self._buffered = self._rows, {}, 0
        arrow, self._arrow = self._arrow, {}
        try:
            tables = {name: pa.Table.from_pylist(r, schema=LIVE_TABLES[name].schema) for name, r in rows.items()}
            for name, parts in arrow.items():
                schema = LIVE_TABLES[name].schema
                parts = [t.select(schema.names).cast(schema) for t in parts]
                if name in tables:
                    parts.insert(0, tables[name])
                tables[name] = pa.concat_tables(parts)
            counts = self.store.write_live(tables)
        except (StoreError, ValueError, TypeError, pa.ArrowException) as exc:
            # the store wrote nothing of this batch; keep going and make the loss visible
            self.dropped += sum(len(r) for r in rows.values())
            self.errors = [*self.errors[-19:], f"{type(exc).__name__}: {exc}"]
            return {}
        for name, n in counts.items():
            self.written[name] = self.written.get(name, 0) + n
        self.flushes += 1
        return counts

    # ------------------------------------------------------------------ reads
    def read(
        self,
        table: str,
        account_id: str | None = None,
        where: dict[str, Any] | None = None,
        order_by: str | None = None,
        limit: int | None = None,
    ) -> pa.Table:
        """Flush, then read a live table (see :meth:`engine.store.base.Store.read_live`)."""
        self.flush()
        return self.store.read_live(table, account_id=account_id, where=where, order_by=order_by, limit=limit)

    def load_checkpoint(self, bot_id: str) -> tuple[int, int, bytes] | None:
        """The latest stored checkpoint of ``bot_id``: (watermark_ns, seq, state), or None."""
        self.flush()
        return self.store.load_checkpoint(bot_id)

    def m2m(self, query: str, **kwargs: Any) -> Any:
        """Flush, then answer an M2M query of :mod:`engine.store.m2m` on the store: ``"candles"``
        (:func:`~engine.store.m2m.read_candles`), ``"daily"``, ``"legs"``, ``"exits"``, ``"report"``
        (:func:`~engine.store.m2m.pnl_report`) or ``"export"`` (:func:`~engine.store.m2m.export_pnl`,
        files written where this actor runs)."""
        functions: dict[str, Callable[..., Any]] = {
            "candles": m2m_store.read_candles,
            "daily": m2m_store.read_daily,
            "legs": m2m_store.read_legs,
            "exits": m2m_store.read_exits,
            "report": m2m_store.pnl_report,
            "export": m2m_store.export_pnl,
        }
        if query not in functions:
            raise ValueError(f"recorder: unknown M2M query {query!r} (one of {', '.join(functions)})")
        self.flush()
        return functions[query](self.store, **kwargs)

    def stats(self) -> dict[str, Any]:
        """Rows written per table, flushes, rows buffered."""
        return {
            "written": dict(self.written),
            "flushes": self.flushes,
            "buffered": self._buffered,
            "dropped": self.dropped,
            "errors": list(self.errors),
        }

    def close(self) -> dict[str, int]:
        """Flush and close the store (shutdown's last step)."""
        counts = self.flush()
        self.store.close()
        return counts
