"""Tests of engine.risk: hand-computed scenarios per check, ordering, modes, validation, sizing, and a
property test against an independent re-computation of every figure.

Portfolio used throughout unless a test says otherwise: equity = day-start equity = 100 000, four
strategies A/B/C/D allocated 30/20/20/30 % = 30 000 / 20 000 / 20 000 / 30 000.
"""

from __future__ import annotations

import math
import re
from dataclasses import replace

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from engine.errors import OrderError, ParameterError
from engine.risk import (
    CHECKS,
    REJECTIONS_SCHEMA,
    REL_TOL,
    Exposure,
    OrderIntent,
    Rejection,
    RiskLimits,
    RiskManager,
    RiskSnapshot,
    position_size,
)

T0 = 1_704_067_200 * 1_000_000_000  # 2024-01-01T00:00:00Z
ALLOC = {"A": 30_000.0, "B": 20_000.0, "C": 20_000.0, "D": 30_000.0}

#: Every check disabled; ``only(...)`` turns on the ones a test is about.
OFF: dict[str, object] = {
    "max_loss_per_trade": None,
    "max_risk_per_trade_pct": None,
    "max_total_open_risk_pct": None,
    "unprotected_risk_pct": None,
    "enforce_allocation": False,
    "conflict_mode": "net",
    "daily_loss_limit": None,
    "daily_loss_limit_pct": None,
    "max_open_positions": None,
    "max_leverage": None,
}


def only(**kw: object) -> RiskManager:
    return RiskManager(RiskLimits.model_validate({**OFF, **kw}))


def intent(
    strategy: str = "A",
    symbol: str = "BTC",
    side: int = 1,
    qty: float = 1.0,
    price: float = 100.0,
    stop: float = 0.0,
    multiplier: float = 1.0,
    leverage: float = 1.0,
) -> OrderIntent:
    return OrderIntent(T0, strategy, symbol, side, qty, price, stop, multiplier, leverage)


def expo(
    strategy: str,
    symbol: str,
    qty: float,
    mark: float,
    *,
    entry: float | None = None,
    stop: float = 0.0,
    multiplier: float = 1.0,
    leverage: float = 1.0,
    pending: bool = False,
) -> Exposure:
    return Exposure(strategy, symbol, qty, mark if entry is None else entry, mark, multiplier, leverage, stop, pending)


def snap(
    *exposures: Exposure,
    equity: float = 100_000.0,
    day_start: float = 100_000.0,
    allocated: dict[str, float] | None = None,
    blocked: dict[str, str] | None = None,
) -> RiskSnapshot:
    return RiskSnapshot(
        T0, equity, day_start, dict(ALLOC if allocated is None else allocated), list(exposures), blocked or {}
    )


def assert_rejected(
    rm: RiskManager, it: OrderIntent, sn: RiskSnapshot, check: str, value: float, limit: float
) -> Rejection:
    rej = rm.check(it, sn)
    assert rej is not None, f"expected a '{check}' rejection"
    assert rej.check == check
    assert rej.value == pytest.approx(value, rel=1e-12)
    assert rej.limit == pytest.approx(limit, rel=1e-12)
    assert (rej.strategy, rej.symbol, rej.side, rej.qty, rej.price, rej.ts) == (
        it.strategy, it.symbol, it.side, it.qty, it.price, it.ts,
    )  # fmt: skip
    assert rm.rejections[-1] is rej
    return rej


def assert_passes(rm: RiskManager, it: OrderIntent, sn: RiskSnapshot) -> None:
    before = len(rm.rejections)
    rej = rm.check(it, sn)
    assert rej is None, rej
    assert len(rm.rejections) == before


# ---------------------------------------------------------------------------------- limits model


def test_defaults() -> None:
    lim = RiskLimits()
    assert lim.max_loss_per_trade is None
    assert lim.max_risk_per_trade_pct == 2.0
    assert lim.max_total_open_risk_pct == 20.0
    assert lim.unprotected_risk_pct is None
    assert lim.enforce_allocation is True
    assert lim.conflict_mode == "reject"
    assert lim.daily_loss_limit is None
    assert lim.daily_loss_limit_pct == 5.0
    assert lim.max_open_positions == 30
    assert lim.max_leverage == 3.0
    assert RiskManager().limits == lim


