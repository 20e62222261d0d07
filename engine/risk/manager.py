"""The pre-trade risk manager: one pure check per order that opens or adds exposure.

The portfolio builds an :class:`~engine.risk.view.OrderIntent` and a
:class:`~engine.risk.view.RiskSnapshot` and calls :meth:`RiskManager.check`; orders that only reduce
exposure never reach it. Checks run in the order of :data:`CHECKS`; the first that fails rejects
the order and the :class:`Rejection` is recorded.

Units: prices in quote currency, quantities in base units, money in quote currency, timestamps in
ns UTC. Each rejection's ``value`` and ``limit`` are in its check's unit:

===================== ====================================================================
check                 value / limit
===================== ====================================================================
portfolio_halted      NaN / NaN (the snapshot's ``blocked`` says so; no figure)
strategy_paused       NaN / NaN
daily_loss            quote: loss today (day_start_equity − equity) / the binding limit
max_loss_per_trade    quote: the order's loss to its stop / ``max_loss_per_trade``
max_risk_per_trade    quote: the order's loss to its stop / pct × allocated capital
allocation            quote: the strategy's margin after the order / its allocated capital
conflict              base units: Σ signed qty other strategies hold against the order / 0
max_open_positions    count: distinct (strategy, symbol) exposures after the order / the max
total_open_risk       quote: Σ loss to the stops after the order / pct × portfolio equity
leverage              ratio: portfolio notional after the order / equity, / ``max_leverage``
===================== ====================================================================

Reference price of an exposure (``ref``): its mark for an open position, its entry (the order's
price) for a pending entry order, since that is the price it will fill at. Notional =
|qty| × ref × multiplier; an exposure's margin = notional / leverage. Exposures with qty 0 count
nowhere. The intent is counted in full (the portfolio passes only the part of an order that opens
exposure), with notional = qty × price × multiplier.

Boundary: a figure exactly at its limit passes. Comparisons allow a relative tolerance of
:data:`REL_TOL` (1e-9) so that an order sized exactly to a limit (e.g. with :func:`position_size`)
is not rejected by floating-point rounding: ``value ≤ limit + 1e-9 × |limit|`` passes. The one
exception is ``daily_loss``, where *reaching* the limit halts opening orders
(``loss ≥ limit − 1e-9 × |limit|`` rejects), as the rule "stop once you have lost X today" says.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, TypeGuard

import pyarrow as pa

from engine.errors import OrderError
from engine.risk.limits import RiskLimits
from engine.risk.view import Exposure, OrderIntent, RiskSnapshot

#: Relative tolerance of every limit comparison (see the module docstring).
REL_TOL = 1e-9

#: The stable check ids, in the order they run.
CHECKS: tuple[str, ...] = (
    "portfolio_halted",
    "strategy_paused",
    "daily_loss",
    "max_loss_per_trade",
    "max_risk_per_trade",
    "allocation",
    "conflict",
    "max_open_positions",
    "total_open_risk",
    "leverage",
)

#: The reasons a snapshot's ``blocked`` may give; each is also the check id of its rejection.
BLOCK_REASONS = ("portfolio_halted", "strategy_paused")

#: One row per rejection, in the order they happened (see :meth:`RiskManager.to_table`).
REJECTIONS_SCHEMA = pa.schema(
    [
        ("ts", pa.timestamp("ns", tz="UTC")),
        ("strategy", pa.string()),
        ("symbol", pa.string()),
        ("side", pa.int8()),
        ("qty", pa.float64()),
        ("price", pa.float64()),
        ("check", pa.string()),
        ("value", pa.float64()),
        ("limit", pa.float64()),
        ("message", pa.string()),
    ]
)


@dataclass(frozen=True, slots=True)
class Rejection:
    """An order the risk manager refused.

    Attributes:
        ts: the intent's submission time, ns UTC.
        strategy, symbol, side, qty, price: the intent's (side +1 BUY / −1 SELL, qty in base units,
            price its reference price in quote currency).
        check: the failing check's id, one of :data:`CHECKS`.
        value: the figure compared, in the check's unit (see the module docstring).
        limit: the limit it was compared with, same unit.
        message: one readable sentence naming the figure and the limit.
    """

    ts: int
    strategy: str
    symbol: str
    side: int
    qty: float
    price: float
    check: str
    value: float
    limit: float
    message: str


@dataclass(frozen=True, slots=True)
class _Fail:
    check: str
    value: float
    limit: float
    message: str


def position_size(
    allocated_capital: float, entry: float, stop: float, risk_pct: float, multiplier: float = 1.0
) -> float:
    """Quantity (base units) whose loss from ``entry`` to ``stop`` is ``risk_pct`` % of the capital.

    Fixed-fractional position sizing (R. Vince, *Portfolio Management Formulas*, 1990; the "2 %
    rule" of trading texts)::

        qty = allocated_capital × risk_pct / 100 / (|entry − stop| × multiplier)

    Not rounded to the lot: the venue's instrument does that.

    Args:
        allocated_capital: quote currency, finite ≥ 0 (the strategy's allocated capital).
        entry: entry price, quote currency, finite > 0.
        stop: stop-loss price, quote currency, finite > 0, different from ``entry``.
        risk_pct: percent of the capital to risk, in (0, 100].
        multiplier: contract multiplier, finite > 0.

    Raises:
        OrderError: naming the argument and the rule it broke.
    """
    if not (_is_number(allocated_capital) and math.isfinite(allocated_capital) and allocated_capital >= 0):
        raise OrderError(f"position_size 'allocated_capital': must be a finite amount >= 0, got {allocated_capital!r}")
    for name, price in (("entry", entry), ("stop", stop)):
        if not _finite_positive(price):
            raise OrderError(f"position_size '{name}': must be a finite price > 0, got {price!r}")
    if entry == stop:
        raise OrderError(f"position_size 'stop': must differ from the entry price {entry}")
    if not (_is_number(risk_pct) and 0.0 < risk_pct <= 100.0):
        raise OrderError(f"position_size 'risk_pct': must be a percentage in (0, 100], got {risk_pct!r}")
    if not _finite_positive(multiplier):
        raise OrderError(f"position_size 'multiplier': must be a finite number > 0, got {multiplier!r}")
    return allocated_capital * risk_pct / 100.0 / (abs(entry - stop) * multiplier)


class RiskManager:
    """Checks order intents against :class:`RiskLimits` and records every rejection.

    Pure apart from :attr:`rejections`: the verdict depends only on the intent, the snapshot and the
    limits. Not thread-safe (one portfolio calls it).

    Attributes:
        limits: the limits in force.
        rejections: every rejection so far, oldest first.
    """

    #: :func:`position_size`, reachable from the manager too.
    position_size = staticmethod(position_size)

    def __init__(self, limits: RiskLimits | None = None) -> None:
        self.limits = limits if limits is not None else RiskLimits()
        self.rejections: list[Rejection] = []
        self._steps: tuple[Callable[[OrderIntent, RiskSnapshot], _Fail | None], ...] = (
            self._blocked,
            self._daily_loss,
            self._max_loss_per_trade,
            self._max_risk_per_trade,
            self._allocation,
            self._conflict,
            self._max_open_positions,
            self._total_open_risk,
            self._leverage,
        )

    def check(self, intent: OrderIntent, snapshot: RiskSnapshot) -> Rejection | None:
        """Run every enabled check in the order of :data:`CHECKS`; the first failure rejects.

        Returns:
            None if the order may go to the venue (nothing is recorded), else the
            :class:`Rejection`, also appended to :attr:`rejections`.

        Raises:
            OrderError: the intent or the snapshot is malformed (NaN or non-positive prices,
                qty ≤ 0, side not ±1, a stop on the wrong side of the price, a strategy missing from
                ``allocated``, an unknown ``blocked`` reason ...); the message names the field.
        """
        _validate_intent(intent)
        _validate_snapshot(snapshot, intent.strategy)
        for step in self._steps:
            fail = step(intent, snapshot)
            if fail is not None:
                rejection = Rejection(
                    ts=intent.ts,
                    strategy=intent.strategy,
                    symbol=intent.symbol,
                    side=int(intent.side),
                    qty=intent.qty,
                    price=intent.price,
                    check=fail.check,
                    value=float(fail.value),
                    limit=float(fail.limit),
                    message=fail.message,
                )
                self.rejections.append(rejection)
                return rejection
        return None

    def to_rows(self) -> list[dict[str, Any]]:
        """The rejections as dicts with the columns of :data:`REJECTIONS_SCHEMA` (``ts`` in int ns UTC)."""
        return [asdict(r) for r in self.rejections]

    def to_table(self) -> pa.Table:
        """The rejections as an Arrow table of :data:`REJECTIONS_SCHEMA` (``ts`` as timestamp[ns, UTC])."""
        return pa.Table.from_pylist(self.to_rows(), schema=REJECTIONS_SCHEMA)

    # -- the checks, in order ------------------------------------------------------------------

    def _blocked(self, intent: OrderIntent, snapshot: RiskSnapshot) -> _Fail | None:
        reason = snapshot.blocked.get(intent.strategy)
        if reason is None:
            return None
        why = (
            "the portfolio is halted by its breaker"
            if reason == "portfolio_halted"
            else "the strategy is paused by its breaker"
        )
        return _Fail(
            reason, math.nan, math.nan, f"strategy '{intent.strategy}' may not open exposure now: {why} ({reason})"
        )

    def _daily_loss(self, intent: OrderIntent, snapshot: RiskSnapshot) -> _Fail | None:
        lim = self.limits
        candidates: list[tuple[float, str]] = []
        if lim.daily_loss_limit is not None:
            candidates.append((lim.daily_loss_limit, "daily_loss_limit"))
        if lim.daily_loss_limit_pct is not None:
            dse = snapshot.day_start_equity
            candidates.append(
                (
                    lim.daily_loss_limit_pct / 100.0 * dse,
                    f"{_n(lim.daily_loss_limit_pct)}% of day-start equity {_n(dse)}",
                )
            )
        if not candidates:
            return None
        limit, what = min(candidates)
        loss = snapshot.day_start_equity - snapshot.equity
        if loss < limit - REL_TOL * abs(limit):
            return None
        return _Fail(
            "daily_loss",
            loss,
            limit,
            f"loss today {_n(loss)} has reached the daily loss limit {_n(limit)} ({what}); "
            "no new exposure until the next UTC day",
        )

    def _max_loss_per_trade(self, intent: OrderIntent, snapshot: RiskSnapshot) -> _Fail | None:
        limit = self.limits.max_loss_per_trade
        loss = self._intent_loss(intent)
        if limit is None or loss is None or _within(loss, limit):
            return None
        return _Fail(
            "max_loss_per_trade",
            loss,
            limit,
            f"{self._loss_text(intent, loss)} exceeds max_loss_per_trade {_n(limit)}",
        )

    def _max_risk_per_trade(self, intent: OrderIntent, snapshot: RiskSnapshot) -> _Fail | None:
        pct = self.limits.max_risk_per_trade_pct
        loss = self._intent_loss(intent)
        if pct is None or loss is None:
            return None
        allocated = snapshot.allocated[intent.strategy]
        limit = pct / 100.0 * allocated
        if _within(loss, limit):
            return None
        return _Fail(
            "max_risk_per_trade",
            loss,
            limit,
            f"{self._loss_text(intent, loss)} exceeds {_n(pct)}% of strategy '{intent.strategy}' "
            f"allocated capital {_n(allocated)} = {_n(limit)}",
        )

    def _allocation(self, intent: OrderIntent, snapshot: RiskSnapshot) -> _Fail | None:
        if not self.limits.enforce_allocation:
            return None
        in_use = sum(_notional(e) / e.leverage for e in snapshot.exposures if e.strategy == intent.strategy)
        order_margin = intent.notional / intent.leverage
        after = in_use + order_margin
        limit = snapshot.allocated[intent.strategy]
        if _within(after, limit):
            return None
        return _Fail(
            "allocation",
            after,
            limit,
            f"strategy '{intent.strategy}' margin after the order {_n(after)} (in use {_n(in_use)} + order "
            f"{_n(order_margin)}) exceeds its allocated capital {_n(limit)}",
        )

    def _conflict(self, intent: OrderIntent, snapshot: RiskSnapshot) -> _Fail | None:
        if self.limits.conflict_mode == "net":
            return None
        against = [
            e
            for e in snapshot.exposures
            if e.symbol == intent.symbol and e.strategy != intent.strategy and e.qty * intent.side < 0
        ]
        if not against:
            return None
        qty = sum(e.qty for e in against)
        holders = ", ".join(sorted({f"'{e.strategy}'" + (" (pending)" if e.pending else "") for e in against}))
        return _Fail(
            "conflict",
            qty,
            0.0,
            f"{intent.symbol}: strategy '{intent.strategy}' wants to {_side(intent.side)} while {holders} "
            f"hold(s) {_n(qty)} on the opposite side (limit 0 with conflict_mode 'reject')",
        )

    def _max_open_positions(self, intent: OrderIntent, snapshot: RiskSnapshot) -> _Fail | None:
        limit = self.limits.max_open_positions
        if limit is None:
            return None
        keys = {(e.strategy, e.symbol) for e in snapshot.exposures if e.qty != 0}
        keys.add((intent.strategy, intent.symbol))
        count = len(keys)
        if count <= limit:
            return None
        return _Fail(
            "max_open_positions",
            float(count),
            float(limit),
            f"{count} open (strategy, symbol) exposures after the order exceed max_open_positions {limit}",
        )

    def _total_open_risk(self, intent: OrderIntent, snapshot: RiskSnapshot) -> _Fail | None:
        pct = self.limits.max_total_open_risk_pct
        if pct is None:
            return None
        open_risk = sum(self._exposure_loss(e) for e in snapshot.exposures)
        order_risk = self._intent_loss(intent) or 0.0
        total = open_risk + order_risk
        limit = pct / 100.0 * snapshot.equity
        if _within(total, limit):
            return None
        return _Fail(
            "total_open_risk",
            total,
            limit,
            f"open risk to the stops after the order {_n(total)} (open {_n(open_risk)} + order {_n(order_risk)}) "
            f"exceeds {_n(pct)}% of portfolio equity {_n(snapshot.equity)} = {_n(limit)}",
        )

    def _leverage(self, intent: OrderIntent, snapshot: RiskSnapshot) -> _Fail | None:
        limit = self.limits.max_leverage
        if limit is None:
            return None
        netted = self.limits.conflict_mode == "net"
        if netted:
            by_symbol: dict[str, float] = {intent.symbol: intent.side * intent.notional}
            for e in snapshot.exposures:
                by_symbol[e.symbol] = by_symbol.get(e.symbol, 0.0) + math.copysign(_notional(e), e.qty)
            notional = sum(abs(v) for v in by_symbol.values())
        else:
            notional = sum(_notional(e) for e in snapshot.exposures) + intent.notional
        equity = snapshot.equity
        ratio = notional / equity if equity > 0 else (math.inf if notional > 0 else 0.0)
        if _within(ratio, limit):
            return None
        kind = "netted per symbol" if netted else "gross"
        return _Fail(
            "leverage",
            ratio,
            limit,
            f"portfolio notional after the order {_n(notional)} ({kind}) is {_n(ratio)}x equity {_n(equity)}, "
            f"over max_leverage {_n(limit)}",
        )

    # -- figures ---------------------------------------------------------------------------------

    def _intent_loss(self, intent: OrderIntent) -> float | None:
        """The order's loss to its stop (quote), or its assumed loss if unprotected; None = not counted."""
        if intent.stop > 0:
            return (intent.price - intent.stop) * intent.side * intent.qty * intent.multiplier
        pct = self.limits.unprotected_risk_pct
        return None if pct is None else pct / 100.0 * intent.notional

    def _loss_text(self, intent: OrderIntent, loss: float) -> str:
        if intent.stop > 0:
            return f"loss {_n(loss)} from {_n(intent.price)} to the stop {_n(intent.stop)}"
        pct = self.limits.unprotected_risk_pct or 0.0
        return f"assumed loss {_n(loss)} of the unprotected order ({_n(pct)}% of notional {_n(intent.notional)})"

    def _exposure_loss(self, e: Exposure) -> float:
        """An exposure's loss to its stop from its reference price (quote); see RiskLimits."""
        if e.qty == 0:
            return 0.0
        if e.stop > 0:
            return max(0.0, (_ref(e) - e.stop) * math.copysign(1.0, e.qty)) * abs(e.qty) * e.multiplier
        pct = self.limits.unprotected_risk_pct
        return 0.0 if pct is None else pct / 100.0 * _notional(e)


# -- helpers -------------------------------------------------------------------------------------


def _within(value: float, limit: float) -> bool:
    """value ≤ limit, allowing a relative tolerance of REL_TOL."""
    return value <= limit + REL_TOL * abs(limit)


def _ref(e: Exposure) -> float:
    """Reference price: the entry for a pending order, else the mark."""
    return e.entry if e.pending else e.mark


def _notional(e: Exposure) -> float:
    """|qty| × ref × multiplier, quote currency."""
    return abs(e.qty) * _ref(e) * e.multiplier


def _side(side: int) -> str:
    return "BUY" if side > 0 else "SELL"


def _n(x: float) -> str:
    return f"{x:.10g}"


def _is_number(x: object) -> TypeGuard[float]:
    """A real number (int or float, not bool)."""
    return isinstance(x, int | float) and not isinstance(x, bool)


def _finite_positive(x: object) -> bool:
    return _is_number(x) and math.isfinite(x) and x > 0


def _finite_non_negative(x: object) -> bool:
    return _is_number(x) and math.isfinite(x) and x >= 0


def _validate_intent(intent: OrderIntent) -> None:
    def bad(name: str, rule: str, value: object) -> OrderError:
        return OrderError(f"intent '{name}': {rule}, got {value!r}")

    if not isinstance(intent.ts, int) or isinstance(intent.ts, bool):
        raise bad("ts", "must be an integer (ns UTC)", intent.ts)
    for name in ("strategy", "symbol"):
        value = getattr(intent, name)
        if not isinstance(value, str) or not value:
            raise bad(name, "must be a non-empty string", value)
    if isinstance(intent.side, bool) or intent.side not in (1, -1):
        raise bad("side", "must be +1 (BUY) or -1 (SELL)", intent.side)
    for name in ("qty", "price", "multiplier", "leverage"):
        value = getattr(intent, name)
        if not _finite_positive(value):
            raise bad(name, "must be a finite number > 0", value)
    if not _finite_non_negative(intent.stop):
        raise bad("stop", "must be a finite price > 0, or 0 for none", intent.stop)
    if intent.stop > 0 and (intent.price - intent.stop) * intent.side <= 0:
        where = "below" if intent.side > 0 else "above"
        raise bad("stop", f"a {_side(intent.side)}'s stop must be {where} its price {intent.price}", intent.stop)


def _validate_snapshot(snapshot: RiskSnapshot, strategy: str) -> None:
    def bad(name: str, rule: str, value: object) -> OrderError:
        return OrderError(f"snapshot '{name}': {rule}, got {value!r}")

    if not (_is_number(snapshot.equity) and math.isfinite(snapshot.equity)):
        raise bad("equity", "must be a finite amount", snapshot.equity)
    if not _finite_positive(snapshot.day_start_equity):
        raise bad("day_start_equity", "must be a finite amount > 0", snapshot.day_start_equity)
    if strategy not in snapshot.allocated:
        raise bad("allocated", f"must give the allocated capital of strategy '{strategy}'", sorted(snapshot.allocated))
    for name, value in snapshot.allocated.items():
        if not _finite_non_negative(value):
            raise bad(f"allocated[{name}]", "must be a finite amount >= 0", value)
    for name, reason in snapshot.blocked.items():
        if reason not in BLOCK_REASONS:
            raise bad(f"blocked[{name}]", f"must be one of {', '.join(BLOCK_REASONS)}", reason)
    for i, e in enumerate(snapshot.exposures):
        if not (_is_number(e.qty) and math.isfinite(e.qty)):
            raise bad(f"exposures[{i}].qty", "must be a finite number", e.qty)
        for name in ("entry", "mark", "multiplier", "leverage"):
            value = getattr(e, name)
            if not _finite_positive(value):
                raise bad(f"exposures[{i}].{name}", "must be a finite number > 0", value)
        if not _finite_non_negative(e.stop):
            raise bad(f"exposures[{i}].stop", "must be a finite price > 0, or 0 for none", e.stop)
