"""The strategies and legs of one trading account: the bookkeeping behind per-strategy M2M.

A :class:`StrategyBook` holds one account's **strategies** (strategy instances: a bot's instance or a
manual grouping of legs) and their **legs** and **exits** (:mod:`engine.m2m.legs`). Every account has
exactly one default strategy, created with the book (instance id ``"<account_id>:default"`` unless
given), which cannot be renamed or archived.

Rules (each refusal raises :class:`~engine.m2m.legs.M2MError` naming the field and the rule, and changes
nothing):

* **Scope**: a book knows only its own account. An instance id or leg id it does not hold, including
  one of another account, is refused as unknown.
* **Archive** is a soft delete and is refused while the strategy has open legs (exit or remove them
  first); an archived strategy is read-only (no rename, no legs, no fills).
* **Manual legs** (:meth:`StrategyBook.add_leg`) must be whole lots; a **partial exit**
  (:meth:`StrategyBook.exit_leg`) books (X − entry) × q × side × multiplier of realized P&L and must be
  whole lots too unless it closes the leg. :meth:`StrategyBook.remove_leg` takes out a mistaken entry
  with no P&L, and is refused once the leg has exits (exit it instead).
* **Bot fills** (:meth:`StrategyBook.apply_fill`): a fill opposite to the open bot-sourced legs of the
  same instance and symbol exits them first-in-first-out (oldest entry first, partially if needed);
  any remainder, and any same-side fill, opens a new leg ``"<bot_id>:<fill_id>"``. Manual legs on the
  same symbol are never touched by fills. A ``(bot_id, fill_id)`` seen before is ignored.
* **Idempotency**: a create/add with an id that exists with the same content, an exit with an
  ``exit_id`` already booked for the same leg, and a repeated fill return an empty change; the same
  id with different content is refused.

Every operation returns a :class:`BookChange` (the strategies, legs and exits it created or changed,
as copies) so an actor can persist it, and notifies the book's listener (the M2M aggregator) with it.
:meth:`StrategyBook.to_rows` / :meth:`StrategyBook.from_rows` turn the book into plain rows and back.

Units: prices in quote currency per unit, quantities in units, money in quote currency, ts in ns UTC.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from engine.m2m.legs import (
    LOT_TOLERANCE,
    BotFill,
    Leg,
    LegExit,
    LegSpec,
    M2MError,
    _finite,
    _text,
    _ts,
    is_lot_multiple,
    plain_row,
)

STRATEGY_STATUSES = ("active", "archived")
MAX_NAME = 100
MAX_TAG = 50


@dataclass(slots=True)
class Strategy:
    """One strategy instance of an account.

    Attributes:
        instance_id: unique id (bots use their strategy instance id). account_id: the owner.
        name: display name (1–100 characters). is_default: the account's default strategy.
        tags: labels (each 1–50 characters, no duplicates).
        target_profit: total P&L (quote currency, > 0) at which a "target" event fires, or None.
        stop_loss: loss amount (quote currency, > 0): a "stop" event fires when total P&L <= −stop_loss; or None.
        status: "active" | "archived". created_ts, updated_ts: ns UTC.
    """

    instance_id: str
    account_id: str
    name: str
    is_default: bool = False
    tags: list[str] = field(default_factory=list)
    target_profit: float | None = None
    stop_loss: float | None = None
    status: str = "active"
    created_ts: int = 0
    updated_ts: int = 0

    def to_row(self) -> dict[str, Any]:
        """The strategy as a plain dict (tags as a new list)."""
        row = plain_row(self)
        row["tags"] = list(self.tags)
        return row


@dataclass(frozen=True, slots=True)
class BookChange:
    """What one book operation changed (copies, safe to keep).

    Attributes:
        account_id: the book's account. ts: the operation's time (ns UTC). kind: the operation name.
        strategies: strategies created or changed. legs: legs created or changed (their new state).
        exits: exits booked. opened: ids of the legs this operation opened.
    """

    account_id: str
    ts: int
    kind: str
    strategies: tuple[Strategy, ...] = ()
    legs: tuple[Leg, ...] = ()
    exits: tuple[LegExit, ...] = ()
    opened: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        """True when nothing changed (a repeated id or fill)."""
        return not (self.strategies or self.legs or self.exits)

    @property
    def realized_pnl(self) -> float:
        """Σ realized P&L of the exits booked (quote currency)."""
        return sum(e.realized_pnl for e in self.exits)


def _name(value: str) -> str:
    _text("name", value)
    name = value.strip()
    if len(name) > MAX_NAME:
        raise M2MError("name", f"must be at most {MAX_NAME} characters, got {len(name)}")
    return name


def _tags(values: Iterable[str]) -> list[str]:
    if isinstance(values, str):
        raise M2MError("tags", "must be a list of strings, not one string")
    out: list[str] = []
    for v in values:
        if not isinstance(v, str) or not v.strip() or len(v.strip()) > MAX_TAG:
            raise M2MError("tags", f"each tag must be a string of 1-{MAX_TAG} characters, got {v!r}")
        if v.strip() not in out:
            out.append(v.strip())
    return out


def _limit(name: str, value: float | None) -> float | None:
    return None if value is None else _finite(name, value, positive=True)


class StrategyBook:
    """Strategies, legs and exits of one trading account (see the module docstring for the rules).

    Args:
        account_id: the trading account.
        ts: creation time of the default strategy (ns UTC).
        default_instance_id: the default strategy's id (``"<account_id>:default"`` when None).
        default_name: its name.

    Raises:
        M2MError: an empty account id or a bad default name.
    """

    def __init__(
        self,
        account_id: str,
        ts: int = 0,
        *,
        default_instance_id: str | None = None,
        default_name: str = "Default Strategy",
    ) -> None:
        self.account_id = _text("account_id", account_id)
        _ts("ts", ts)
        did = default_instance_id if default_instance_id is not None else f"{account_id}:default"
        self._strategies: dict[str, Strategy] = {}
        self._legs: dict[str, Leg] = {}
        self._exits: list[LegExit] = []
        self._exit_index: dict[int, LegExit] = {}
        self._by_instance: dict[str, list[str]] = {}
        self._seen_fills: set[tuple[str, int]] = set()
        self._next_exit_id = 1
        self._next_leg_seq = 1
        self._listener: Callable[[BookChange], None] | None = None
        default = Strategy(
            _text("default_instance_id", did), account_id, _name(default_name), True, [], None, None, "active", ts, ts
        )
        self._strategies[did] = default
        self._by_instance[did] = []
        self.default_instance_id = did

    # ------------------------------------------------------------------ listener
    def set_listener(self, listener: Callable[[BookChange], None] | None) -> None:
        """Call ``listener(change)`` after every operation that changed something (one listener)."""
        self._listener = listener

    def _emit(self, change: BookChange) -> BookChange:
        if self._listener is not None and not change.empty:
            self._listener(change)
        return change

    def _none(self, ts: int, kind: str) -> BookChange:
        return BookChange(self.account_id, ts, kind)

    # ------------------------------------------------------------------ queries
    def strategy(self, instance_id: str) -> Strategy:
        """The strategy ``instance_id`` (the live object: do not modify it).

        Raises:
            M2MError: unknown in this account.
        """
        s = self._strategies.get(instance_id)
        if s is None:
            raise M2MError("instance_id", f"unknown strategy instance {instance_id!r} in account {self.account_id!r}")
        return s

    def has_strategy(self, instance_id: str) -> bool:
        return instance_id in self._strategies

    def strategies(self, *, include_archived: bool = True) -> list[Strategy]:
        """Strategies in creation order."""
        return [s for s in self._strategies.values() if include_archived or s.status == "active"]

    def leg(self, leg_id: str) -> Leg:
        """The leg ``leg_id`` (the live object). Raises :class:`M2MError` when unknown in this account."""
        leg = self._legs.get(leg_id)
        if leg is None:
            raise M2MError("leg_id", f"unknown leg {leg_id!r} in account {self.account_id!r}")
        return leg

    def legs(self, instance_id: str | None = None, *, open_only: bool = False) -> list[Leg]:
        """Legs of ``instance_id`` (all instances when None) in entry order."""
        if instance_id is None:
            legs: Iterable[Leg] = self._legs.values()
        else:
            self.strategy(instance_id)
            legs = (self._legs[i] for i in self._by_instance[instance_id])
        return [leg for leg in legs if leg.is_open or not open_only]

    def open_legs(self, instance_id: str, symbol: str | None = None) -> list[Leg]:
        """Open legs of ``instance_id`` (on ``symbol`` when given), oldest first."""
        return [leg for leg in self.legs(instance_id, open_only=True) if symbol is None or leg.symbol == symbol]

    def exits(self, leg_id: str | None = None) -> list[LegExit]:
        """Exits (of ``leg_id`` when given) in booking order."""
        return [e for e in self._exits if leg_id is None or e.leg_id == leg_id]

    def realized_pnl(self, instance_id: str) -> float:
        """Σ realized P&L of the strategy's legs (quote currency)."""
        return sum(leg.realized_pnl for leg in self.legs(instance_id))

    def unrealized_pnl(self, instance_id: str, prices: Mapping[str, float]) -> float:
        """Σ (LTP − entry) × qty × side × multiplier over the open legs, LTP from ``prices`` (symbol → price;
        a leg whose symbol is missing counts at its entry price, i.e. 0)."""
        return sum(leg.unrealized(prices.get(leg.symbol, leg.entry_price)) for leg in self.open_legs(instance_id))

    def fill_seen(self, bot_id: str, fill_id: int) -> bool:
        """True when the fill ``(bot_id, fill_id)`` has been applied."""
        return (bot_id, fill_id) in self._seen_fills

    # ------------------------------------------------------------------ strategies
    def _active(self, instance_id: str) -> Strategy:
        s = self.strategy(instance_id)
        if s.status != "active":
            raise M2MError("instance_id", f"strategy {instance_id!r} is archived (read-only)")
        return s

    def create_strategy(
        self,
        instance_id: str,
        name: str,
        ts: int,
        *,
        tags: Iterable[str] = (),
        target_profit: float | None = None,
        stop_loss: float | None = None,
    ) -> BookChange:
        """Create an active strategy. Returns the change (the new strategy).

        Raises:
            M2MError: empty id or name, name over 100 characters, bad tags, a target/stop that is not > 0,
                or an existing ``instance_id`` with different content (same content: empty change).
        """
        _text("instance_id", instance_id)
        _ts("ts", ts)
        new = Strategy(
            instance_id,
            self.account_id,
            _name(name),
            False,
            _tags(tags),
            _limit("target_profit", target_profit),
            _limit("stop_loss", stop_loss),
            "active",
            ts,
            ts,
        )
        old = self._strategies.get(instance_id)
        if old is not None:
            same = (old.name, old.tags, old.target_profit, old.stop_loss, old.is_default) == (
                new.name,
                new.tags,
                new.target_profit,
                new.stop_loss,
                False,
            )
            if same:
                return self._none(ts, "create_strategy")
            raise M2MError("instance_id", f"strategy {instance_id!r} already exists in account {self.account_id!r}")
        self._strategies[instance_id] = new
        self._by_instance[instance_id] = []
        return self._emit(BookChange(self.account_id, ts, "create_strategy", (replace(new, tags=list(new.tags)),)))

    def _update(self, s: Strategy, ts: int, kind: str, **changes: Any) -> BookChange:
        for k, v in changes.items():
            setattr(s, k, v)
        s.updated_ts = max(s.updated_ts, ts)
        return self._emit(BookChange(self.account_id, ts, kind, (replace(s, tags=list(s.tags)),)))

    def rename_strategy(self, instance_id: str, name: str, ts: int) -> BookChange:
        """Rename a strategy. Raises :class:`M2MError` for the default strategy, an archived or unknown one,
        or a bad name."""
        _ts("ts", ts)
        s = self._active(instance_id)
        if s.is_default:
            raise M2MError("instance_id", f"the default strategy {instance_id!r} cannot be renamed")
        return self._update(s, ts, "rename_strategy", name=_name(name))

    def set_tags(self, instance_id: str, tags: Iterable[str], ts: int) -> BookChange:
        """Replace a strategy's tags. Raises :class:`M2MError` for bad tags or an archived/unknown strategy."""
        _ts("ts", ts)
        s = self._active(instance_id)
        return self._update(s, ts, "set_tags", tags=_tags(tags))

    def set_limits(
        self, instance_id: str, ts: int, *, target_profit: float | None, stop_loss: float | None
    ) -> BookChange:
        """Set (None clears) the target profit and the stop loss, both > 0 quote currency; the stop fires
        when total P&L <= −stop_loss. Raises :class:`M2MError` for a value that is not > 0 or an
        archived/unknown strategy."""
        _ts("ts", ts)
        s = self._active(instance_id)
        return self._update(
            s,
            ts,
            "set_limits",
            target_profit=_limit("target_profit", target_profit),
            stop_loss=_limit("stop_loss", stop_loss),
        )

    def archive_strategy(self, instance_id: str, ts: int) -> BookChange:
        """Archive (soft-delete) a strategy; its legs and exits stay.

        Raises:
            M2MError: the default strategy, a strategy with open legs, or an unknown one (archiving an
                archived strategy again returns an empty change).
        """
        _ts("ts", ts)
        s = self.strategy(instance_id)
        if s.is_default:
            raise M2MError("instance_id", f"the default strategy {instance_id!r} cannot be archived")
        if s.status == "archived":
            return self._none(ts, "archive_strategy")
        n_open = len(self.open_legs(instance_id))
        if n_open:
            raise M2MError(
                "instance_id", f"strategy {instance_id!r} has {n_open} open leg(s): exit or remove them first"
            )
        return self._update(s, ts, "archive_strategy", status="archived")

    # ------------------------------------------------------------------ legs
    def _new_leg_id(self) -> str:
        # "<account>:m<n>": unique across accounts (a stored leg's id is its primary key)
        while f"{self.account_id}:m{self._next_leg_seq}" in self._legs:
            self._next_leg_seq += 1
        leg_id = f"{self.account_id}:m{self._next_leg_seq}"
        self._next_leg_seq += 1
        return leg_id

    def _open(self, leg: Leg) -> None:
        self._legs[leg.leg_id] = leg
        self._by_instance[leg.instance_id].append(leg.leg_id)

    def add_leg(self, instance_id: str, spec: LegSpec, ts: int, *, leg_id: str | None = None) -> BookChange:
        """Open a manual leg in ``instance_id`` at ``ts`` (ns UTC); ``leg_id`` defaults to ``"<account>:m<n>"``.

        Raises:
            M2MError: a bad spec field (see :meth:`LegSpec.validate`), an archived or unknown strategy,
                or an existing ``leg_id`` with different content (same content: empty change).
        """
        _ts("ts", ts)
        self._active(instance_id)
        if not isinstance(spec, LegSpec):
            raise M2MError("spec", f"must be a LegSpec, got {type(spec).__name__}")
        spec.validate()
        if leg_id is not None:
            _text("leg_id", leg_id)
            old = self._legs.get(leg_id)
            if old is not None:
                if (
                    old.instance_id == instance_id
                    and old.source == "manual"
                    and old.entry_ts == ts
                    and replace(old.spec(), qty=old.initial_qty) == spec
                ):
                    return self._none(ts, "add_leg")
                raise M2MError("leg_id", f"leg {leg_id!r} already exists in account {self.account_id!r}")
        leg = Leg.from_spec(
            spec, leg_id=leg_id or self._new_leg_id(), account_id=self.account_id, instance_id=instance_id, ts=ts
        )
        self._open(leg)
        return self._emit(BookChange(self.account_id, ts, "add_leg", (), (replace(leg),), (), (leg.leg_id,)))

    def _exit_qty(self, leg: Leg, qty: float, *, enforce_lot: bool) -> float:
        q = _finite("qty", qty, positive=True)
        if q > leg.qty * (1 + LOT_TOLERANCE):
            raise M2MError("qty", f"exceeds the open quantity {leg.qty:g} of leg {leg.leg_id!r}, got {q:g}")
        closes = q >= leg.qty * (1 - LOT_TOLERANCE)
        if enforce_lot and not closes and not is_lot_multiple(q, leg.lot_size):
            raise M2MError("qty", f"must be a multiple of lot_size {leg.lot_size:g} (or the whole open qty), got {q:g}")
        return leg.qty if closes else q

    def _price(self, name: str, leg: Leg, price: float) -> float:
        p = _finite(name, price, non_negative=True)
        if leg.segment != "option" and not p > 0:
            raise M2MError(name, f"must be > 0 for a {leg.segment} leg, got {price!r}")
        return p

    def _book_exit(
        self,
        leg: Leg,
        q: float,
        price: float,
        ts: int,
        exit_id: int | None,
        bot_id: str | None = None,
        fill_id: int | None = None,
    ) -> LegExit:
        """Apply a validated exit to ``leg`` (q already snapped to the open qty when it closes the leg)."""
        if exit_id is None:
            exit_id = self._next_exit_id
        self._next_exit_id = max(self._next_exit_id, exit_id + 1)
        pnl = leg.realized(q, price)
        ex = LegExit(leg.leg_id, exit_id, ts, q, price, pnl, bot_id, fill_id)
        self._exits.append(ex)
        self._exit_index[exit_id] = ex
        leg.qty = 0.0 if q >= leg.qty else leg.qty - q
        if leg.qty == 0.0:
            leg.status = "closed"
        leg.realized_pnl += pnl
        leg.updated_ts = max(leg.updated_ts, ts)
        return ex

    def exit_leg(self, leg_id: str, qty: float, price: float, ts: int, *, exit_id: int | None = None) -> BookChange:
        """Exit ``qty`` units of an open leg at ``price`` at ``ts``, booking (price − entry) × qty × side ×
        multiplier of realized P&L; exiting the whole open quantity closes the leg.

        ``exit_id`` (optional) makes a retry safe: an exit id already booked for this leg with the same
        qty and price returns an empty change.

        Raises:
            M2MError: unknown or not-open leg, archived strategy, qty <= 0 or above the open quantity, a
                partial qty that is not whole lots, a bad price, or an ``exit_id`` used by another exit.
        """
        _ts("ts", ts)
        if exit_id is not None:
            _ts("exit_id", exit_id)
            old = self._exit_index.get(exit_id)
            if old is not None:
                if old.leg_id == leg_id and old.qty == qty and old.price == price:
                    return self._none(ts, "exit_leg")
                raise M2MError("exit_id", f"exit {exit_id} already exists for leg {old.leg_id!r}")
            if exit_id <= 0:
                raise M2MError("exit_id", f"must be > 0, got {exit_id}")
        leg = self.leg(leg_id)
        self._active(leg.instance_id)
        if not leg.is_open:
            raise M2MError("leg_id", f"leg {leg_id!r} is {leg.status}, not open")
        q = self._exit_qty(leg, qty, enforce_lot=True)
        p = self._price("price", leg, price)
        ex = self._book_exit(leg, q, p, ts, exit_id)
        return self._emit(BookChange(self.account_id, ts, "exit_leg", (), (replace(leg),), (ex,)))

    def remove_leg(self, leg_id: str, ts: int) -> BookChange:
        """Take out a mistaken open leg: status "removed", qty 0, no P&L booked.

        Raises:
            M2MError: unknown or not-open leg, a leg that already has exits, or an archived strategy.
        """
        _ts("ts", ts)
        leg = self.leg(leg_id)
        self._active(leg.instance_id)
        if not leg.is_open:
            raise M2MError("leg_id", f"leg {leg_id!r} is {leg.status}, not open")
        if leg.qty != leg.initial_qty or any(e.leg_id == leg_id for e in self._exits):
            raise M2MError("leg_id", f"leg {leg_id!r} has exits: exit it instead of removing it")
        leg.qty = 0.0
        leg.status = "removed"
        leg.updated_ts = max(leg.updated_ts, ts)
        return self._emit(BookChange(self.account_id, ts, "remove_leg", (), (replace(leg),)))

    def close_strategy(self, instance_id: str, prices: Mapping[str, float], ts: int) -> BookChange:
        """Exit every open leg of ``instance_id`` at ``prices[symbol]`` (quote currency per unit) at ``ts``.

        Raises:
            M2MError: an archived or unknown strategy, or a missing/bad price (field ``prices[<symbol>]``);
                nothing is exited then.
        """
        _ts("ts", ts)
        self._active(instance_id)
        legs = self.open_legs(instance_id)
        plan: list[tuple[Leg, float]] = []
        for leg in legs:
            if leg.symbol not in prices:
                raise M2MError(f"prices[{leg.symbol}]", f"a price is needed to close leg {leg.leg_id!r}")
            plan.append((leg, self._price(f"prices[{leg.symbol}]", leg, prices[leg.symbol])))
        exits = tuple(self._book_exit(leg, leg.qty, p, ts, None) for leg, p in plan)
        return self._emit(
            BookChange(self.account_id, ts, "close_strategy", (), tuple(replace(leg) for leg, _ in plan), exits)
        )

    def apply_fill(self, instance_id: str, bot_id: str, fill: BotFill) -> BookChange:
        """Map a bot's fill into legs (see the module docstring: FIFO exits of opposite bot legs, the rest
        opens leg ``"<bot_id>:<fill_id>"``). A fill already applied returns an empty change.

        Raises:
            M2MError: a bad fill field, empty bot id, an archived or unknown strategy, or a leg id
                ``"<bot_id>:<fill_id>"`` already used by another leg.
        """
        _text("bot_id", bot_id)
        if not isinstance(fill, BotFill):
            raise M2MError("fill", f"must be a BotFill, got {type(fill).__name__}")
        fill.validate()
        if (bot_id, fill.fill_id) in self._seen_fills:
            return self._none(fill.ts, "apply_fill")
        self._active(instance_id)
        leg_id = f"{bot_id}:{fill.fill_id}"
        if leg_id in self._legs:
            raise M2MError("fill_id", f"leg id {leg_id!r} is already used in account {self.account_id!r}")
        remaining = float(fill.qty)
        plan: list[tuple[Leg, float]] = []
        for leg in self.open_legs(instance_id, fill.symbol):
            if remaining <= 0:
                break
            if leg.source != "bot" or leg.side != -fill.side:
                continue
            q = leg.qty if remaining >= leg.qty * (1 - LOT_TOLERANCE) else remaining
            plan.append((leg, q))
            remaining = 0.0 if q >= remaining * (1 - LOT_TOLERANCE) else remaining - q
        self._seen_fills.add((bot_id, fill.fill_id))
        exits = tuple(self._book_exit(leg, q, fill.price, fill.ts, None, bot_id, fill.fill_id) for leg, q in plan)
        legs = [replace(leg) for leg, _ in plan]
        opened: tuple[str, ...] = ()
        if remaining > fill.qty * LOT_TOLERANCE:
            spec = LegSpec(
                symbol=fill.symbol,
                side=fill.side,
                qty=remaining,
                entry_price=fill.price,
                exchange=fill.exchange,
                segment=fill.segment,
                lot_size=fill.lot_size,
                multiplier=fill.multiplier,
            )
            leg = Leg.from_spec(
                spec,
                leg_id=leg_id,
                account_id=self.account_id,
                instance_id=instance_id,
                ts=fill.ts,
                source="bot",
                bot_id=bot_id,
                fill_id=fill.fill_id,
            )
            self._open(leg)
            legs.append(replace(leg))
            opened = (leg_id,)
        return self._emit(BookChange(self.account_id, fill.ts, "apply_fill", (), tuple(legs), exits, opened))

    # ------------------------------------------------------------------ rows
    def to_rows(self) -> dict[str, list[dict[str, Any]]]:
        """The whole book as plain rows: ``{"strategies": [...], "legs": [...], "exits": [...]}``."""
        return {
            "strategies": [s.to_row() for s in self._strategies.values()],
            "legs": [leg.to_row() for leg in self._legs.values()],
            "exits": [e.to_row() for e in self._exits],
        }

    @classmethod
    def from_rows(
        cls,
        account_id: str,
        strategies: Iterable[Mapping[str, Any]],
        legs: Iterable[Mapping[str, Any]] = (),
        exits: Iterable[Mapping[str, Any]] = (),
    ) -> StrategyBook:
        """Rebuild a book from stored rows (as :meth:`to_rows` gives them; legs in entry order, exits in
        booking order). Applied fills are recovered from the legs' and exits' ``(bot_id, fill_id)``.

        Raises:
            M2MError: rows of another account, not exactly one default strategy, a leg of an unknown
                strategy, an exit of an unknown leg, duplicate ids, or a leg whose open qty plus its exits'
                qty is not its initial qty (or whose realized P&L is not the sum of its exits').
        """
        srows = [dict(r) for r in strategies]
        defaults = [r for r in srows if r.get("is_default")]
        if len(defaults) != 1:
            raise M2MError(
                "strategies", f"account {account_id!r} must have exactly one default strategy, got {len(defaults)}"
            )
        d = defaults[0]
        book = cls(
            account_id, int(d.get("created_ts", 0)), default_instance_id=d["instance_id"], default_name=d["name"]
        )
        book._strategies.clear()
        book._by_instance.clear()
        for r in srows:
            try:
                s = Strategy(**r)
            except TypeError as exc:
                raise M2MError("strategies", f"bad row {r.get('instance_id')!r}: {exc}") from None
            if s.account_id != account_id:
                raise M2MError(
                    "account_id", f"strategy {s.instance_id!r} belongs to account {s.account_id!r}, not {account_id!r}"
                )
            if s.instance_id in book._strategies:
                raise M2MError("instance_id", f"duplicate strategy {s.instance_id!r}")
            if s.status not in STRATEGY_STATUSES:
                raise M2MError("status", f"must be 'active' or 'archived', got {s.status!r}")
            s.name, s.tags = _name(s.name), _tags(s.tags)
            s.target_profit, s.stop_loss = _limit("target_profit", s.target_profit), _limit("stop_loss", s.stop_loss)
            book._strategies[s.instance_id] = s
            book._by_instance[s.instance_id] = []
        for lrow in legs:
            leg = Leg.from_row(dict(lrow))
            if leg.account_id != account_id:
                raise M2MError(
                    "account_id", f"leg {leg.leg_id!r} belongs to account {leg.account_id!r}, not {account_id!r}"
                )
            if leg.instance_id not in book._strategies:
                raise M2MError("instance_id", f"leg {leg.leg_id!r} refers to unknown strategy {leg.instance_id!r}")
            if leg.leg_id in book._legs:
                raise M2MError("leg_id", f"duplicate leg {leg.leg_id!r}")
            book._open(leg)
            if leg.source == "bot" and leg.bot_id is not None and leg.fill_id is not None:
                book._seen_fills.add((leg.bot_id, leg.fill_id))
        exited: dict[str, tuple[float, float]] = {}
        for xrow in exits:
            ex = LegExit.from_row(dict(xrow))
            if ex.leg_id not in book._legs:
                raise M2MError("leg_id", f"exit {ex.exit_id} refers to unknown leg {ex.leg_id!r}")
            if ex.exit_id in book._exit_index:
                raise M2MError("exit_id", f"duplicate exit {ex.exit_id}")
            book._exits.append(ex)
            book._exit_index[ex.exit_id] = ex
            book._next_exit_id = max(book._next_exit_id, ex.exit_id + 1)
            q, p = exited.get(ex.leg_id, (0.0, 0.0))
            exited[ex.leg_id] = (q + ex.qty, p + ex.realized_pnl)
            if ex.bot_id is not None and ex.fill_id is not None:
                book._seen_fills.add((ex.bot_id, ex.fill_id))
        for leg in book._legs.values():
            q, p = exited.get(leg.leg_id, (0.0, 0.0))
            if leg.status != "removed" and not math.isclose(leg.qty + q, leg.initial_qty, rel_tol=1e-9, abs_tol=1e-12):
                raise M2MError(
                    "qty", f"leg {leg.leg_id!r}: open qty {leg.qty:g} + exited {q:g} != initial {leg.initial_qty:g}"
                )
            if not math.isclose(leg.realized_pnl, p, rel_tol=1e-9, abs_tol=1e-6):
                raise M2MError("realized_pnl", f"leg {leg.leg_id!r}: {leg.realized_pnl} != Σ exits {p}")
        return book