@pytest.mark.parametrize(
    ("field", "value", "rule"),
    [
        ("max_risk_per_trade_pct", 0.0, "percentage in (0, 100]"),
        ("max_risk_per_trade_pct", 100.5, "percentage in (0, 100]"),
        ("max_total_open_risk_pct", -1.0, "percentage in (0, 100]"),
        ("unprotected_risk_pct", 0.0, "percentage in (0, 100]"),
        ("daily_loss_limit_pct", 101.0, "percentage in (0, 100]"),
        ("max_loss_per_trade", 0.0, "must be > 0"),
        ("daily_loss_limit", -5.0, "must be > 0"),
        ("max_leverage", 0.0, "must be > 0"),
        ("max_leverage", math.inf, "finite"),
        ("max_loss_per_trade", math.nan, "finite"),
        ("max_open_positions", 0, "integer >= 1"),
        ("max_open_positions", 2.5, "integer"),
        ("conflict_mode", "hedge", "'reject' or 'net'"),
        ("surprise", 1, "unknown parameter"),
    ],
)
def test_limits_validation_names_the_field(field: str, value: object, rule: str) -> None:
    with pytest.raises(ParameterError) as info:
        RiskLimits.parse({field: value})
    assert info.value.field == field
    assert rule in info.value.rule
    with pytest.raises(ValidationError, match=field):
        RiskLimits.model_validate({field: value})


def test_limits_bounds_inclusive_and_frozen() -> None:
    lim = RiskLimits.parse({"max_risk_per_trade_pct": 100.0, "daily_loss_limit_pct": None, "max_open_positions": 1})
    assert lim.max_risk_per_trade_pct == 100.0
    assert lim.daily_loss_limit_pct is None
    with pytest.raises(ValidationError):
        lim.max_leverage = 10.0


# ---------------------------------------------------------------------------------- position_size


def test_position_size_figures() -> None:
    # 30 000 × 2 / 100 = 600 at risk; 5 per unit -> 120 units.
    assert position_size(30_000.0, 100.0, 95.0, 2.0) == pytest.approx(120.0)
    # Short: stop above entry, same distance.
    assert position_size(30_000.0, 100.0, 105.0, 2.0) == pytest.approx(120.0)
    # Multiplier 50: 300 at risk / (20 × 50) = 0.3 contracts.
    assert position_size(30_000.0, 4_000.0, 3_980.0, 1.0, multiplier=50.0) == pytest.approx(0.3)
    assert position_size(0.0, 100.0, 95.0, 2.0) == 0.0
    assert RiskManager.position_size(20_000.0, 50.0, 40.0, 100.0) == pytest.approx(2_000.0)


@pytest.mark.parametrize(
    ("args", "field"),
    [
        ((30_000.0, math.nan, 95.0, 2.0), "entry"),
        ((30_000.0, 100.0, -1.0, 2.0), "stop"),
        ((30_000.0, 100.0, math.inf, 2.0), "stop"),
        ((30_000.0, 100.0, 100.0, 2.0), "stop"),
        ((30_000.0, 100.0, 95.0, 0.0), "risk_pct"),
        ((30_000.0, 100.0, 95.0, 100.01), "risk_pct"),
        ((-1.0, 100.0, 95.0, 2.0), "allocated_capital"),
        ((math.nan, 100.0, 95.0, 2.0), "allocated_capital"),
    ],
)
def test_position_size_errors(args: tuple[float, float, float, float], field: str) -> None:
    with pytest.raises(OrderError, match=f"'{field}'"):
        position_size(*args)


def test_position_size_multiplier_error() -> None:
    with pytest.raises(OrderError, match="'multiplier'"):
        position_size(30_000.0, 100.0, 95.0, 2.0, multiplier=0.0)


def test_sized_order_at_the_limit_passes_despite_rounding() -> None:
    rm = only(max_risk_per_trade_pct=2.0)
    qty = position_size(30_000.0, 100.3, 97.1, 2.0)  # 600 / 3.2 (3.2 is not exact in binary)
    assert_passes(rm, intent(qty=qty, price=100.3, stop=97.1), snap())
    assert_passes(rm, intent(side=-1, qty=position_size(30_000.0, 0.3, 0.7, 2.0), price=0.3, stop=0.7), snap())


# ---------------------------------------------------------------------------------- each check


def test_daily_loss_absolute() -> None:
    rm = only(daily_loss_limit=1_000.0)
    rej = assert_rejected(rm, intent(), snap(equity=99_000.0), "daily_loss", 1_000.0, 1_000.0)  # reached = halted
    assert "1000" in rej.message and "daily_loss_limit" in rej.message
    assert_rejected(rm, intent(), snap(equity=98_000.0), "daily_loss", 2_000.0, 1_000.0)
    assert_passes(rm, intent(), snap(equity=99_000.01))  # loss 999.99
    assert_passes(rm, intent(), snap(equity=120_000.0))  # a gain


def test_daily_loss_percent_of_day_start_equity() -> None:
    rm = only(daily_loss_limit_pct=5.0)
    # 5 % of 80 000 = 4 000; equity is compared with the day start, not the all-time peak.
    assert_rejected(rm, intent(), snap(equity=76_000.0, day_start=80_000.0), "daily_loss", 4_000.0, 4_000.0)
    assert_passes(rm, intent(), snap(equity=76_000.5, day_start=80_000.0))


