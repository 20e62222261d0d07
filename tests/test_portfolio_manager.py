"""The portfolio manager on hand-built equity paths: allocation, drawdown, breakers, alerts, snapshots."""

from __future__ import annotations

import pytest

from engine.errors import ParameterError
from engine.portfolio.events import CIRCUIT_BREAKER, DRAWDOWN_ALERT, EQUITY_UPDATE, STATE_CHANGE
from engine.portfolio.manager import BreakerSettings, PortfolioManager, StrategyState

H = 3_600_000_000_000
DAY = 24 * H


def kinds(pm: PortfolioManager, *wanted: str) -> list[tuple[int, str, str, dict]]:
    return [(e.ts, e.kind, e.strategy, e.data) for e in pm.events.events if e.kind in wanted]


def test_allocation_defaults_and_capital() -> None:
    pm = PortfolioManager(100_000, {"trend": 30, "scalp": 20, "carry": 20, "momo": 30})
    assert pm.initial_capital("trend") == pytest.approx(30_000)
    assert pm.initial_capital("scalp") == pytest.approx(20_000)
    assert pm.reserve == pytest.approx(0.0)
    pm.update(H, {"trend": 33_000, "scalp": 20_000, "carry": 19_000, "momo": 30_000})
    assert pm.equity == pytest.approx(102_000)
    # allocated capital follows the portfolio equity
    assert pm.allocated_capital("trend") == pytest.approx(0.30 * 102_000)
    assert pm.allocated_capital("scalp") == pytest.approx(0.20 * 102_000)


def test_reserve_when_allocations_do_not_sum_to_100() -> None:
    pm = PortfolioManager(10_000, {"a": 50})
    assert pm.reserve == pytest.approx(5_000)
    pm.update(H, {"a": 4_000})
    assert pm.equity == pytest.approx(9_000)
    assert pm.drawdown() == pytest.approx(10.0)


@pytest.mark.parametrize(
    ("alloc", "field"),
    [({"a": 60, "b": 50}, "allocation"), ({"a": -1}, "allocation.a"), ({"a": 101}, "allocation.a"), ({}, "strategies")],
)
def test_bad_allocations(alloc: dict[str, float], field: str) -> None:
    with pytest.raises(ParameterError) as err:
        PortfolioManager(1_000, alloc)
    assert err.value.field == field


def test_bad_breaker_settings_name_the_field() -> None:
    with pytest.raises(ParameterError) as err:
        BreakerSettings.parse({"resume_drawdown_pct": 20})
    assert err.value.field == "resume_drawdown_pct"


