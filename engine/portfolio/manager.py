"""The portfolio manager: allocation, equity per strategy and in total, drawdown and circuit breakers.

Source: seed 004, Phase 5 (5.1 allocation and aggregation, 5.2 equity snapshots, 5.3 circuit
breakers, 5.5 events). The manager is pure bookkeeping: the backtest loop (and later the live
portfolio actor) feeds it the equity of every strategy at each step, and asks it which strategies
may open exposure.

Definitions (money in quote currency, times in ns UTC, percentages in percent):

* allocated capital of strategy i = weight_i × portfolio equity, weight_i = allocation_i / 100;
* drawdown = (peak − equity) / peak × 100, the peak being the highest equity seen (per strategy and
  for the portfolio);
* **portfolio breaker**: when the portfolio drawdown reaches ``halt_drawdown_pct`` (25 %) every
  strategy is *halted*; it is released when the drawdown falls below ``resume_drawdown_pct`` (10 %);
* **strategy breaker**: a strategy whose own drawdown reaches ``pause_drawdown_pct`` (15 %) is
  *paused*; released below ``resume_drawdown_pct``;
* a halted or paused strategy keeps running in reduce-only mode: its callbacks still run so it can
  manage and close positions, but the risk manager rejects anything that opens or adds exposure
  (flattening on a trip would freeze its drawdown and it could never recover to resume);
* **force-resume** (manual override) releases a breaker at once and resets that peak to the current
  equity, so the same drawdown does not trip it again on the next step;
* an optional ``cooldown`` releases a breaker that has stayed tripped that long without recovering,
  resetting its peak: a paused strategy without positions has a flat equity and would otherwise
  wait for a manual force-resume forever (off by default, as in the seed);
* drawdown alerts fire when a drawdown first reaches one of ``alert_levels_pct`` in a drawdown
  episode (the levels re-arm when the equity makes a new peak);
* an equity snapshot is taken at the first step of every ``snapshot_interval`` bucket (UTC-aligned)
  and after each trade close.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from engine.errors import ParameterError
from engine.portfolio.events import (
    CIRCUIT_BREAKER,
    DRAWDOWN_ALERT,
    EQUITY_UPDATE,
    STATE_CHANGE,
    EventLog,
)
from engine.strategy.base import params_error
from engine.timeframes import NS_PER_DAY, timeframe_ns


class StrategyState(StrEnum):
    """Trading state of a strategy instance."""

    ACTIVE = "active"
    PAUSED = "paused"  # its own drawdown breaker
    HALTED = "halted"  # the portfolio breaker


class BreakerSettings(BaseModel):
    """Circuit-breaker and snapshot settings (percent of peak equity; intervals like "5m", "1h")."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    halt_drawdown_pct: float = Field(default=25.0, gt=0.0, le=100.0, allow_inf_nan=False)
    pause_drawdown_pct: float = Field(default=15.0, gt=0.0, le=100.0, allow_inf_nan=False)
    resume_drawdown_pct: float = Field(default=10.0, ge=0.0, lt=100.0, allow_inf_nan=False)
    alert_levels_pct: tuple[float, ...] = (5.0, 10.0, 15.0, 20.0)
    snapshot_interval: str = "5m"
    #: release a tripped breaker after this long even if the drawdown has not recovered, resetting the
    #: peak (a cool-down); None = wait for the recovery below resume_drawdown_pct or a force-resume
    cooldown: str | None = None

    @field_validator("snapshot_interval", "cooldown")
    @classmethod
    def _interval(cls, value: str | None) -> str | None:
        if value is not None:
            timeframe_ns(value)
        return value

    @field_validator("alert_levels_pct")
    @classmethod
    def _levels(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if any(not 0 < v <= 100 for v in value):
            raise ValueError("every alert level must be in (0, 100]")
        return tuple(sorted(set(value)))

    @model_validator(mode="after")
    def _order(self) -> BreakerSettings:
        if self.resume_drawdown_pct >= min(self.pause_drawdown_pct, self.halt_drawdown_pct):
            raise ParameterError(
                "resume_drawdown_pct",
                f"must be below pause_drawdown_pct and halt_drawdown_pct (got {self.resume_drawdown_pct}, "
                f"{self.pause_drawdown_pct}, {self.halt_drawdown_pct})",
            )
        return self

    @classmethod
    def parse(cls, raw: dict[str, Any]) -> BreakerSettings:
        """Validate raw settings. Raises ParameterError naming the field and the rule."""
        try:
            return cls.model_validate(raw)
        except ValidationError as exc:
            raise params_error(exc) from None

    @property
    def snapshot_ns(self) -> int:
        return timeframe_ns(self.snapshot_interval)

    @property
    def cooldown_ns(self) -> int | None:
        return None if self.cooldown is None else timeframe_ns(self.cooldown)


@dataclass(slots=True)
class _Book:
    """Equity, peak and drawdown of one strategy (or of the portfolio)."""

    equity: float
    peak: float
    drawdown: float = 0.0  # percent
    tripped: bool = False
    tripped_at: int = 0
    alerted: set[float] = field(default_factory=set)

    def mark(self, equity: float) -> float:
        self.equity = equity
        if equity > self.peak:
            self.peak = equity
        self.drawdown = (self.peak - equity) / self.peak * 100.0 if self.peak > 0 else 100.0
        return self.drawdown


@dataclass(frozen=True, slots=True)
class Snapshot:
    """One equity snapshot row: ``strategy`` is "" for the portfolio."""

    ts: int
    strategy: str
    equity: float
    peak: float
    drawdown_pct: float
    state: str


class PortfolioManager:
    """Allocation, equity, drawdown and breakers of one portfolio of strategy instances.

    Args:
        capital: initial portfolio capital (quote currency, > 0).
        allocations: strategy name → allocation in percent of capital (each in [0, 100], sum ≤ 100;
            the rest is an unallocated cash reserve).
        settings: :class:`BreakerSettings`.
        events: the event log to write to (a new one by default).

    Raises:
        ParameterError: capital ≤ 0, a bad allocation or a sum over 100.
    """

    def __init__(
        self,
        capital: float,
        allocations: dict[str, float],
        settings: BreakerSettings | None = None,
        events: EventLog | None = None,
    ) -> None:
        if not capital > 0:
            raise ParameterError("capital", f"must be > 0, got {capital}")
        if not allocations:
            raise ParameterError("strategies", "a portfolio needs at least one strategy")
        for name, pct in allocations.items():
            if not 0.0 <= pct <= 100.0:
                raise ParameterError(f"allocation.{name}", f"must be in [0, 100] percent, got {pct}")
        total = sum(allocations.values())
        if total > 100.0 + 1e-9:
            raise ParameterError("allocation", f"allocations must sum to at most 100 percent, got {total:g}")
        self.settings = settings or BreakerSettings()
        self.events = events if events is not None else EventLog()
        self.capital = float(capital)
        self.weights = {name: pct / 100.0 for name, pct in allocations.items()}
        self.reserve = self.capital * (1.0 - sum(self.weights.values()))
        self.books = {name: _Book(w * capital, w * capital) for name, w in self.weights.items()}
        self.portfolio = _Book(self.capital, self.capital)
        self.states = dict.fromkeys(allocations, StrategyState.ACTIVE)
        self.snapshots: list[Snapshot] = []
        self.day_start_equity = self.capital
        self._day = -1
        self._next_snapshot = -1

    # ------------------------------------------------------------------ queries
    def initial_capital(self, strategy: str) -> float:
        """The capital a strategy starts with: weight × initial capital."""
        return self.weights[strategy] * self.capital

    @property
    def equity(self) -> float:
        """Portfolio equity at the last update."""
        return self.portfolio.equity

    def allocated_capital(self, strategy: str, equity: float | None = None) -> float:
        """weight × portfolio equity (the last update's, or ``equity`` when given)."""
        return self.weights[strategy] * (self.portfolio.equity if equity is None else equity)

    def drawdown(self, strategy: str | None = None) -> float:
        """Current drawdown in percent of the peak (the portfolio's when ``strategy`` is None)."""
        return (self.portfolio if strategy is None else self.books[strategy]).drawdown

    def blocked(self) -> dict[str, str]:
        """Strategies that may not open exposure now → "portfolio_halted" or "strategy_paused"."""
        out: dict[str, str] = {}
        for name, state in self.states.items():
            if state is StrategyState.HALTED:
                out[name] = "portfolio_halted"
            elif state is StrategyState.PAUSED:
                out[name] = "strategy_paused"
        return out

    # ------------------------------------------------------------------ updates
    def update(self, ts: int, equities: dict[str, float]) -> None:
        """Record every strategy's equity at ``ts`` and run the breakers, alerts and snapshots.

        ``equities`` must name every strategy; the portfolio equity is their sum plus the reserve.
        Call it at each step of the timeline, in time order.
        """
        day = ts // NS_PER_DAY
        if day != self._day:
            # the equity of the last step before this day began is the day's opening equity
            self.day_start_equity = self.portfolio.equity if self._day >= 0 else self.capital
            self._day = day
        s = self.settings
        total = self.reserve
        for name, book in self.books.items():
            equity = equities[name]
            total += equity
            dd = book.mark(equity)
            self._alerts(ts, name, book, dd)
            if not book.tripped and dd >= s.pause_drawdown_pct:
                book.tripped = True
                book.tripped_at = ts
                self.events.emit(
                    ts,
                    CIRCUIT_BREAKER,
                    name,
                    scope="strategy",
                    action="trip",
                    drawdown_pct=dd,
                    threshold_pct=s.pause_drawdown_pct,
                    equity=equity,
                    peak=book.peak,
                )
            elif book.tripped and (dd < s.resume_drawdown_pct or self._cooled(book, ts)):
                self._release(ts, name, book, "strategy")
        pf = self.portfolio
        dd = pf.mark(total)
        self._alerts(ts, "", pf, dd)
        if not pf.tripped and dd >= s.halt_drawdown_pct:
            pf.tripped = True
            pf.tripped_at = ts
            self.events.emit(
                ts,
                CIRCUIT_BREAKER,
                "",
                scope="portfolio",
                action="trip",
                drawdown_pct=dd,
                threshold_pct=s.halt_drawdown_pct,
                equity=total,
                peak=pf.peak,
            )
        elif pf.tripped and (dd < s.resume_drawdown_pct or self._cooled(pf, ts)):
            self._release(ts, "", pf, "portfolio")
        self._states(ts)
        if ts >= self._next_snapshot:
            step = s.snapshot_ns
            self._next_snapshot = (ts // step + 1) * step
            self.snapshot(ts, reason="interval")

    def snapshot(self, ts: int, reason: str) -> None:
        """Record an equity snapshot of the portfolio and every strategy, and an equity_update event."""
        pf = self.portfolio
        self.snapshots.append(Snapshot(ts, "", pf.equity, pf.peak, pf.drawdown, "halted" if pf.tripped else "active"))
        for name, book in self.books.items():
            self.snapshots.append(Snapshot(ts, name, book.equity, book.peak, book.drawdown, self.states[name].value))
        self.events.emit(
            ts,
            EQUITY_UPDATE,
            "",
            reason=reason,
            equity=pf.equity,
            peak=pf.peak,
            drawdown_pct=pf.drawdown,
            strategies={name: book.equity for name, book in self.books.items()},
        )

    def force_resume(self, ts: int, strategy: str | None = None) -> None:
        """Manual override: release the portfolio breaker (``strategy`` None) or one strategy's breaker.

        The released book's peak is reset to its current equity. Raises ParameterError for an
        unknown strategy.
        """
        if strategy is not None and strategy not in self.books:
            raise ParameterError("strategy", f"unknown strategy {strategy!r} (known: {', '.join(self.books)})")
        book = self.portfolio if strategy is None else self.books[strategy]
        was = book.tripped
        book.tripped = False
        book.peak = book.equity
        book.drawdown = 0.0
        book.alerted.clear()
        self.events.emit(
            ts,
            CIRCUIT_BREAKER,
            strategy or "",
            scope="portfolio" if strategy is None else "strategy",
            action="release",
            manual=True,
            was_tripped=was,
            equity=book.equity,
        )
        self._states(ts)

    # ------------------------------------------------------------------ internals
    def _cooled(self, book: _Book, ts: int) -> bool:
        cooldown = self.settings.cooldown_ns
        return cooldown is not None and ts - book.tripped_at >= cooldown

    def _release(self, ts: int, name: str, book: _Book, scope: str) -> None:
        """Automatic release: the drawdown recovered below the resume level, or the cool-down ran out
        (then the peak is reset to the current equity)."""
        recovered = book.drawdown < self.settings.resume_drawdown_pct
        book.tripped = False
        if not recovered:
            book.peak = book.equity
            book.drawdown = 0.0
            book.alerted.clear()
        self.events.emit(
            ts,
            CIRCUIT_BREAKER,
            name,
            scope=scope,
            action="release",
            manual=False,
            reason="recovered" if recovered else "cooldown",
            drawdown_pct=book.drawdown,
            threshold_pct=self.settings.resume_drawdown_pct,
            equity=book.equity,
            peak=book.peak,
        )

    def _alerts(self, ts: int, name: str, book: _Book, dd: float) -> None:
        if dd == 0.0:
            book.alerted.clear()  # a new peak ends the drawdown episode: the levels re-arm
            return
        for level in self.settings.alert_levels_pct:
            if dd >= level and level not in book.alerted:
                book.alerted.add(level)
                self.events.emit(ts, DRAWDOWN_ALERT, name, level_pct=level, drawdown_pct=dd, equity=book.equity)

    def _states(self, ts: int) -> None:
        halted = self.portfolio.tripped
        for name, book in self.books.items():
            new = StrategyState.HALTED if halted else StrategyState.PAUSED if book.tripped else StrategyState.ACTIVE
            old = self.states[name]
            if new is not old:
                self.states[name] = new
                self.events.emit(ts, STATE_CHANGE, name, old=old.value, new=new.value)