def test_daily_loss_smaller_limit_binds() -> None:
    both = only(daily_loss_limit=3_000.0, daily_loss_limit_pct=5.0)
    assert_rejected(both, intent(), snap(equity=96_500.0), "daily_loss", 3_500.0, 3_000.0)
    both = only(daily_loss_limit=9_000.0, daily_loss_limit_pct=5.0)
    rej = assert_rejected(both, intent(), snap(equity=94_000.0), "daily_loss", 6_000.0, 5_000.0)
    assert "5% of day-start equity 100000" in rej.message


def test_max_loss_per_trade() -> None:
    rm = only(max_loss_per_trade=500.0)
    assert_passes(rm, intent(qty=10.0, price=100.0, stop=50.0), snap())  # (100 − 50) × 10 = 500 = limit
    rej = assert_rejected(rm, intent(qty=10.01, price=100.0, stop=50.0), snap(), "max_loss_per_trade", 500.5, 500.0)
    assert "500.5" in rej.message and "500" in rej.message
    # Short: (200 − 100) × 5 = 500.
    assert_passes(rm, intent(side=-1, qty=5.0, price=100.0, stop=200.0), snap())
    assert_rejected(rm, intent(side=-1, qty=6.0, price=100.0, stop=200.0), snap(), "max_loss_per_trade", 600.0, 500.0)
    # Multiplier: 10 × 1 × 50 = 500 passes; 11 × 50 = 550 fails.
    assert_passes(rm, intent(qty=1.0, price=100.0, stop=90.0, multiplier=50.0), snap())
    assert_rejected(
        rm, intent(qty=1.1, price=100.0, stop=90.0, multiplier=50.0), snap(), "max_loss_per_trade", 550.0, 500.0
    )


def test_max_risk_per_trade_pct_of_allocated_capital() -> None:
    rm = only(max_risk_per_trade_pct=2.0)
    # A: 2 % of 30 000 = 600; (200 − 100) × 6 = 600.
    assert_passes(rm, intent("A", qty=6.0, price=200.0, stop=100.0), snap())
    rej = assert_rejected(rm, intent("A", qty=6.5, price=200.0, stop=100.0), snap(), "max_risk_per_trade", 650.0, 600.0)
    assert "allocated capital 30000" in rej.message
    # B has 20 000 -> 400: the same order is too big for B.
    assert_rejected(rm, intent("B", qty=6.0, price=200.0, stop=100.0), snap(), "max_risk_per_trade", 600.0, 400.0)


def test_allocation_counts_the_strategys_margin_incl_pending() -> None:
    rm = only(enforce_allocation=True)
    sn = snap(
        expo("A", "BTC", 1.0, 20_000.0, entry=18_000.0, leverage=2.0),  # 20 000 / 2 = 10 000 (at the mark)
        expo("A", "ETH", 5.0, 2_100.0, entry=2_000.0, pending=True),  # pending: 5 × 2 000 = 10 000 (its entry)
        expo("B", "SOL", 1_000.0, 100.0),  # another strategy's: not A's margin
    )
    assert_passes(rm, intent("A", "SOL", qty=100.0, price=100.0), sn)  # 10 000 + 10 000 + 10 000 = 30 000
    rej = assert_rejected(rm, intent("A", "SOL", qty=101.0, price=100.0), sn, "allocation", 30_100.0, 30_000.0)
    assert "30100" in rej.message and "30000" in rej.message
    # The intent's leverage divides its notional: 200 × 100 / 2 = 10 000.
    assert_passes(rm, intent("A", "SOL", qty=200.0, price=100.0, leverage=2.0), sn)
    # Disabled: passes.
    assert_passes(only(enforce_allocation=False), intent("A", "SOL", qty=1_000.0, price=100.0), sn)


def test_conflict_reject_mode() -> None:
    rm = only(conflict_mode="reject")
    sn = snap(
        expo("B", "BTC", -0.5, 20_000.0),
        expo("C", "BTC", -0.25, 20_000.0, pending=True),
        expo("D", "BTC", 1.0, 20_000.0),
    )
    rej = assert_rejected(rm, intent("A", "BTC", side=1), sn, "conflict", -0.75, 0.0)
    assert "'B'" in rej.message and "'C' (pending)" in rej.message
    # The same side as B and C conflicts with D's long.
    assert_rejected(rm, intent("A", "BTC", side=-1), sn, "conflict", 1.0, 0.0)
    # Another symbol, or the holder itself adding, is no conflict.
    assert_passes(rm, intent("A", "ETH", side=1), sn)
    assert_passes(rm, intent("B", "BTC", side=-1), replace(sn, exposures=sn.exposures[:2]))
    # A pending order alone conflicts too.
    assert_rejected(
        rm, intent("A", "BTC", side=1), snap(expo("C", "BTC", -0.25, 20_000.0, pending=True)), "conflict", -0.25, 0.0
    )


