"""Output shapes of the M2M aggregator: 1-minute M2M candles, daily rows and target/stop events.

Arrow schemas (money in quote currency as float64, timestamps ``timestamp[ns, UTC]``, day ``date32``):

* :data:`CANDLE_SCHEMA` — one row per strategy and minute: account_id, instance_id, ts (minute start),
  open, high, low, close (unrealized M2M), realized_pnl (cumulative, at the minute's close),
  total_pnl (close + realized), updates (price updates that touched the strategy in the minute),
  model_mark (a leg was marked by the option model during the minute).
* :data:`DAILY_SCHEMA` — one row per strategy and account-local day: account_id, instance_id, day,
  realized_pnl (booked that day), unrealized_pnl (at day close), total_pnl (cumulative realized +
  unrealized at close), max_m2m, min_m2m (of the unrealized M2M during the day), trades (leg opens +
  exits that day), model_mark.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

TS_TYPE = pa.timestamp("ns", tz="UTC")
CANDLE_SCHEMA = pa.schema(
    [
        ("account_id", pa.string()),
        ("instance_id", pa.string()),
        ("ts", TS_TYPE),
        ("open", pa.float64()),
        ("high", pa.float64()),
        ("low", pa.float64()),
        ("close", pa.float64()),
        ("realized_pnl", pa.float64()),
        ("total_pnl", pa.float64()),
        ("updates", pa.int64()),
        ("model_mark", pa.bool_()),
    ]
)
DAILY_SCHEMA = pa.schema(
    [
        ("account_id", pa.string()),
        ("instance_id", pa.string()),
        ("day", pa.date32()),
        ("realized_pnl", pa.float64()),
        ("unrealized_pnl", pa.float64()),
        ("total_pnl", pa.float64()),
        ("max_m2m", pa.float64()),
        ("min_m2m", pa.float64()),
        ("trades", pa.int64()),
        ("model_mark", pa.bool_()),
    ]
)
EVENT_KINDS = ("target", "stop")
_NP = {TS_TYPE: np.int64, pa.date32(): np.int32, pa.float64(): np.float64, pa.int64(): np.int64, pa.bool_(): np.bool_}


@dataclass(frozen=True, slots=True)
class M2MEvent:
    """A strategy's total P&L crossed its target (total >= target_profit) or stop (total <= −stop_loss).

    Fired once per crossing: it re-arms only after the total is back on the other side.
    ``ts`` ns UTC; ``total_pnl`` and ``threshold`` (target_profit, or −stop_loss) in quote currency.
    """

    account_id: str
    instance_id: str
    kind: str
    ts: int
    total_pnl: float
    threshold: float


@dataclass(frozen=True)
class M2MOutput:
    """What a call to the aggregator emitted: closed candles, daily rows (Arrow tables in the schemas
    above, possibly empty) and target/stop events in time order."""

    candles: pa.Table
    daily: pa.Table
    events: list[M2MEvent] = field(default_factory=list)


class RowBuffer:
    """Column chunks (numpy arrays or lists) accumulated until turned into one Arrow table."""

    def __init__(self, schema: pa.Schema) -> None:
        self.schema = schema
        self.chunks: dict[str, list[Any]] = {name: [] for name in schema.names}
        self.rows = 0

    def append(self, **cols: Any) -> None:
        n = len(cols[self.schema.names[0]])
        if n == 0:
            return
        for name in self.schema.names:
            self.chunks[name].append(cols[name])
        self.rows += n

    def table(self) -> pa.Table:
        """The accumulated rows as a table (the buffer is emptied)."""
        if self.rows == 0:  # the common case (most batches close no minute): no arrays to build
            return self.schema.empty_table()
        arrays = []
        for f in self.schema:
            parts = self.chunks[f.name]
            if f.type == TS_TYPE:
                arr = pa.array(np.concatenate(parts) if parts else np.zeros(0, np.int64), pa.int64()).cast(TS_TYPE)
            elif f.type == pa.date32():
                arr = pa.array(np.concatenate(parts) if parts else np.zeros(0, np.int32), pa.int32()).cast(pa.date32())
            elif f.type == pa.string():
                arr = pa.array([v for part in parts for v in part], pa.string())
            else:
                arr = pa.array(np.concatenate(parts) if parts else np.zeros(0), f.type)
            arrays.append(arr)
        self.chunks = {name: [] for name in self.schema.names}
        self.rows = 0
        return pa.Table.from_arrays(arrays, schema=self.schema)

    def to_plain(self) -> dict[str, list[object]]:
        """The pending rows as plain lists per column (for snapshots)."""
        out: dict[str, list[object]] = {}
        for f in self.schema:
            parts = self.chunks[f.name]
            if f.type == pa.string():
                out[f.name] = [str(v) for part in parts for v in part]
            else:
                out[f.name] = [v for part in parts for v in np.asarray(part).tolist()]
        return out

    def load_plain(self, data: dict[str, list[object]]) -> None:
        """Restore pending rows saved by :meth:`to_plain`."""
        cols = {f.name: data.get(f.name, []) for f in self.schema}
        if not len(cols[self.schema.names[0]]):
            return
        self.append(
            **{
                f.name: list(cols[f.name]) if f.type == pa.string() else np.asarray(cols[f.name], _NP[f.type])
                for f in self.schema
            }
        )
