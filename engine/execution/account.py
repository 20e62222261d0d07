"""Positions, cash, realised and unrealised P&L, funding, and the closed-trade ledger.

Accounting model (one account, quote currency):

* Spot / equity instruments are cash settled: a fill moves ``side × qty × price × multiplier`` plus
  the fee out of cash; a position is worth ``qty × mark × multiplier``.
* Perpetuals use margin accounting: cash is the wallet balance, which changes only by realised P&L,
  fees and funding; a position is worth its unrealised P&L ``qty × (mark − entry) × multiplier``.

Both give ``equity = cash + Σ position value`` (DESIGN.md), with
``position value = qty × (mark − reference) × multiplier`` where the reference is 0 for spot and the
average entry price for perpetuals.

Realised P&L of a closing fill = (exit − entry) × closed qty × side × multiplier (DESIGN.md), fees
apart. Funding at a settlement = −qty × mark × multiplier × rate (longs pay a positive rate).
"""

from __future__ import annotations

from engine.errors import OrderError
from engine.instruments import Instrument


class Position:
    """The position in one instrument. ``qty`` is signed (long > 0, short < 0), base units."""

    __slots__ = (
        "avg_price",
        "funding",
        "instrument",
        "multiplier",
        "perpetual",
        "qty",
        "realized_pnl",
        "ref",
        "symbol",
        "t_entry_bar",
        "t_entry_notional",
        "t_entry_qty",
        "t_entry_ts",
        "t_exit_notional",
        "t_exit_qty",
        "t_fees",
        "t_funding",
        "t_gross",
        "t_max_qty",
        "t_side",
    )

    def __init__(self, instrument: Instrument) -> None:
        self.instrument = instrument
        self.symbol = instrument.symbol
        self.perpetual = instrument.is_perpetual
        self.multiplier = instrument.multiplier
        self.qty = 0.0
        self.avg_price = 0.0
        #: 0 for spot; the average entry price for perpetuals (see module docstring)
        self.ref = 0.0
        self.realized_pnl = 0.0
        self.funding = 0.0
        self._reset_trade()

    def _reset_trade(self) -> None:
        self.t_side = 0
        self.t_entry_ts = 0
        self.t_entry_bar = 0
        self.t_entry_qty = 0.0
        self.t_entry_notional = 0.0
        self.t_exit_qty = 0.0
        self.t_exit_notional = 0.0
        self.t_max_qty = 0.0
        self.t_fees = 0.0
        self.t_funding = 0.0
        self.t_gross = 0.0

    def value(self, mark: float) -> float:
        """Position value at ``mark`` (quote currency); see the module docstring."""
        return self.qty * (mark - self.ref) * self.multiplier

    def unrealized_pnl(self, mark: float) -> float:
        """(mark − average entry) × qty × multiplier; the M2M of this leg (DESIGN.md formula)."""
        return (mark - self.avg_price) * self.qty * self.multiplier


#: a closed trade row, in TRADES_SCHEMA column order
TradeRow = tuple[int, str, int, float, int, int, float, float, float, float, float, float, int]