def test_conflict_net_mode_passes() -> None:
    sn = snap(expo("B", "BTC", -0.5, 20_000.0))
    assert_passes(only(conflict_mode="net"), intent("A", "BTC", side=1), sn)


def test_max_open_positions_counts_distinct_strategy_symbol_incl_pending() -> None:
    rm = only(max_open_positions=3)
    sn = snap(
        expo("A", "BTC", 1.0, 100.0),
        expo("A", "BTC", 1.0, 100.0, pending=True),  # same key as the position
        expo("A", "ETH", 1.0, 100.0, pending=True),
        expo("B", "BTC", 1.0, 100.0),
    )
    assert_passes(rm, intent("A", "BTC"), sn)  # adds to (A, BTC): still 3
    assert_passes(rm, intent("A", "ETH"), sn)  # adds to the pending (A, ETH): still 3
    rej = assert_rejected(rm, intent("A", "SOL"), sn, "max_open_positions", 4.0, 3.0)
    assert "4" in rej.message and "3" in rej.message
    assert_rejected(rm, intent("C", "BTC"), sn, "max_open_positions", 4.0, 3.0)  # (C, BTC) is new
    assert_passes(rm, intent("A", "SOL"), snap(*sn.exposures[:3]))  # 2 keys + SOL = 3


def _risk_book() -> RiskSnapshot:
    return snap(
        expo("A", "BTC", 1.0, 20_000.0, entry=16_000.0, stop=15_000.0),  # (20 000 − 15 000) × 1 = 5 000 (from the mark)
        expo("B", "ETH", -10.0, 2_000.0, stop=2_500.0),  # (2 000 − 2 500) × −1 × 10 = 5 000
        expo("C", "SOL", 100.0, 110.0, entry=100.0, stop=80.0, pending=True),  # (100 − 80) × 100 = 2 000 (from entry)
        expo(
            "D", "XRP", 1_000.0, 2.0, entry=1.0, stop=1.5
        ),  # stop above entry, still (2 − 1.5) × 1 000 = 500 from the mark
        expo("D", "DOT", -100.0, 5.0, stop=4.0),  # short whose stop the mark already crossed: max(0, ·) = 0
        expo("D", "ADA", 1_000.0, 1.0),  # unprotected: 0 while unprotected_risk_pct is None
    )  # total 12 500


def test_total_open_risk() -> None:
    rm = only(max_total_open_risk_pct=20.0)  # 20 % of 100 000 = 20 000
    sn = _risk_book()
    assert_passes(rm, intent("A", "AVAX", qty=187.5, price=50.0, stop=10.0), sn)  # 12 500 + 40 × 187.5 = 20 000
    rej = assert_rejected(
        rm, intent("A", "AVAX", qty=188.0, price=50.0, stop=10.0), sn, "total_open_risk", 20_020.0, 20_000.0
    )
    assert "20020" in rej.message and "20000" in rej.message
    # A SELL's risk is measured above its price: (60 − 50) × 750 = 7 500.
    assert_passes(rm, intent("A", "AVAX", side=-1, qty=750.0, price=50.0, stop=60.0), sn)
    # The limit follows current equity: 20 % of 60 000 = 12 000, already used up.
    assert_rejected(
        rm,
        intent("A", "AVAX", qty=1.0, price=50.0, stop=10.0),
        replace(sn, equity=60_000.0),
        "total_open_risk",
        12_540.0,
        12_000.0,
    )


def test_unprotected_not_counted_when_pct_is_none() -> None:
    rm = only(max_loss_per_trade=1.0, max_risk_per_trade_pct=0.001, max_total_open_risk_pct=12.5)
    sn = _risk_book()  # 12 500 = 12.5 % of equity: exactly at the total limit
    assert_passes(rm, intent("A", "AVAX", qty=1_000.0, price=50.0), sn)  # no stop: counted 0 everywhere
    # ... but an order with a stop is checked.
    assert_rejected(rm, intent("A", "AVAX", qty=2.0, price=50.0, stop=49.0), sn, "max_loss_per_trade", 2.0, 1.0)


