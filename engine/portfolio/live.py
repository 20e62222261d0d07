"""The live portfolio of one trading account: one risk view over many running bots.

The portfolio backtest steps every strategy instance on one timeline in one process; live, each bot
runs on its own (an actor) and tells the portfolio where it stands after every batch of market
data: its equity and its exposures (open positions with their stops, pending entry orders). This
module keeps the latest report of every bot and hosts the same :class:`PortfolioManager`
(allocation, drawdowns, breakers, alerts, snapshots, events) and :class:`RiskManager` (pre-trade
checks) as the backtest.

* **Reports** (:meth:`LivePortfolio.report`) update the bot's equity and exposures and run the
  manager at the newest time any bot has reached (bots that have not reported yet count at their
  initial capital). Bots also hand over their position, funding and signal events, which join the
  account's event log in arrival order.
* **Pre-trade checks** (:meth:`LivePortfolio.check`) build the :class:`RiskSnapshot` from the other
  bots' latest reports and the submitting bot's own up-to-date equity and exposures, so a bot never
  sees a stale view of itself. Cross-bot figures are as of each bot's last report (at most one
  batch old). Verdicts are **memoised by the intent's key** (bot id and the bot's intent counter):
  a bot restarted from a checkpoint that re-runs the same bars asks again and gets the same answer,
  so its fills come out the same as before the crash.

Money in quote currency, quantities in base units, times in ns UTC, percentages in percent.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from engine.errors import ParameterError
from engine.portfolio.events import EventLog
from engine.portfolio.manager import BreakerSettings, PortfolioManager, Snapshot, StrategyState
from engine.risk.limits import RiskLimits
from engine.risk.manager import Rejection, RiskManager
from engine.risk.view import Exposure, OrderIntent, RiskSnapshot
from engine.timeframes import NS_PER_DAY


@dataclass(frozen=True, slots=True)
class PortfolioView:
    """What a bot learns back from a report or a check.

    Attributes:
        equity: portfolio equity (quote currency) after the update.
        others: the part of it that is not the bot's own equity (reserve + the other bots), so the
            bot can price its allocated capital with its own up-to-date equity:
            allocated = weight × (others + own equity).
        weight: the bot's allocation as a fraction.
        blocked: the reason the bot may not open exposure ("portfolio_halted", "strategy_paused"),
            or "" when it may.
    """

    equity: float
    others: float
    weight: float
    blocked: str


class LivePortfolio:
    """Allocation, risk and breakers of one account's bots (see the module docstring).

    Args:
        account_id: the trading account.
        capital: the account's capital (quote currency, > 0).
        allocations: strategy instance (bot) name → percent of capital.
        limits: pre-trade risk limits.
        breakers: circuit-breaker and snapshot settings.

    Raises:
        ParameterError: bad capital or allocations (see :class:`PortfolioManager`).
    """

    def __init__(
        self,
        account_id: str,
        capital: float,
        allocations: dict[str, float],
        limits: RiskLimits | None = None,
        breakers: BreakerSettings | None = None,
    ) -> None:
        self.account_id = account_id
        self.events = EventLog()
        self.manager = PortfolioManager(capital, allocations, breakers, self.events)
        self.risk = RiskManager(limits)
        self.time_ns = 0
        self._equity = {name: self.manager.initial_capital(name) for name in allocations}
        self._exposures: dict[str, list[Exposure]] = {name: [] for name in allocations}
        self._verdicts: dict[tuple[str, int], Rejection | None] = {}
        self._drained = {"events": 0, "snapshots": 0, "rejections": 0}

    # ------------------------------------------------------------------ queries
    def _known(self, name: str) -> None:
        if name not in self._equity:
            raise ParameterError("strategy", f"unknown strategy instance {name!r} (known: {', '.join(self._equity)})")

    def equity(self) -> float:
        """Portfolio equity as of the latest reports: reserve + Σ bot equity."""
        return self.manager.reserve + sum(self._equity.values())

    def view(self, name: str) -> PortfolioView:
        """The portfolio as bot ``name`` should see it now."""
        self._known(name)
        equity = self.equity()
        return PortfolioView(
            equity, equity - self._equity[name], self.manager.weights[name], self.manager.blocked().get(name, "")
        )

    def summary(self) -> dict[str, Any]:
        """Equity, peak, drawdown and state of the portfolio and of every bot (JSON-ready)."""
        m = self.manager
        return {
            "account_id": self.account_id,
            "time_ns": self.time_ns,
            "equity": self.equity(),
            "peak": m.portfolio.peak,
            "drawdown_pct": m.portfolio.drawdown,
            "halted": m.portfolio.tripped,
            "strategies": {
                name: {
                    "equity": self._equity[name],
                    "allocation_pct": m.weights[name] * 100.0,
                    "peak": m.books[name].peak,
                    "drawdown_pct": m.books[name].drawdown,
                    "state": m.states[name].value,
                    "exposures": len(self._exposures[name]),
                }
                for name in self._equity
            },
            "risk_rejections": len(self.risk.rejections),
        }

    # ------------------------------------------------------------------ updates
    def report(
        self,
        name: str,
        ts: int,
        equity: float,
        exposures: list[Exposure],
        events: Sequence[tuple[int, str, str, dict[str, Any]]] = (),
        points: Sequence[tuple[int, float]] = (),
    ) -> PortfolioView:
        """Record bot ``name``'s state at ``ts`` (ns UTC): equity (quote currency), exposures, events
        ``(ts, kind, symbol, data)`` to append to the log, and its equity after each bar close since
        its last report (``points``: (close ns, equity)). The manager runs at every point (the other
        bots at their latest equity; times never go back: a lagging bot's points count at the newest
        time seen), so drawdowns, breakers and snapshots follow each bar, then at ``ts``.

        Raises:
            ParameterError: an unknown bot name.
        """
        self._known(name)
        for ev_ts, kind, symbol, data in events:
            self.events.emit(ev_ts, kind, name, symbol, **data)
        for t, value in points:
            self._equity[name] = float(value)
            if t > self.time_ns:
                self.time_ns = t
            self.manager.update(self.time_ns, self._equity)
        self._exposures[name] = list(exposures)
        if float(equity) != self._equity[name] or ts > self.time_ns or not points:
            self._equity[name] = float(equity)
            if ts > self.time_ns:
                self.time_ns = ts
            if self.time_ns > 0:
                self.manager.update(self.time_ns, self._equity)
        return self.view(name)

    def check(
        self, key: tuple[str, int], intent: OrderIntent, equity: float, exposures: list[Exposure]
    ) -> Rejection | None:
        """The pre-trade verdict on ``intent`` from bot ``intent.strategy``, whose current equity and
        exposures are given; memoised by ``key`` (see the module docstring). None = accepted.

        Raises:
            ParameterError: an unknown bot name.
            OrderError: a malformed intent (see :meth:`RiskManager.check`).
        """
        if key in self._verdicts:
            return self._verdicts[key]
        name = intent.strategy
        self._known(name)
        self._equity[name] = float(equity)
        self._exposures[name] = list(exposures)
        total = self.equity()
        snapshot = RiskSnapshot(
            ts=intent.ts,
            equity=total,
            day_start_equity=self.manager.day_start_equity,
            allocated={n: self.manager.allocated_capital(n, total) for n in self._equity},
            exposures=[e for n in self._equity for e in self._exposures[n]],
            blocked=self.manager.blocked(),
        )
        verdict = self.risk.check(intent, snapshot)
        self._verdicts[key] = verdict
        return verdict

    def restore(self, snapshots: Sequence[Snapshot]) -> None:
        """Rebuild equity, peaks, drawdowns and breaker states from stored snapshots (a restarted
        portfolio actor): for the portfolio ("") and each known bot, its latest snapshot wins.
        Bots report again after their next batch; verdicts memoised before the restart are not
        restored (a bot replaying from a checkpoint at that moment is checked afresh)."""
        m = self.manager
        latest: dict[str, Snapshot] = {}
        for snap in snapshots:
            known = snap.strategy in self._equity or snap.strategy == ""
            if known and (snap.strategy not in latest or snap.ts >= latest[snap.strategy].ts):
                latest[snap.strategy] = snap
        for name, snap in latest.items():
            book = m.portfolio if name == "" else m.books[name]
            book.equity, book.peak, book.drawdown = snap.equity, snap.peak, snap.drawdown_pct
            book.tripped = snap.state in ("halted", "paused") if name == "" else snap.state == "paused"
            book.tripped_at = snap.ts
            if name:
                self._equity[name] = snap.equity
                m.states[name] = StrategyState(snap.state)
            self.time_ns = max(self.time_ns, snap.ts)
        if self.time_ns:
            m._day = self.time_ns // NS_PER_DAY
            m._next_snapshot = (self.time_ns // m.settings.snapshot_ns + 1) * m.settings.snapshot_ns
            m.day_start_equity = m.portfolio.equity

    def force_resume(self, ts: int, strategy: str | None = None) -> None:
        """Manual release of the portfolio breaker (``strategy`` None) or of one bot's breaker."""
        self.manager.force_resume(ts, strategy)

    def drain(self) -> dict[str, list[Any]]:
        """New events, snapshots and rejections since the last drain (for the recorder):
        ``{"events": [Event], "snapshots": [Snapshot], "rejections": [(seq, Rejection)]}``, where a
        rejection's ``seq`` is its 1-based position in the account's rejection list."""
        out: dict[str, list[Any]] = {}
        ev = self.events.events
        out["events"] = ev[self._drained["events"] :]
        snaps: list[Snapshot] = self.manager.snapshots
        out["snapshots"] = snaps[self._drained["snapshots"] :]
        rej = self.risk.rejections
        first = self._drained["rejections"]
        out["rejections"] = [(first + i + 1, r) for i, r in enumerate(rej[first:])]
        self._drained = {"events": len(ev), "snapshots": len(snaps), "rejections": len(rej)}
        return out
