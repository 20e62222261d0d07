"""The live portfolio of one account: reports, breakers, memoised pre-trade verdicts, restore."""

from __future__ import annotations

import pytest

from engine.errors import ParameterError
from engine.portfolio.live import LivePortfolio
from engine.portfolio.manager import BreakerSettings
from engine.risk.limits import RiskLimits
from engine.risk.view import Exposure, OrderIntent

H = 3_600_000_000_000


def portfolio() -> LivePortfolio:
    limits = RiskLimits(
        max_risk_per_trade_pct=None, max_total_open_risk_pct=None, max_leverage=2.0, enforce_allocation=False
    )
    return LivePortfolio("acc", 100_000, {"a": 60, "b": 30}, limits, BreakerSettings(snapshot_interval="1h"))


def intent(ts: int, strategy: str, qty: float, price: float = 100.0) -> OrderIntent:
    return OrderIntent(ts=ts, strategy=strategy, symbol="BTC", side=1, qty=qty, price=price)


def test_reports_drive_equity_breakers_and_views() -> None:
    pf = portfolio()
    view = pf.report("a", H, 60_000.0, [])
    # reserve 10,000 + a 60,000 + b at its initial 30,000
    assert (view.equity, view.others, view.weight, view.blocked) == (
        pytest.approx(100_000.0, rel=1e-12),
        pytest.approx(40_000.0, rel=1e-12),
        0.6,
        "",
    )
    view = pf.report("a", 2 * H, 50_400.0, [])  # a: 16 % below its peak → paused (15 %)
    assert view.blocked == "strategy_paused"
    assert pf.summary()["strategies"]["a"]["state"] == "paused"
    trips = [e for e in pf.events.of("portfolio:circuit_breaker") if e.data["action"] == "trip"]
    assert [(e.strategy, e.data["scope"]) for e in trips] == [("a", "strategy")]
    rejection = pf.check(("a", 1), intent(2 * H, "a", 1.0), 50_400.0, [])
    assert rejection is not None and rejection.check == "strategy_paused"
    pf.force_resume(2 * H, "a")
    assert pf.view("a").blocked == ""
    with pytest.raises(ParameterError, match="unknown strategy instance 'zz'"):
        pf.report("zz", 3 * H, 1.0, [])


def test_check_uses_the_bots_fresh_state_and_memoises_verdicts() -> None:
    pf = portfolio()
    # leverage limit 2 × equity 100,000 = 200,000 notional; b already holds 150,000 of exposure
    held = [Exposure("b", "ETH", 1_500.0, 100.0, 100.0)]
    assert pf.check(("b", 1), intent(H, "b", 1.0), 30_000.0, held) is None
    verdict = pf.check(("a", 1), intent(H, "a", 600.0), 60_000.0, [])  # +60,000 → 210,000 > 200,000
    assert verdict is not None and verdict.check == "leverage"
    # the same key gets the same answer even when the world changed (a restarted bot replaying)
    pf.report("b", 2 * H, 30_000.0, [])
    assert pf.check(("a", 1), intent(H, "a", 600.0), 60_000.0, []) is verdict
    assert pf.check(("a", 2), intent(H, "a", 600.0), 60_000.0, []) is None
    assert len(pf.risk.rejections) == 1


def test_restore_from_snapshots_rebuilds_peaks_and_states() -> None:
    pf = portfolio()
    pf.report("a", H, 70_000.0, [])
    pf.report("a", 2 * H, 58_000.0, [])  # a: 17 % below 70,000 → paused
    fresh = portfolio()
    fresh.restore(pf.manager.snapshots)
    assert fresh.summary() | {"risk_rejections": 0} == pf.summary() | {"risk_rejections": 0}
    assert fresh.view("a").blocked == "strategy_paused"
    fresh.report("a", 3 * H, 62_000.0, [])  # still 11 % below the restored peak: stays paused
    assert fresh.view("a").blocked == "strategy_paused"
    fresh.report("a", 4 * H, 64_000.0, [])  # 8.6 % below: released
    assert fresh.view("a").blocked == ""


def test_drain_hands_over_new_rows_once() -> None:
    pf = portfolio()
    pf.report("a", H, 60_000.0, [], [(H, "strategy:signal", "BTC", {"action": "entry"})])
    first = pf.drain()
    assert [e.kind for e in first["events"]][:1] == ["strategy:signal"]
    assert first["snapshots"] and not first["rejections"]
    assert pf.drain() == {"events": [], "snapshots": [], "rejections": []}


def test_equity_points_drive_snapshots_and_breakers_bar_by_bar() -> None:
    pf = portfolio()
    minute = 60_000_000_000
    # one report carrying 3 hours of 30-minute bar closes: a dips 20 % at the fourth close and recovers
    curve = [60_000.0, 61_000.0, 62_000.0, 49_600.0, 55_000.0, 60_000.0]
    points = [(H + i * 30 * minute, eq) for i, eq in enumerate(curve)]
    pf.report("a", points[-1][0], curve[-1], [], [], points)
    trips = [e for e in pf.events.of("portfolio:circuit_breaker") if e.strategy == "a"]
    assert [(e.ts, e.data["action"]) for e in trips] == [(points[3][0], "trip"), (points[5][0], "release")]
    # an hourly snapshot at the first point of each hour, from the points themselves
    hourly = sorted({s.ts for s in pf.manager.snapshots})
    assert hourly == [H, 2 * H, 3 * H]
    a_at = {s.ts: s.equity for s in pf.manager.snapshots if s.strategy == "a"}
    assert a_at == {H: 60_000.0, 2 * H: 62_000.0, 3 * H: 55_000.0}