def test_unprotected_counted_as_pct_of_notional() -> None:
    # 10 % of notional: order 10 × 100 -> 100 assumed loss.
    rm = only(max_loss_per_trade=99.0, unprotected_risk_pct=10.0)
    rej = assert_rejected(rm, intent(qty=10.0, price=100.0), snap(), "max_loss_per_trade", 100.0, 99.0)
    assert "unprotected" in rej.message
    assert_passes(only(max_loss_per_trade=100.0, unprotected_risk_pct=10.0), intent(qty=10.0, price=100.0), snap())
    # Per-trade risk: 10 % × 6 000 = 600 = 2 % of A's 30 000.
    rm = only(max_risk_per_trade_pct=2.0, unprotected_risk_pct=10.0)
    assert_passes(rm, intent(qty=60.0, price=100.0), snap())
    assert_rejected(rm, intent(qty=61.0, price=100.0), snap(), "max_risk_per_trade", 610.0, 600.0)
    # Total: the unprotected D ADA exposure now counts 10 % × 1 000 × 1 = 100 -> book 12 600.
    rm = only(max_total_open_risk_pct=20.0, unprotected_risk_pct=10.0)
    sn = _risk_book()
    assert_passes(rm, intent("A", "AVAX", qty=7_400.0, price=10.0), sn)  # 12 600 + 10 % × 74 000 = 20 000
    assert_rejected(rm, intent("A", "AVAX", qty=7_401.0, price=10.0), sn, "total_open_risk", 20_001.0, 20_000.0)


def test_leverage_gross_in_reject_mode() -> None:
    rm = only(max_leverage=3.0, conflict_mode="reject")
    sn = snap(expo("A", "BTC", 5.0, 20_000.0), expo("B", "BTC", -5.0, 20_000.0))  # gross 200 000
    assert_passes(rm, intent("C", "ETH", qty=50.0, price=2_000.0), sn)  # 300 000 / 100 000 = 3.0
    rej = assert_rejected(rm, intent("C", "ETH", qty=50.5, price=2_000.0), sn, "leverage", 3.01, 3.0)
    assert "gross" in rej.message and "301000" in rej.message
    # Pending orders count at their entry: 1 × 50 000 instead of the 20 000 mark.
    sn2 = snap(expo("A", "BTC", 5.0, 20_000.0), expo("D", "BTC", 1.0, 20_000.0, entry=50_000.0, pending=True))
    assert_passes(rm, intent("C", "ETH", qty=75.0, price=2_000.0), sn2)  # 100 000 + 50 000 + 150 000 = 3.0
    assert_rejected(rm, intent("C", "ETH", qty=76.0, price=2_000.0), sn2, "leverage", 3.02, 3.0)


def test_leverage_netted_in_net_mode_passes_where_gross_fails() -> None:
    sn = snap(expo("A", "BTC", 5.0, 20_000.0), expo("B", "BTC", -5.0, 20_000.0))  # nets to 0
    order = intent("C", "ETH", qty=150.0, price=2_000.0)  # 300 000
    assert_passes(only(max_leverage=3.0, conflict_mode="net"), order, sn)  # |0| + 300 000 = 3.0x
    assert_rejected(only(max_leverage=3.0, conflict_mode="reject"), order, sn, "leverage", 5.0, 3.0)
    # Net mode: a short on BTC against A's long nets down; a BUY on BTC nets up.
    rm = only(max_leverage=1.0, conflict_mode="net")
    sn = snap(expo("A", "BTC", 5.0, 20_000.0))  # 100 000 long = 1.0x
    assert_passes(rm, intent("B", "BTC", side=-1, qty=10.0, price=20_000.0), sn)  # |100 000 − 200 000| = 1.0x
    rej = assert_rejected(rm, intent("B", "BTC", side=1, qty=1.0, price=20_000.0), sn, "leverage", 1.2, 1.0)
    assert "netted" in rej.message


def test_leverage_with_non_positive_equity_rejects() -> None:
    rej = assert_rejected(only(max_leverage=3.0), intent(), snap(equity=0.0), "leverage", math.inf, 3.0)
    assert rej.value == math.inf


# ---------------------------------------------------------------------------------- ordering and records


def test_blocked_strategy_rejected_first() -> None:
    rm = RiskManager(RiskLimits(max_loss_per_trade=1.0, daily_loss_limit=1.0, max_open_positions=1, max_leverage=0.1))
    sn = snap(
        expo("B", "BTC", -100.0, 20_000.0), equity=50_000.0, blocked={"A": "strategy_paused", "C": "portfolio_halted"}
    )
    huge = intent("A", "BTC", qty=1_000.0, price=20_000.0, stop=1.0)  # fails every other check too
    rej = rm.check(huge, sn)
    assert rej is not None and rej.check == "strategy_paused"
    assert math.isnan(rej.value) and math.isnan(rej.limit)
    assert "'A'" in rej.message and "paused" in rej.message
    rej = rm.check(replace(huge, strategy="C"), sn)
    assert rej is not None and rej.check == "portfolio_halted" and "halted" in rej.message
    # Unblocked B: daily loss (50 000 lost) comes next.
    rej = rm.check(replace(huge, strategy="B"), sn)
    assert rej is not None and rej.check == "daily_loss"


