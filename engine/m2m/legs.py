"""Legs of a strategy: what one open (or closed) position inside a strategy instance is, and its exits.

A **leg** is one entry into an instrument inside a strategy instance: a side (BUY = +1, SELL = −1),
an open quantity in units (base units / shares / option units, > 0 while open), the entry price in
quote currency per unit and a multiplier (quote currency per price point per unit: 1 for crypto
perpetuals and for NSE options, which are quoted per unit). Legs are opened manually (``source =
"manual"``) or from a bot's fills (``source = "bot"``).

Formulas (DESIGN.md, "Conventions of the field"):

* unrealized P&L (M2M) of a leg = (LTP − entry) × qty × side × multiplier;
* realized P&L of exiting q units at price X = (X − entry) × q × side × multiplier.

P&L here is **gross of fees**: fees are paid and accounted by the execution account
(:mod:`engine.execution.account`); the M2M of a strategy follows the market value of its legs.

A leg's ``status`` is ``"open"`` (qty > 0), ``"closed"`` (fully exited, qty = 0) or ``"removed"`` (a
mistaken entry taken out with no P&L booked).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

from engine.errors import ParameterError

SEGMENTS = ("spot", "perp", "future", "option", "index")
SOURCES = ("bot", "manual")
LEG_STATUSES = ("open", "closed", "removed")
OPTION_TYPES = ("C", "P")
#: relative tolerance of the "quantity is a multiple of the lot size" rule (float quantities)
LOT_TOLERANCE = 1e-9


class M2MError(ParameterError):
    """A strategy/leg request breaks a rule: ``field`` names the offending field, ``rule`` the rule.

    Raised before any state changes: a rejected request leaves the book and the aggregator as they were.
    """


def leg_unrealized(ltp: float, entry: float, qty: float, side: int, multiplier: float) -> float:
    """Unrealized P&L (M2M) of a leg in quote currency: (LTP − entry) × qty × side × multiplier (DESIGN.md)."""
    return (ltp - entry) * qty * side * multiplier


def leg_realized(exit_price: float, entry: float, qty: float, side: int, multiplier: float) -> float:
    """Realized P&L of exiting ``qty`` units at ``exit_price``: (exit − entry) × qty × side × multiplier."""
    return (exit_price - entry) * qty * side * multiplier


def is_lot_multiple(qty: float, lot_size: float) -> bool:
    """True when ``qty`` is a whole number of lots (any qty when ``lot_size`` is 0: no lot rule)."""
    if lot_size == 0:
        return True
    lots = qty / lot_size
    return abs(lots - round(lots)) <= LOT_TOLERANCE * max(1.0, abs(lots))


def _finite(name: str, value: float, *, positive: bool = False, non_negative: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise M2MError(name, f"must be a number, got {value!r}")
    v = float(value)
    if not math.isfinite(v):
        raise M2MError(name, f"must be finite, got {value!r}")
    if positive and not v > 0:
        raise M2MError(name, f"must be > 0, got {value!r}")
    if non_negative and v < 0:
        raise M2MError(name, f"must be >= 0, got {value!r}")
    return v


def _ts(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise M2MError(name, f"must be an int (ns since the epoch, UTC), got {value!r}")
    return value


def _text(name: str, value: str, *, allow_empty: bool = False) -> str:
    if not isinstance(value, str) or (not allow_empty and not value.strip()):
        raise M2MError(name, f"must be a non-empty string, got {value!r}")
    return value


def plain_row(obj: Any) -> dict[str, Any]:
    """A dataclass instance's fields as a dict, values as they are (not deep-copied like
    ``dataclasses.asdict``, which took seconds on a 40,000-leg book): for rows of scalars."""
    return {name: getattr(obj, name) for name in obj.__dataclass_fields__}


@dataclass(frozen=True, slots=True)
class LegSpec:
    """What a new leg is made of (the request of a manual add, or a leg built by an option helper).

    Attributes:
        symbol, exchange: the instrument ("NIFTY09MAY2422500CE", "NFO"); exchange may be "".
        segment: "spot" | "perp" | "future" | "option" | "index".
        side: +1 BUY, −1 SELL.
        qty: quantity in units (> 0, a multiple of ``lot_size``).
        entry_price: quote currency per unit (> 0; >= 0 for options, which may trade at 0).
        lot_size: units per lot (0, the default, = no lot rule).
        multiplier: quote currency per price point per unit (> 0).
        option_type, strike, expiry_ts, underlying, implied_vol: option fields ("C"/"P", quote currency,
            ns UTC, the underlying's symbol, a fraction per year such as 0.12); all None for non-options.
            An option leg may leave them None; it is then always marked at its own LTP (no model mark).
        notes: free text.
    """

    symbol: str
    side: int
    qty: float
    entry_price: float
    exchange: str = ""
    segment: str = "spot"
    lot_size: float = 0.0
    multiplier: float = 1.0
    option_type: str | None = None
    strike: float | None = None
    expiry_ts: int | None = None
    underlying: str | None = None
    implied_vol: float | None = None
    notes: str = ""

    def validate(self) -> None:
        """Check every field; raises :class:`M2MError` naming the first bad field and its rule."""
        _text("symbol", self.symbol)
        if not isinstance(self.exchange, str):
            raise M2MError("exchange", f"must be a string, got {self.exchange!r}")
        if self.segment not in SEGMENTS:
            raise M2MError("segment", f"must be one of {', '.join(SEGMENTS)}, got {self.segment!r}")
        if self.side not in (1, -1) or isinstance(self.side, bool):
            raise M2MError("side", f"must be +1 (BUY) or -1 (SELL), got {self.side!r}")
        qty = _finite("qty", self.qty, positive=True)
        lot = _finite("lot_size", self.lot_size, non_negative=True)
        if not is_lot_multiple(qty, lot):
            raise M2MError("qty", f"must be a multiple of lot_size {lot:g}, got {qty:g}")
        _finite("entry_price", self.entry_price, non_negative=True)
        if self.segment != "option" and not self.entry_price > 0:
            raise M2MError("entry_price", f"must be > 0, got {self.entry_price!r}")
        _finite("multiplier", self.multiplier, positive=True)
        if not isinstance(self.notes, str):
            raise M2MError("notes", f"must be a string, got {self.notes!r}")
        self._validate_option()

    def _validate_option(self) -> None:
        opt = (self.option_type, self.strike, self.expiry_ts, self.underlying, self.implied_vol)
        if self.segment != "option":
            if any(v is not None for v in opt):
                raise M2MError(
                    "option_type", f"option fields are only allowed when segment is 'option' ({self.segment!r})"
                )
            return
        if self.option_type is not None and self.option_type not in OPTION_TYPES:
            raise M2MError("option_type", f"must be 'C', 'P' or None for an option leg, got {self.option_type!r}")
        if self.strike is not None:
            _finite("strike", self.strike, positive=True)
        if self.expiry_ts is not None:
            _ts("expiry_ts", self.expiry_ts)
        if self.underlying is not None:
            _text("underlying", self.underlying)
        if self.implied_vol is not None:
            _finite("implied_vol", self.implied_vol, non_negative=True)
            if self.implied_vol > 10:
                raise M2MError("implied_vol", f"is a fraction per year (0.15 = 15 %), got {self.implied_vol!r}")

    @property
    def modelable(self) -> bool:
        """True when the leg has every field the Black-Scholes model mark needs."""
        return (
            self.segment == "option"
            and self.option_type is not None
            and self.strike is not None
            and self.expiry_ts is not None
            and self.underlying is not None
            and self.implied_vol is not None
        )


@dataclass(slots=True)
class Leg:
    """One leg of a strategy instance (see the module docstring for units and formulas).

    Attributes:
        leg_id: unique within the account's book. Legs opened from bot fills are ``"<bot_id>:<fill_id>"``.
        account_id, instance_id: the trading account and the strategy instance holding the leg.
        symbol, exchange, segment, side, lot_size, multiplier, option fields, notes: as in :class:`LegSpec`.
        qty: open quantity (units; > 0 while open, 0 when closed or removed).
        initial_qty: quantity at entry (units).
        entry_price: quote currency per unit. entry_ts: ns UTC.
        source: "bot" | "manual". bot_id: the bot whose fill opened the leg (None for manual legs).
        fill_id: the bot fill that opened the leg (None for manual legs).
        status: "open" | "closed" | "removed".
        realized_pnl: Σ realized P&L of the leg's exits (quote currency).
        updated_ts: ns UTC of the last change.
    """

    leg_id: str
    account_id: str
    instance_id: str
    symbol: str
    exchange: str
    segment: str
    side: int
    qty: float
    initial_qty: float
    lot_size: float
    multiplier: float
    entry_price: float
    entry_ts: int
    option_type: str | None = None
    strike: float | None = None
    expiry_ts: int | None = None
    underlying: str | None = None
    implied_vol: float | None = None
    source: str = "manual"
    bot_id: str | None = None
    fill_id: int | None = None
    notes: str = ""
    status: str = "open"
    realized_pnl: float = 0.0
    updated_ts: int = 0

    @classmethod
    def from_spec(
        cls,
        spec: LegSpec,
        *,
        leg_id: str,
        account_id: str,
        instance_id: str,
        ts: int,
        source: str = "manual",
        bot_id: str | None = None,
        fill_id: int | None = None,
    ) -> Leg:
        """A new open leg from a validated :class:`LegSpec`, entered at ``ts`` (ns UTC)."""
        return cls(
            leg_id=leg_id,
            account_id=account_id,
            instance_id=instance_id,
            symbol=spec.symbol,
            exchange=spec.exchange,
            segment=spec.segment,
            side=int(spec.side),
            qty=float(spec.qty),
            initial_qty=float(spec.qty),
            lot_size=float(spec.lot_size),
            multiplier=float(spec.multiplier),
            entry_price=float(spec.entry_price),
            entry_ts=ts,
            option_type=spec.option_type,
            strike=None if spec.strike is None else float(spec.strike),
            expiry_ts=spec.expiry_ts,
            underlying=spec.underlying,
            implied_vol=None if spec.implied_vol is None else float(spec.implied_vol),
            source=source,
            bot_id=bot_id,
            fill_id=fill_id,
            notes=spec.notes,
            status="open",
            realized_pnl=0.0,
            updated_ts=ts,
        )

    def spec(self) -> LegSpec:
        """The leg's instrument and entry as a :class:`LegSpec` (open quantity as ``qty``)."""
        return LegSpec(
            symbol=self.symbol,
            side=self.side,
            qty=self.qty if self.qty > 0 else self.initial_qty,
            entry_price=self.entry_price,
            exchange=self.exchange,
            segment=self.segment,
            lot_size=self.lot_size,
            multiplier=self.multiplier,
            option_type=self.option_type,
            strike=self.strike,
            expiry_ts=self.expiry_ts,
            underlying=self.underlying,
            implied_vol=self.implied_vol,
            notes=self.notes,
        )

    @property
    def is_open(self) -> bool:
        return self.status == "open"

    @property
    def modelable(self) -> bool:
        """True when the leg can be marked by the Black-Scholes model (an option with all its fields)."""
        return self.spec().modelable

    def unrealized(self, ltp: float) -> float:
        """M2M of the open quantity at ``ltp``: (LTP − entry) × qty × side × multiplier."""
        return leg_unrealized(ltp, self.entry_price, self.qty, self.side, self.multiplier)

    def realized(self, qty: float, price: float) -> float:
        """Realized P&L of exiting ``qty`` units at ``price``: (price − entry) × qty × side × multiplier."""
        return leg_realized(price, self.entry_price, qty, self.side, self.multiplier)

    def to_row(self) -> dict[str, Any]:
        """The leg as a plain dict (one row of a legs table)."""
        return plain_row(self)

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Leg:
        """A leg from :meth:`to_row` output (unknown keys are refused).

        Raises:
            M2MError: a missing or unknown column, or a field that breaks its rule.
        """
        names = {f.name for f in fields(cls)}
        unknown = set(row) - names
        if unknown:
            raise M2MError("legs", f"unknown column(s) {', '.join(sorted(unknown))}")
        try:
            leg = cls(**row)
        except TypeError as exc:
            raise M2MError("legs", f"bad row {row.get('leg_id')!r}: {exc}") from None
        leg.validate()
        return leg

    def validate(self) -> None:
        """Check a stored leg (its spec, ids, status, quantities). Raises :class:`M2MError`."""
        _text("leg_id", self.leg_id)
        _text("account_id", self.account_id)
        _text("instance_id", self.instance_id)
        if self.status not in LEG_STATUSES:
            raise M2MError("status", f"must be one of {', '.join(LEG_STATUSES)}, got {self.status!r}")
        if self.source not in SOURCES:
            raise M2MError("source", f"must be 'bot' or 'manual', got {self.source!r}")
        _ts("entry_ts", self.entry_ts)
        _ts("updated_ts", self.updated_ts)
        initial = _finite("initial_qty", self.initial_qty, positive=True)
        qty = _finite("qty", self.qty, non_negative=True)
        _finite("realized_pnl", self.realized_pnl)
        if self.status == "open" and not qty > 0:
            raise M2MError("qty", f"leg {self.leg_id!r} is open so qty must be > 0, got {qty!r}")
        if self.status != "open" and qty != 0:
            raise M2MError("qty", f"leg {self.leg_id!r} is {self.status} so qty must be 0, got {qty!r}")
        if qty > initial * (1 + LOT_TOLERANCE):
            raise M2MError("qty", f"leg {self.leg_id!r}: open qty {qty:g} exceeds initial_qty {initial:g}")
        LegSpec(**{**asdict(self.spec()), "qty": initial}).validate()


@dataclass(frozen=True, slots=True)
class LegExit:
    """One (partial) exit of a leg.

    Attributes:
        leg_id: the leg exited. exit_id: unique within the account's book (increasing).
        ts: ns UTC. qty: units exited (> 0). price: exit price, quote currency per unit.
        realized_pnl: (price − entry) × qty × side × multiplier, quote currency.
        bot_id, fill_id: the bot fill that caused the exit (None for manual exits and strategy closes).
    """

    leg_id: str
    exit_id: int
    ts: int
    qty: float
    price: float
    realized_pnl: float
    bot_id: str | None = None
    fill_id: int | None = None

    def to_row(self) -> dict[str, Any]:
        """The exit as a plain dict (one row of a leg-exits table)."""
        return plain_row(self)

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> LegExit:
        """An exit from :meth:`to_row` output. Raises :class:`M2MError` for a bad row."""
        try:
            ex = cls(**row)
        except TypeError as exc:
            raise M2MError("exits", f"bad row {row!r}: {exc}") from None
        _text("leg_id", ex.leg_id)
        _ts("exit_id", ex.exit_id)
        _ts("ts", ex.ts)
        _finite("qty", ex.qty, positive=True)
        _finite("price", ex.price, non_negative=True)
        _finite("realized_pnl", ex.realized_pnl)
        return ex


@dataclass(frozen=True, slots=True)
class BotFill:
    """A bot's execution to map into legs (see :meth:`engine.m2m.book.StrategyBook.apply_fill`).

    Attributes:
        fill_id: the venue/paper-exchange fill id; with the bot id it is the idempotency key.
        symbol: instrument. side: +1 BUY / −1 SELL. qty: units (> 0). price: quote currency per unit (> 0).
        ts: ns UTC. exchange, segment, lot_size, multiplier: used for a leg the fill opens
            (lot_size 0 = no lot rule: bots trade what the venue filled).
    """

    fill_id: int
    symbol: str
    side: int
    qty: float
    price: float
    ts: int
    exchange: str = ""
    segment: str = "perp"
    lot_size: float = 0.0
    multiplier: float = 1.0

    def validate(self) -> None:
        """Check every field; raises :class:`M2MError` naming the first bad one."""
        _ts("fill_id", self.fill_id)
        _ts("ts", self.ts)
        _finite("price", self.price, positive=True)
        LegSpec(
            symbol=self.symbol,
            side=self.side,
            qty=self.qty,
            entry_price=self.price,
            exchange=self.exchange,
            segment=self.segment,
            lot_size=self.lot_size,
            multiplier=self.multiplier,
        ).validate()