def test_strategy_breaker_trips_at_15_and_releases_below_10() -> None:
    pm = PortfolioManager(100_000, {"a": 50, "b": 50}, BreakerSettings(alert_levels_pct=(), snapshot_interval="1d"))
    path = [
        (1, 52_000),  # new peak 52,000
        (2, 44_500),  # dd = 7,500 / 52,000 = 14.42 %: below 15
        (3, 44_200),  # dd = 15.0 % exactly: trips (>=)
        (4, 46_900),  # dd = (52,000 − 46,900) / 52,000 = 9.8077 %: releases (< 10)
    ]
    for t, eq in path:
        pm.update(t * H, {"a": eq, "b": 50_000})
        if t == 3:
            assert pm.states["a"] is StrategyState.PAUSED
            assert pm.blocked() == {"a": "strategy_paused"}
    assert pm.states["a"] is StrategyState.ACTIVE
    events = kinds(pm, CIRCUIT_BREAKER, STATE_CHANGE)
    assert [(t // H, k, s, d.get("action", d.get("new"))) for t, k, s, d in events] == [
        (3, CIRCUIT_BREAKER, "a", "trip"),
        (3, STATE_CHANGE, "a", "paused"),
        (4, CIRCUIT_BREAKER, "a", "release"),
        (4, STATE_CHANGE, "a", "active"),
    ]
    trip = events[0][3]
    assert trip["drawdown_pct"] == pytest.approx(15.0)
    assert trip["threshold_pct"] == 15.0
    assert trip["peak"] == 52_000
    assert events[2][3]["drawdown_pct"] == pytest.approx(5_100 / 52_000 * 100)
    assert events[2][3]["reason"] == "recovered"


def test_portfolio_halt_at_25_halts_every_strategy_and_releases_below_10() -> None:
    pm = PortfolioManager(100_000, {"a": 50, "b": 50}, BreakerSettings(alert_levels_pct=(), snapshot_interval="1d"))
    pm.update(1 * H, {"a": 50_000, "b": 50_000})
    # both fall 25 %: each trips its own breaker (>= 15) and the portfolio halts (>= 25)
    pm.update(2 * H, {"a": 37_500, "b": 37_500})  # portfolio dd = 25 %: halt
    assert pm.blocked() == {"a": "portfolio_halted", "b": "portfolio_halted"}
    assert all(s is StrategyState.HALTED for s in pm.states.values())
    pm.update(3 * H, {"a": 46_000, "b": 45_000})  # portfolio dd 9 %: released; a dd 8 % released; b 10 % stays
    assert pm.states == {"a": StrategyState.ACTIVE, "b": StrategyState.PAUSED}
    pf = [(t // H, d["scope"], d["action"]) for t, _, s, d in kinds(pm, CIRCUIT_BREAKER) if s == ""]
    assert pf == [(2, "portfolio", "trip"), (3, "portfolio", "release")]
    changes = [(t // H, s, d["old"], d["new"]) for t, _, s, d in kinds(pm, STATE_CHANGE)]
    assert changes == [
        (2, "a", "active", "halted"),
        (2, "b", "active", "halted"),
        (3, "a", "halted", "active"),
        (3, "b", "halted", "paused"),
    ]


def test_force_resume_releases_and_resets_the_peak() -> None:
    pm = PortfolioManager(100_000, {"a": 100}, BreakerSettings(alert_levels_pct=(), snapshot_interval="1d"))
    pm.update(1 * H, {"a": 100_000})
    pm.update(2 * H, {"a": 70_000})  # dd 30 %: halt and pause
    assert pm.states["a"] is StrategyState.HALTED
    pm.force_resume(3 * H)  # the portfolio breaker
    assert pm.states["a"] is StrategyState.PAUSED  # its own breaker still holds
    pm.force_resume(3 * H, "a")
    assert pm.states["a"] is StrategyState.ACTIVE
    assert pm.drawdown() == 0.0 and pm.drawdown("a") == 0.0
    pm.update(4 * H, {"a": 69_000})  # 1.4 % below the new peak of 70,000: nothing trips
    assert pm.states["a"] is StrategyState.ACTIVE
    manual = [d for _, _, _, d in kinds(pm, CIRCUIT_BREAKER) if d.get("manual")]
    assert [(d["scope"], d["was_tripped"]) for d in manual] == [("portfolio", True), ("strategy", True)]
    with pytest.raises(ParameterError):
        pm.force_resume(5 * H, "nope")


def test_cooldown_releases_a_flat_paused_strategy() -> None:
    s = BreakerSettings(alert_levels_pct=(), snapshot_interval="1d", cooldown="2h")
    pm = PortfolioManager(10_000, {"a": 100}, s)
    pm.update(1 * H, {"a": 10_000})
    pm.update(2 * H, {"a": 8_000})  # 20 %: paused (and halted by the portfolio breaker? 20 < 25: no)
    assert pm.states["a"] is StrategyState.PAUSED
    pm.update(3 * H, {"a": 8_000})  # 1 h later: still paused
    assert pm.states["a"] is StrategyState.PAUSED
    pm.update(4 * H, {"a": 8_000})  # 2 h after the trip: released by the cool-down, peak reset
    assert pm.states["a"] is StrategyState.ACTIVE
    release = [d for _, _, _, d in kinds(pm, CIRCUIT_BREAKER) if d["action"] == "release"]
    assert release[0]["reason"] == "cooldown" and release[0]["peak"] == 8_000


def test_drawdown_alerts_once_per_level_per_episode() -> None:
    pm = PortfolioManager(1_000, {"a": 100}, BreakerSettings(alert_levels_pct=(5, 10), snapshot_interval="1d"))
    for t, eq in enumerate([1_000, 940, 960, 890, 940, 1_010, 955], start=1):
        pm.update(t * H, {"a": eq})
    alerts = [(t // H, s, d["level_pct"]) for t, _, s, d in kinds(pm, DRAWDOWN_ALERT)]
    # 940: 6 % → 5 (strategy and portfolio); 890: 11 % → 10; new peak 1,010 re-arms; 955: 5.4 % → 5
    assert alerts == [(2, "a", 5), (2, "", 5), (4, "a", 10), (4, "", 10), (7, "a", 5), (7, "", 5)]


def test_snapshots_on_the_interval_and_day_start_equity() -> None:
    pm = PortfolioManager(1_000, {"a": 100}, BreakerSettings(alert_levels_pct=(), snapshot_interval="4h"))
    for t in range(0, 30):
        pm.update(t * H, {"a": 1_000 + t})
    snaps = [s for s in pm.snapshots if s.strategy == ""]
    assert [s.ts // H for s in snaps] == [0, 4, 8, 12, 16, 20, 24, 28]
    assert [s.equity for s in snaps][:2] == [1_000, 1_004]
    assert len(pm.events.of(EQUITY_UPDATE)) == len(snaps)
    # the day that began at 24:00 opened at the equity of the last step before it (23 h: 1,023)
    assert pm.day_start_equity == 1_023
    assert DAY == 24 * H