def test_check_order_matches_checks() -> None:
    """Peel the failures off one at a time: each fix reveals the next check in CHECKS order."""
    lim = RiskLimits(
        max_loss_per_trade=500.0,
        max_risk_per_trade_pct=1.0,  # 300 for A
        max_total_open_risk_pct=1.0,  # 1 000
        daily_loss_limit=1_000.0,
        max_open_positions=1,
        max_leverage=0.5,
    )
    rm = RiskManager(lim)
    other = expo("B", "BTC", -1.0, 20_000.0, stop=20_950.0)  # risk 950
    mine = replace(other, strategy="A", symbol="ETH", leverage=5.0)  # A's own: margin 4 000, risk 950
    base = dict(strategy="A", symbol="BTC", side=1, qty=1.0, price=20_000.0, stop=19_000.0)
    seen = []
    steps = [
        (snap(other, equity=98_000.0), base),  # daily_loss
        (snap(other), base),  # max_loss_per_trade: 1 000 > 500
        (snap(other), {**base, "qty": 0.4}),  # max_risk_per_trade: 400 > 300
        (snap(other), {**base, "qty": 0.25, "stop": 19_000.0, "leverage": 0.1}),  # allocation: 50 000 > 30 000
        (snap(other), {**base, "qty": 0.25}),  # conflict with B's short
        (snap(other), {**base, "qty": 0.25, "symbol": "ETH"}),  # max_open_positions: 2 > 1
        (snap(mine), {**base, "qty": 0.25, "symbol": "ETH"}),  # total risk 950 + 250 = 1 200 > 1 000
        # leverage: (20 000 + 48 000) / 100 000 = 0.68 > 0.5; margin 4 000 + 24 000, risk 100 + 96
        (snap(replace(mine, stop=20_100.0)), {**base, "qty": 2.4, "stop": 19_960.0, "symbol": "ETH", "leverage": 2.0}),
    ]
    for sn, kw in steps:
        rej = rm.check(intent(**kw), sn)  # type: ignore[arg-type]
        assert rej is not None
        seen.append(rej.check)
    assert seen == list(CHECKS[2:])
    assert [r.check for r in rm.rejections] == seen
    # The last one fixed passes.
    ok = {**base, "qty": 0.5, "stop": 19_960.0, "symbol": "ETH"}
    assert_passes(rm, intent(**ok), snap(replace(mine, stop=20_100.0)))  # type: ignore[arg-type]


def test_default_limits_scenario() -> None:
    """The defaults on a 30/20/20/30 portfolio: a normal entry passes, a 3 % risk entry does not."""
    rm = RiskManager()
    sn = snap(expo("B", "ETH", 10.0, 2_000.0, stop=1_900.0), expo("D", "SOL", -100.0, 100.0, stop=110.0))
    qty = position_size(ALLOC["A"], 20_000.0, 19_000.0, 2.0)  # 0.6 BTC
    assert_passes(rm, intent("A", "BTC", qty=qty, price=20_000.0, stop=19_000.0), sn)
    assert_rejected(
        rm, intent("A", "BTC", qty=0.9, price=20_000.0, stop=19_000.0), sn, "max_risk_per_trade", 900.0, 600.0
    )


def test_rejections_recorded_in_order_and_as_table() -> None:
    rm = only(max_loss_per_trade=100.0, daily_loss_limit=1_000.0)
    assert rm.to_rows() == []
    assert rm.to_table().schema == REJECTIONS_SCHEMA and rm.to_table().num_rows == 0
    assert_passes(rm, intent(qty=1.0, price=100.0, stop=50.0), snap())
    first = rm.check(intent("B", "ETH", side=-1, qty=3.0, price=100.0, stop=150.0), snap())
    second = rm.check(intent("C"), snap(equity=90_000.0))
    assert rm.rejections == [first, second]
    rows = rm.to_rows()
    assert rows[0] == {
        "ts": T0, "strategy": "B", "symbol": "ETH", "side": -1, "qty": 3.0, "price": 100.0,
        "check": "max_loss_per_trade", "value": 150.0, "limit": 100.0, "message": first.message if first else "",
    }  # fmt: skip
    table = rm.to_table()
    assert table.schema == REJECTIONS_SCHEMA
    assert table.schema.field("ts").type == pa.timestamp("ns", tz="UTC")
    assert table.column("check").to_pylist() == ["max_loss_per_trade", "daily_loss"]
    assert table.column("ts").cast(pa.int64()).to_pylist() == [T0, T0]