class Account:
    """Cash, positions and ledgers of one trading account.

    Attributes:
        cash: cash (spot) / wallet balance (perpetuals), quote currency.
        positions: one :class:`Position` per instrument, created on registration and never replaced
            (the backtest loop holds references to them).
        open_positions: the positions with ``qty != 0``, by symbol.
        fees_paid: total fees (>= 0). funding_paid: net funding paid (> 0 paid, < 0 received).
        trades: closed trades as rows in ``TRADES_SCHEMA`` order.
        funding_rows: (ts, symbol, qty, mark, rate, payment) per settlement with an open position.
    """

    def __init__(self, cash: float) -> None:
        if not cash > 0:
            raise OrderError(f"initial cash must be > 0, got {cash}")
        self.initial_cash = float(cash)
        self.cash = float(cash)
        self.positions: dict[str, Position] = {}
        self.open_positions: dict[str, Position] = {}
        self.fees_paid = 0.0
        self.funding_paid = 0.0
        self.trades: list[TradeRow] = []
        self.funding_rows: list[tuple[int, str, float, float, float, float]] = []
        self._trade_seq = 0

    def register(self, instrument: Instrument) -> Position:
        """Create (or return) the position of ``instrument``."""
        pos = self.positions.get(instrument.symbol)
        if pos is None:
            pos = self.positions[instrument.symbol] = Position(instrument)
        return pos

    # ------------------------------------------------------------------ mutations
    def apply_fill(self, symbol: str, side: int, qty: float, price: float, fee: float, ts: int, bar: int) -> float:
        """Book a fill; returns the gross realised P&L of its closing part (quote currency).

        Handles opening, averaging (quantity-weighted entry price), partial close, full close and
        reversal (close the whole position, open the remainder the other way at the fill price).
        Fees are split between the closed and the opened part pro rata to quantity.
        """
        pos = self.positions[symbol]
        mult = pos.multiplier
        old = pos.qty
        realized = 0.0
        if old == 0.0 or (old > 0.0) == (side > 0):
            self._open_or_add(pos, side, qty, price, fee, ts, bar)
        else:
            closed = min(qty, abs(old))
            realized = (price - pos.avg_price) * closed * (1.0 if old > 0.0 else -1.0) * mult
            close_fee = fee if closed == qty else fee * closed / qty
            pos.t_exit_qty += closed
            pos.t_exit_notional += closed * price
            pos.t_gross += realized
            pos.t_fees += close_fee
            pos.realized_pnl += realized
            remaining = abs(old) - closed
            if remaining <= abs(old) * 1e-12:
                pos.qty = 0.0
                self._close_trade(pos, ts, bar)
                pos.avg_price = 0.0
                if pos.perpetual:
                    pos.ref = 0.0
                self.open_positions.pop(symbol, None)
                rest = qty - closed
                if rest > qty * 1e-12:
                    self._open_or_add(pos, side, rest, price, fee - close_fee, ts, bar)
            else:
                pos.qty = remaining if old > 0.0 else -remaining
        if pos.perpetual:
            self.cash += realized - fee
        else:
            self.cash -= side * qty * price * mult + fee
        self.fees_paid += fee
        return realized

    def _open_or_add(self, pos: Position, side: int, qty: float, price: float, fee: float, ts: int, bar: int) -> None:
        old = abs(pos.qty)
        if old == 0.0:
            pos.t_side = side
            pos.t_entry_ts = ts
            pos.t_entry_bar = bar
            self.open_positions[pos.symbol] = pos
        new = old + qty
        pos.avg_price = (old * pos.avg_price + qty * price) / new if old else price
        pos.qty = new if side > 0 else -new
        if pos.perpetual:
            pos.ref = pos.avg_price
        pos.t_entry_qty += qty
        pos.t_entry_notional += qty * price
        pos.t_fees += fee
        if new > pos.t_max_qty:
            pos.t_max_qty = new

    def _close_trade(self, pos: Position, ts: int, bar: int) -> None:
        self._trade_seq += 1
        entry_price = pos.t_entry_notional / pos.t_entry_qty
        exit_price = pos.t_exit_notional / pos.t_exit_qty
        net = pos.t_gross - pos.t_fees + pos.t_funding
        self.trades.append(
            (
                self._trade_seq,
                pos.symbol,
                pos.t_side,
                pos.t_max_qty,
                pos.t_entry_ts,
                ts,
                entry_price,
                exit_price,
                pos.t_gross,
                pos.t_fees,
                pos.t_funding,
                net,
                bar - pos.t_entry_bar,
            )
        )
        pos._reset_trade()

    def settle_funding(self, symbol: str, rate: float, mark: float, ts: int) -> float:
        """Settle one funding event on ``symbol``'s open perpetual position.

        payment = −qty × mark × multiplier × rate (quote currency; a long pays a positive rate).
        Returns the payment (0 when flat or not a perpetual).
        """
        pos = self.positions[symbol]
        if pos.qty == 0.0 or not pos.perpetual:
            return 0.0
        payment = -pos.qty * mark * pos.multiplier * rate
        self.cash += payment
        self.funding_paid -= payment
        pos.funding += payment
        pos.t_funding += payment
        self.funding_rows.append((ts, symbol, pos.qty, mark, rate, payment))
        return payment
