"""The portfolio manager actor of one trading account (``portfolio:<account>`` in the dashboard).

It hosts :class:`engine.portfolio.live.LivePortfolio` (allocation, pre-trade risk checks, equity,
drawdown, breakers, events, snapshots) for every bot of the account. Bots call :meth:`check` for
each order that opens exposure (they wait for the verdict) and :meth:`report` after each batch of
bars (they do not wait). New events, snapshots and rejections go to the recorder every
``flush_interval_s`` (``portfolio_events``, ``portfolio_snapshots``, ``risk_rejections``); the
actor never waits on a bot, so bots waiting on it cannot deadlock.
"""

from __future__ import annotations

import math
import time
from typing import Any

import orjson
import pyarrow as pa
import ray
from ray.util import metrics

from engine.portfolio.live import LivePortfolio, PortfolioView
from engine.portfolio.manager import BreakerSettings, Snapshot
from engine.risk.limits import RiskLimits
from engine.risk.manager import Rejection
from engine.risk.view import Exposure, OrderIntent


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=-1)
class PortfolioActor:
    """See the module docstring."""

    def __init__(
        self,
        account_id: str,
        capital: float,
        allocations: dict[str, float],
        limits: RiskLimits,
        breakers: BreakerSettings,
        recorder: Any,
        flush_interval_s: float = 0.2,
    ) -> None:
        self.account_id = account_id
        self.portfolio = LivePortfolio(account_id, capital, allocations, limits, breakers)
        self.recorder = recorder
        self.flush_interval_s = flush_interval_s
        self._last_flush = time.monotonic()
        self._event_seq0 = self._stored_max("portfolio_events")
        self._rejection_seq0 = self._stored_max("risk_rejections")
        self._restore()
        tags = {"account": account_id}
        self._m_equity = metrics.Gauge("portfolio_equity", "portfolio equity (quote currency)", ("account",))
        self._m_dd = metrics.Gauge("portfolio_drawdown_pct", "portfolio drawdown (percent)", ("account",))
        self._m_bot_equity = metrics.Gauge("bot_equity", "a bot's equity (quote currency)", ("account", "bot"))
        self._m_bot_dd = metrics.Gauge("bot_drawdown_pct", "a bot's drawdown (percent)", ("account", "bot"))
        self._m_checks = metrics.Counter("risk_checks", "pre-trade checks", ("account", "verdict"))
        self._tags = tags

    def _stored_max(self, table: str) -> int:
        """Highest sequence number already stored for the account (a restarted actor continues)."""
        rows = ray.get(self.recorder.read.remote(table, account_id=self.account_id, order_by="seq DESC", limit=1))
        return int(rows.column("seq")[0].as_py()) if rows.num_rows else 0

    def _restore(self) -> None:
        """A restarted actor (or a resumed session) rebuilds equity, peaks and breaker states from
        the account's latest stored snapshots."""
        n = len(self.portfolio.manager.books) + 1
        rows = ray.get(
            self.recorder.read.remote("portfolio_snapshots", account_id=self.account_id, order_by="ts DESC", limit=n)
        )
        if not rows.num_rows:
            return
        ts = rows.column("ts").cast(pa.int64()).to_pylist()
        self.portfolio.restore(
            [
                Snapshot(t, r["strategy"], r["equity"], r["peak"], r["drawdown_pct"], r["state"])
                for t, r in zip(ts, rows.drop_columns(["ts"]).to_pylist(), strict=True)
                if t == ts[0]
            ]
        )

    # ------------------------------------------------------------------ bots
    def check(
        self, key: tuple[str, int], intent: OrderIntent, equity: float, exposures: list[Exposure]
    ) -> Rejection | None:
        """Pre-trade verdict for a bot's order (see :meth:`LivePortfolio.check`)."""
        verdict = self.portfolio.check(key, intent, equity, exposures)
        self._m_checks.inc(1, {**self._tags, "verdict": "reject" if verdict else "accept"})
        self._maybe_flush()
        return verdict

    def report(
        self,
        name: str,
        ts: int,
        equity: float,
        exposures: list[Exposure],
        events: list[tuple[int, str, str, dict[str, Any]]],
        points: list[tuple[int, float]] | None = None,
    ) -> PortfolioView:
        """A bot's state after a batch (see :meth:`LivePortfolio.report`)."""
        view = self.portfolio.report(name, ts, equity, exposures, events, points or ())
        self._m_bot_equity.set(equity, {**self._tags, "bot": name})
        self._m_bot_dd.set(self.portfolio.manager.drawdown(name), {**self._tags, "bot": name})
        self._m_equity.set(view.equity, self._tags)
        self._m_dd.set(self.portfolio.manager.drawdown(), self._tags)
        self._maybe_flush()
        return view

    # ------------------------------------------------------------------ control
    def summary(self) -> dict[str, Any]:
        """Equity, peak, drawdown and state of the portfolio and every bot."""
        return self.portfolio.summary()

    def force_resume(self, strategy: str | None = None) -> None:
        """Manual release of the portfolio breaker or of one bot's breaker."""
        self.portfolio.force_resume(self.portfolio.time_ns, strategy)
        self.flush()

    def events(self, after_seq: int = 0, limit: int = 1000) -> list[dict[str, Any]]:
        """Events of this actor's life after ``after_seq`` (JSON-ready dicts, oldest first)."""
        out = []
        for e in self.portfolio.events.events[after_seq : after_seq + limit]:
            out.append(
                {"seq": e.seq, "ts": e.ts, "kind": e.kind, "strategy": e.strategy, "symbol": e.symbol, "data": e.data}
            )
        return out

    def flush(self) -> int:
        """Send new events, snapshots and rejections to the recorder; returns the rows sent."""
        self._last_flush = time.monotonic()
        new = self.portfolio.drain()
        acc = self.account_id
        events = [
            {
                "account_id": acc,
                "seq": self._event_seq0 + e.seq,
                "ts": e.ts,
                "kind": e.kind,
                "strategy": e.strategy,
                "symbol": e.symbol,
                "data": orjson.dumps(e.data, option=orjson.OPT_SERIALIZE_NUMPY).decode(),
            }
            for e in new["events"]
        ]
        snapshots = [
            {
                "account_id": acc,
                "ts": s.ts,
                "strategy": s.strategy,
                "equity": s.equity,
                "peak": s.peak,
                "drawdown_pct": s.drawdown_pct,
                "state": s.state,
            }
            for s in new["snapshots"]
        ]
        rejections = [
            {
                "account_id": acc,
                "seq": self._rejection_seq0 + seq,
                "ts": r.ts,
                "strategy": r.strategy,
                "symbol": r.symbol,
                "side": r.side,
                "qty": r.qty,
                "price": r.price if math.isfinite(r.price) else None,
                "check_name": r.check,
                "value": r.value if math.isfinite(r.value) else None,
                "limit_value": r.limit if math.isfinite(r.limit) else None,
                "message": r.message,
            }
            for seq, r in new["rejections"]
        ]
        tables = {"portfolio_events": events, "portfolio_snapshots": snapshots, "risk_rejections": rejections}
        n = len(events) + len(snapshots) + len(rejections)
        if n:
            self.recorder.write.remote(tables)
        return n

    def _maybe_flush(self) -> None:
        if time.monotonic() - self._last_flush >= self.flush_interval_s:
            self.flush()