# ---------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"price": math.nan}, "price"),
        ({"price": 0.0}, "price"),
        ({"qty": 0.0}, "qty"),
        ({"qty": -1.0}, "qty"),
        ({"qty": math.inf}, "qty"),
        ({"side": 0}, "side"),
        ({"side": 2}, "side"),
        ({"side": True}, "side"),
        ({"stop": math.nan}, "stop"),
        ({"stop": -1.0}, "stop"),
        ({"stop": 101.0}, "stop"),  # a BUY's stop above its price
        ({"stop": 100.0}, "stop"),
        ({"multiplier": 0.0}, "multiplier"),
        ({"leverage": math.nan}, "leverage"),
        ({"strategy": ""}, "strategy"),
        ({"ts": 1.5}, "ts"),
    ],
)
def test_bad_intent_raises_naming_the_field(change: dict[str, object], field: str) -> None:
    rm = RiskManager()
    with pytest.raises(OrderError, match=f"intent '{field}'"):
        rm.check(replace(intent(price=100.0), **change), snap())  # type: ignore[arg-type]
    assert rm.rejections == []


def test_sell_stop_below_price_raises() -> None:
    with pytest.raises(OrderError, match="SELL's stop must be above"):
        RiskManager().check(intent(side=-1, price=100.0, stop=90.0), snap())


@pytest.mark.parametrize(
    ("sn", "field"),
    [
        (snap(equity=math.nan), "equity"),
        (snap(day_start=0.0), "day_start_equity"),
        (snap(allocated={"B": 1.0}), "allocated"),
        (snap(allocated={**ALLOC, "B": -1.0}), "allocated[B]"),
        (snap(blocked={"A": "tired"}), "blocked[A]"),
        (snap(expo("B", "BTC", math.nan, 100.0)), "exposures[0].qty"),
        (snap(expo("B", "BTC", 1.0, 100.0), expo("B", "ETH", 1.0, math.nan, entry=100.0)), "exposures[1].mark"),
        (snap(expo("B", "BTC", 1.0, 100.0, entry=0.0)), "exposures[0].entry"),
        (snap(expo("B", "BTC", 1.0, 100.0, stop=-5.0)), "exposures[0].stop"),
        (snap(expo("B", "BTC", 1.0, 100.0, leverage=0.0)), "exposures[0].leverage"),
    ],
)
def test_bad_snapshot_raises_naming_the_field(sn: RiskSnapshot, field: str) -> None:
    with pytest.raises(OrderError, match=re.escape(f"snapshot '{field}'")):
        RiskManager().check(intent(), sn)


# ---------------------------------------------------------------------------------- property test


def _oracle(it: OrderIntent, sn: RiskSnapshot, lim: RiskLimits) -> dict[str, tuple[float, float]]:
    """Every enabled check's (value, limit), recomputed from the definitions in RiskLimits' docstring."""
    out: dict[str, tuple[float, float]] = {}

    def ref(e: Exposure) -> float:
        return e.entry if e.pending else e.mark

    def loss_e(e: Exposure) -> float:
        if e.stop:
            return max(0.0, (ref(e) - e.stop) * (1 if e.qty > 0 else -1)) * abs(e.qty) * e.multiplier
        return (lim.unprotected_risk_pct or 0.0) / 100 * abs(e.qty) * ref(e) * e.multiplier

    order_loss: float | None
    if it.stop:
        order_loss = abs(it.price - it.stop) * it.qty * it.multiplier
    elif lim.unprotected_risk_pct is not None:
        order_loss = lim.unprotected_risk_pct / 100 * it.qty * it.price * it.multiplier
    else:
        order_loss = None
    if order_loss is not None and lim.max_loss_per_trade is not None:
        out["max_loss_per_trade"] = (order_loss, lim.max_loss_per_trade)
    if order_loss is not None and lim.max_risk_per_trade_pct is not None:
        out["max_risk_per_trade"] = (order_loss, lim.max_risk_per_trade_pct / 100 * sn.allocated[it.strategy])
    if lim.enforce_allocation:
        mine = [e for e in sn.exposures if e.strategy == it.strategy]
        margin = sum(abs(e.qty) * ref(e) * e.multiplier / e.leverage for e in mine)
        out["allocation"] = (margin + it.qty * it.price * it.multiplier / it.leverage, sn.allocated[it.strategy])
    if lim.conflict_mode == "reject":
        against = [
            e for e in sn.exposures if e.symbol == it.symbol and e.strategy != it.strategy and e.qty * it.side < 0
        ]
        out["conflict"] = (float(len(against)), 0.0)
    if lim.max_open_positions is not None:
        keys = {(e.strategy, e.symbol) for e in sn.exposures} | {(it.strategy, it.symbol)}
        out["max_open_positions"] = (float(len(keys)), float(lim.max_open_positions))
    if lim.max_total_open_risk_pct is not None:
        total = sum(loss_e(e) for e in sn.exposures) + (order_loss or 0.0)
        out["total_open_risk"] = (total, lim.max_total_open_risk_pct / 100 * sn.equity)
    if lim.max_leverage is not None:
        legs = [(e.symbol, (1 if e.qty > 0 else -1) * abs(e.qty) * ref(e) * e.multiplier) for e in sn.exposures]
        legs.append((it.symbol, it.side * it.qty * it.price * it.multiplier))
        if lim.conflict_mode == "net":
            nets: dict[str, float] = {}
            for sym, v in legs:
                nets[sym] = nets.get(sym, 0.0) + v
            notional = sum(abs(v) for v in nets.values())
        else:
            notional = sum(abs(v) for _, v in legs)
        out["leverage"] = (notional / sn.equity, lim.max_leverage)
    return out


