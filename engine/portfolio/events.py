"""The portfolio's event log: what happened, in order (seed 004, Phase 5.5).

Kinds (the seed's WebSocket event names):

* ``portfolio:equity_update`` — an equity snapshot (on the snapshot interval and on each trade close)
* ``portfolio:drawdown_alert`` — a drawdown crossed one of the alert levels upwards
* ``portfolio:circuit_breaker`` — a breaker tripped or was released (automatically or by hand)
* ``strategy:signal`` — a strategy submitted an order: ``action`` entry / exit, or skip when the
  risk manager rejected it
* ``strategy:state_change`` — active → paused → halted and back
* ``strategy:position_opened`` / ``strategy:position_closed``
* ``funding:settlement`` — a funding payment paid (< 0) or received (> 0) on a position

Every event has a sequence number (its position in the log), a time in ns UTC, the strategy
instance's name ("" for portfolio-wide events), a symbol ("" when none) and a small dict of
figures (money in quote currency, quantities in base units, percentages as percent).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson
import pyarrow as pa

if TYPE_CHECKING:
    from engine.execution.account import Position, TradeRow
    from engine.execution.orders import Fill

EQUITY_UPDATE = "portfolio:equity_update"
DRAWDOWN_ALERT = "portfolio:drawdown_alert"
CIRCUIT_BREAKER = "portfolio:circuit_breaker"
SIGNAL = "strategy:signal"
STATE_CHANGE = "strategy:state_change"
POSITION_OPENED = "strategy:position_opened"
POSITION_CLOSED = "strategy:position_closed"
FUNDING_SETTLEMENT = "funding:settlement"

EVENT_KINDS = (
    EQUITY_UPDATE,
    DRAWDOWN_ALERT,
    CIRCUIT_BREAKER,
    SIGNAL,
    STATE_CHANGE,
    POSITION_OPENED,
    POSITION_CLOSED,
    FUNDING_SETTLEMENT,
)

EVENTS_SCHEMA = pa.schema(
    [
        ("seq", pa.int64()),
        ("ts", pa.timestamp("ns", tz="UTC")),
        ("kind", pa.string()),
        ("strategy", pa.string()),
        ("symbol", pa.string()),
        ("data", pa.string()),
    ]
)


@dataclass(frozen=True, slots=True)
class Event:
    """One entry of the event log (see the module docstring for the kinds)."""

    seq: int
    ts: int
    kind: str
    strategy: str
    symbol: str
    data: dict[str, Any]


class EventLog:
    """An append-only, ordered list of :class:`Event`."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def emit(self, ts: int, kind: str, strategy: str = "", symbol: str = "", **data: Any) -> Event:
        """Append an event and return it."""
        event = Event(len(self.events) + 1, int(ts), kind, strategy, symbol, data)
        self.events.append(event)
        return event

    def of(self, kind: str) -> list[Event]:
        """The events of one kind, in order."""
        return [e for e in self.events if e.kind == kind]

    def __len__(self) -> int:
        return len(self.events)

    def to_table(self) -> pa.Table:
        """The log as an Arrow table of :data:`EVENTS_SCHEMA` (``data`` as a JSON string)."""
        ev = self.events
        return pa.table(
            {
                "seq": pa.array([e.seq for e in ev], pa.int64()),
                "ts": pa.array([e.ts for e in ev], pa.int64()).cast(EVENTS_SCHEMA.field("ts").type),
                "kind": pa.array([e.kind for e in ev], pa.string()),
                "strategy": pa.array([e.strategy for e in ev], pa.string()),
                "symbol": pa.array([e.symbol for e in ev], pa.string()),
                "data": pa.array(
                    [orjson.dumps(e.data, option=orjson.OPT_SERIALIZE_NUMPY).decode() for e in ev], pa.string()
                ),
            },
            schema=EVENTS_SCHEMA,
        )


def position_events(fill: Fill, position: Position, trades: list[TradeRow]) -> list[tuple[str, dict[str, Any]]]:
    """The ``strategy:position_closed`` / ``strategy:position_opened`` events a fill causes, as
    ``(kind, data)`` pairs in that order (a reversal gives both): called right after the fill was
    booked on ``position``; ``trades`` is the account's closed-trade ledger (its last row is the
    trade the fill closed, whose net P&L the closed event carries)."""
    out: list[tuple[str, dict[str, Any]]] = []
    after = position.qty
    before = after - fill.side * fill.qty
    if abs(before) <= abs(fill.qty) * 1e-9:
        before = 0.0
    if before != 0.0 and (after == 0.0 or (after > 0) != (before > 0)):
        last = trades[-1] if trades else None
        out.append(
            (
                POSITION_CLOSED,
                {
                    "side": 1 if before > 0 else -1,
                    "qty": abs(before),
                    "exit_price": fill.price,
                    "net_pnl": last[11] if last else 0.0,
                    "tag": fill.tag,
                },
            )
        )
    if after != 0.0 and (before == 0.0 or (after > 0) != (before > 0)):
        out.append(
            (
                POSITION_OPENED,
                {"side": 1 if after > 0 else -1, "qty": abs(after), "entry_price": position.avg_price, "tag": fill.tag},
            )
        )
    return out