STRATS = ["A", "B", "C", "D"]
SYMS = ["BTC", "ETH", "SOL"]
prices = st.floats(1.0, 1_000.0, allow_nan=False)


@st.composite
def exposures(draw: st.DrawFn) -> Exposure:
    qty = draw(st.floats(0.01, 50.0)) * draw(st.sampled_from([1, -1]))
    mark = draw(prices)
    pending = draw(st.booleans())
    entry = draw(prices)
    has_stop = draw(st.booleans())
    ref = entry if pending else mark
    stop = ref * draw(st.floats(0.5, 1.5)) if has_stop else 0.0
    return Exposure(
        draw(st.sampled_from(STRATS)), draw(st.sampled_from(SYMS)), qty, entry, mark,
        draw(st.sampled_from([1.0, 10.0])), draw(st.sampled_from([1.0, 2.0, 5.0])), stop, pending,
    )  # fmt: skip


@st.composite
def cases(draw: st.DrawFn) -> tuple[OrderIntent, RiskSnapshot, RiskLimits]:
    side = draw(st.sampled_from([1, -1]))
    price = draw(prices)
    stop = 0.0
    if draw(st.booleans()):
        stop = price * (1 - side * draw(st.floats(0.001, 0.5)))
    it = OrderIntent(
        T0, draw(st.sampled_from(STRATS)), draw(st.sampled_from(SYMS)), side, draw(st.floats(0.01, 100.0)), price,
        stop, draw(st.sampled_from([1.0, 10.0])), draw(st.sampled_from([1.0, 3.0])),
    )  # fmt: skip
    equity = draw(st.floats(10_000.0, 200_000.0))
    sn = RiskSnapshot(
        T0, equity, equity, {s: equity * w for s, w in zip(STRATS, (0.3, 0.2, 0.2, 0.3), strict=True)},
        draw(st.lists(exposures(), max_size=8)),
    )  # fmt: skip
    lim = RiskLimits(
        max_loss_per_trade=draw(st.none() | st.floats(100.0, 5_000.0)),
        max_risk_per_trade_pct=draw(st.none() | st.floats(0.5, 5.0)),
        max_total_open_risk_pct=draw(st.none() | st.floats(5.0, 50.0)),
        unprotected_risk_pct=draw(st.none() | st.floats(1.0, 20.0)),
        enforce_allocation=draw(st.booleans()),
        conflict_mode=draw(st.sampled_from(["reject", "net"])),
        max_open_positions=draw(st.none() | st.integers(1, 10)),
        max_leverage=draw(st.none() | st.floats(0.5, 5.0)),
    )
    return it, sn, lim


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases())
def test_accepted_orders_never_leave_a_figure_over_its_limit(
    case: tuple[OrderIntent, RiskSnapshot, RiskLimits],
) -> None:
    it, sn, lim = case
    rm = RiskManager(lim)
    rej = rm.check(it, sn)
    figures = _oracle(it, sn, lim)
    if rej is None:
        for check, (value, limit) in figures.items():
            assert value <= limit + REL_TOL * abs(limit) + 1e-9, (check, value, limit)
        assert rm.rejections == []
    else:
        # The reported check really fails, with the figures the oracle computes, and every check
        # before it passes.
        assert rm.rejections == [rej]
        value, limit = figures[rej.check]
        assert value > limit
        if rej.check != "conflict":
            assert rej.value == pytest.approx(value, rel=1e-9)
            assert rej.limit == pytest.approx(limit, rel=1e-9)
        for check in CHECKS[: CHECKS.index(rej.check)]:
            if check in figures:
                v, lmt = figures[check]
                assert v <= lmt * (1 + 1e-9) + 1e-9, (check, v, lmt)
