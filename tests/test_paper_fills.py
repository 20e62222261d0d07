"""Table-driven fill scenarios for the paper exchange: every order type and fill rule, fees,
slippage, ticks/lots, brackets, reduce-only, averaging, partial close, reversal, funding, margin.

Each row is computed by hand in its comment; the expected numbers are literals.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from engine.errors import OrderError
from engine.execution.account import Account
from engine.execution.orders import BUY, SELL, OrderStatus, OrderType
from engine.execution.paper import PaperExchange
from engine.instruments import Instrument

M, LMT, STP, STL = OrderType.MARKET, OrderType.LIMIT, OrderType.STOP_MARKET, OrderType.STOP_LIMIT


@dataclass
class Case:
    name: str
    steps: list[tuple[list[dict[str, Any]], tuple[float, float, float, float]]]
    fills: list[tuple[int, float, float, float, str]]  # side, qty, price, fee, liquidity
    cash: float
    qty: float
    avg: float = 0.0
    inst: dict[str, Any] = field(default_factory=dict)
    start_cash: float = 10_000.0
    slippage_bps: float = 0.0
    realized: float = 0.0
    statuses: list[str] | None = None


def o(side: int, qty: float = 0.0, kind: OrderType = M, **kw: Any) -> dict[str, Any]:
    return {"side": side, "qty": qty, "order_type": kind, **kw}


SPOT = {"taker_fee": 0.001, "maker_fee": 0.0002}
PERP = {"kind": "perpetual", "taker_fee": 0.001, "maker_fee": 0.0002, "leverage": 5}
BAR = (100.0, 105.0, 95.0, 102.0)

CASES = [
    # 10 @ open 100, taker 0.1 % → fee 1.0; cash 10000 − 1000 − 1
    Case(
        "market buy at next open",
        [([o(BUY, 10)], BAR)],
        [(BUY, 10, 100.0, 1.0, "taker")],
        8999.0,
        10,
        100.0,
        SPOT,
    ),
    # slippage 10 bps: 100 × 1.001 = 100.1; fee 10 × 100.1 × 0.001 = 1.001; cash 10000 − 1001 − 1.001
    Case(
        "market buy with slippage",
        [([o(BUY, 10)], BAR)],
        [(BUY, 10, 100.1, 1.001, "taker")],
        8997.999,
        10,
        100.1,
        SPOT,
        slippage_bps=10,
    ),
    # perp short: 100 × 0.999 = 99.9 → tick 0.5 rounds against the seller → 99.5; fee 0.995; wallet −0.995
    Case(
        "market sell, slippage, tick rounding",
        [([o(SELL, 10)], BAR)],
        [(SELL, 10, 99.5, 0.995, "taker")],
        9999.005,
        -10,
        99.5,
        PERP | {"tick_size": 0.5},
        slippage_bps=10,
    ),
    # qty 10.37 rounds down to lot 0.1 → 10.3; fee 10.3 × 100 × 0.001 = 1.03
    Case(
        "lot rounding",
        [([o(BUY, 10.37)], BAR)],
        [(BUY, 10.3, 100.0, 1.03, "taker")],
        8968.97,
        10.3,
        100.0,
        SPOT | {"lot_size": 0.1},
    ),
    # buy limit 98 reached by the low 97 → fills at 98, maker 0.02 %: 10 × 98 × 0.0002 = 0.196
    Case(
        "buy limit touched",
        [([o(BUY, 10, LMT, price=98)], (100, 101, 97, 99))],
        [(BUY, 10, 98.0, 0.196, "maker")],
        10_000 - 980 - 0.196,
        10,
        98.0,
        SPOT,
    ),
    # gap down through the limit: fills at the open 96 (better); fee 0.192
    Case(
        "buy limit gapped through",
        [([o(BUY, 10, LMT, price=98)], (96, 97, 95, 96.5))],
        [(BUY, 10, 96.0, 0.192, "maker")],
        10_000 - 960 - 0.192,
        10,
        96.0,
        SPOT,
    ),
    # low 98.5 never reaches 98: nothing fills, the order stays open
    Case(
        "buy limit not reached",
        [([o(BUY, 10, LMT, price=98)], (100, 101, 98.5, 99))],
        [],
        10_000,
        0,
        0.0,
        SPOT,
        statuses=["OPEN"],
    ),
    # long 10 @ 100 (fee 1), then sell limit 105 hit by high 106: proceeds 1050, maker fee 0.21
    Case(
        "sell limit closes long",
        [([o(BUY, 10)], BAR), ([o(SELL, 10, LMT, price=105)], (103, 106, 102, 104))],
        [(BUY, 10, 100.0, 1.0, "taker"), (SELL, 10, 105.0, 0.21, "maker")],
        10_000 - 1001 + 1050 - 0.21,
        0,
        0.0,
        SPOT,
        realized=50.0,
    ),
    # buy stop 103 reached by the high 104 → 103 × 1.001 slippage = 103.103; fee 1.03103
    Case(
        "buy stop triggered",
        [([o(BUY, 10, STP, stop_price=103)], (100, 104, 99, 101))],
        [(BUY, 10, 103.103, 1.03103, "taker")],
        10_000 - 1031.03 - 1.03103,
        10,
        103.103,
        SPOT,
        slippage_bps=10,
    ),
    # gap up over the stop: fills at the open 104
    Case(
        "buy stop gapped",
        [([o(BUY, 10, STP, stop_price=103)], (104, 106, 103.5, 105))],
        [(BUY, 10, 104.0, 1.04, "taker")],
        10_000 - 1040 - 1.04,
        10,
        104.0,
        SPOT,
    ),
    # long 10 @ 100, sell stop 97 hit by the low 96: realized (97 − 100) × 10 = −30; fee 0.97
    Case(
        "sell stop loss",
        [([o(BUY, 10)], BAR), ([o(SELL, 10, STP, stop_price=97)], (99, 100, 96, 98))],
        [(BUY, 10, 100.0, 1.0, "taker"), (SELL, 10, 97.0, 0.97, "taker")],
        10_000 - 1001 + 970 - 0.97,
        0,
        0.0,
        SPOT,
        realized=-30.0,
    ),
    # stop-limit: trigger 103 ≤ limit 103.5 → fills at the trigger, taker
    Case(
        "stop-limit marketable at trigger",
        [([o(BUY, 10, STL, stop_price=103, price=103.5)], (100, 104, 99, 101))],
        [(BUY, 10, 103.0, 1.03, "taker")],
        10_000 - 1030 - 1.03,
        10,
        103.0,
        SPOT,
    ),
    # gap to 104 > limit: rests; path O 104 → H 104.5 → L 103.2: reaches 103.5 → maker fill, fee 0.207
    Case(
        "stop-limit gapped then filled",
        [([o(BUY, 10, STL, stop_price=103, price=103.5)], (104, 104.5, 103.2, 103.4))],
        [(BUY, 10, 103.5, 0.207, "maker")],
        10_000 - 1035 - 0.207,
        10,
        103.5,
        SPOT,
    ),
    # gap to 104, low 103.8 never reaches 103.5: triggered but unfilled; next bar opens 103.6, low 103 → 103.5
    Case(
        "stop-limit rests to next bar",
        [
            ([o(BUY, 10, STL, stop_price=103, price=103.5)], (104, 105, 103.8, 104.5)),
            ([], (103.6, 104, 103, 103.2)),
        ],
        [(BUY, 10, 103.5, 0.207, "maker")],
        10_000 - 1035 - 0.207,
        10,
        103.5,
        SPOT,
    ),
    # bracket: entry 100; path O→H(103)→L(94) since the high is nearer; SL 95 fills on the way down
    Case(
        "bracket stop loss in the entry bar",
        [([o(BUY, 10, stop_loss=95, take_profit=110)], (100, 103, 94, 96))],
        [(BUY, 10, 100.0, 1.0, "taker"), (SELL, 10, 95.0, 0.95, "taker")],
        10_000 - 1001 + 950 - 0.95,
        0,
        0.0,
        SPOT,
        realized=-50.0,
        statuses=["FILLED", "FILLED", "CANCELLED"],
    ),
    # bracket: path O→L(97, above SL)→H(111): TP 110 fills as maker (fee 0.22), SL cancelled
    Case(
        "bracket take profit",
        [([o(BUY, 10, stop_loss=95, take_profit=110)], (100, 111, 97, 108))],
        [(BUY, 10, 100.0, 1.0, "taker"), (SELL, 10, 110.0, 0.22, "maker")],
        10_000 - 1001 + 1100 - 0.22,
        0,
        0.0,
        SPOT,
        realized=100.0,
        statuses=["FILLED", "CANCELLED", "FILLED"],
    ),
    # reduce-only sell 20 against long 10 → capped to 10
    Case(
        "reduce-only capped",
        [([o(BUY, 10)], BAR), ([o(SELL, 20, reduce_only=True)], (110, 111, 109, 110))],
        [(BUY, 10, 100.0, 1.0, "taker"), (SELL, 10, 110.0, 1.1, "taker")],
        10_000 - 1001 + 1100 - 1.1,
        0,
        0.0,
        SPOT,
        realized=100.0,
    ),
    # reduce-only with no position → cancelled, nothing filled
    Case(
        "reduce-only without position",
        [([o(SELL, 5, reduce_only=True)], BAR)],
        [],
        10_000,
        0,
        0.0,
        SPOT,
        statuses=["CANCELLED"],
    ),
    # averaging: 10 @ 100 then 10 @ 110 → avg 105; fees 1.0 + 1.1
    Case(
        "averaging",
        [([o(BUY, 10)], BAR), ([o(BUY, 10)], (110, 112, 108, 111))],
        [(BUY, 10, 100.0, 1.0, "taker"), (BUY, 10, 110.0, 1.1, "taker")],
        10_000 - 1001 - 1101.1,
        20,
        105.0,
        SPOT,
    ),
    # partial close of the averaged position: sell 5 @ 120 → realized (120 − 105) × 5 = 75; fee 0.6
    Case(
        "partial close",
        [([o(BUY, 10)], BAR), ([o(BUY, 10)], (110, 112, 108, 111)), ([o(SELL, 5)], (120, 121, 119, 120))],
        [(BUY, 10, 100.0, 1.0, "taker"), (BUY, 10, 110.0, 1.1, "taker"), (SELL, 5, 120.0, 0.6, "taker")],
        10_000 - 1001 - 1101.1 + 600 - 0.6,
        15,
        105.0,
        SPOT,
        realized=75.0,
    ),
    # perp reversal: long 10 @ 100 (fee 1), sell 25 @ 90 (fee 2.25): realized −100, new short 15 @ 90;
    # wallet 10000 − 1 − 100 − 2.25
    Case(
        "reversal on a perpetual",
        [([o(BUY, 10)], BAR), ([o(SELL, 25)], (90, 91, 89, 90))],
        [(BUY, 10, 100.0, 1.0, "taker"), (SELL, 25, 90.0, 2.25, "taker")],
        10_000 - 1 - 100 - 2.25,
        -15,
        90.0,
        PERP,
        realized=-100.0,
    ),
    # all-in: floor(10000 / (101.37 × 1.001)) = floor(98.553…) = 98; fee 98 × 101.37 × 0.001 = 9.93426
    Case(
        "all-in sizing reserves the fee",
        [([o(BUY, size_pct=100)], (101.37, 102, 100, 101))],
        [(BUY, 98, 101.37, 9.93426, "taker")],
        10_000 - 98 * 101.37 - 9.93426,
        98,
        101.37,
        SPOT | {"lot_size": 1},
    ),
    # spot short selling is rejected
    Case("spot short rejected", [([o(SELL, 1)], BAR)], [], 10_000, 0, 0.0, SPOT, statuses=["REJECTED"]),
    # 200 × 100 = 20000 > cash 10000 → rejected
    Case("insufficient cash rejected", [([o(BUY, 200)], BAR)], [], 10_000, 0, 0.0, SPOT, statuses=["REJECTED"]),
    # leverage 10, cash 1000, all-in at 100, taker 0.05 %: qty = 1000 × 10 / (100 × (1 + 0.0005 × 10)) = 99.50248…
    # → lot 0.001 → 99.502; fee 99.502 × 100 × 0.0005 = 4.9751
    Case(
        "perp all-in with leverage",
        [([o(BUY, size_pct=100)], BAR)],
        [(BUY, 99.502, 100.0, 4.9751, "taker")],
        1000 - 4.9751,
        99.502,
        100.0,
        {"kind": "perpetual", "taker_fee": 0.0005, "leverage": 10, "lot_size": 0.001},
        start_cash=1000,
    ),
    # leverage 2, cash 1000: 30 @ 100 needs 1500 margin → rejected
    Case(
        "perp margin rejected",
        [([o(BUY, 30)], BAR)],
        [],
        1000,
        0,
        0.0,
        {"kind": "perpetual", "leverage": 2},
        start_cash=1000,
        statuses=["REJECTED"],
    ),
]


def run_case(case: Case) -> tuple[PaperExchange, list[Any]]:
    inst = Instrument(symbol="X", **case.inst)
    account = Account(case.start_cash)
    closes = [0.0]
    x = PaperExchange(account, {"X": inst}, slippage_bps=case.slippage_bps, mark=lambda s: closes[-1])
    orders = []
    for k, (requests, (op, hi, lo, cl)) in enumerate(case.steps):
        for req in requests:
            orders.append(x.submit("X", **req))
        x.process_bar("X", k, op, hi, lo, cl, k)
        closes.append(cl)
    return x, orders


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_fill_scenario(case: Case) -> None:
    x, _ = run_case(case)
    got = [(f.side, f.qty, f.price, f.fee, f.liquidity) for f in x.fills]
    assert len(got) == len(case.fills), got
    for g, e in zip(got, case.fills, strict=True):
        assert g[0] == e[0] and g[4] == e[4]
        assert g[1] == pytest.approx(e[1], abs=1e-9)
        assert g[2] == pytest.approx(e[2], abs=1e-9)
        assert g[3] == pytest.approx(e[3], abs=1e-9)
    pos = x.account.positions["X"]
    assert x.account.cash == pytest.approx(case.cash, abs=1e-9)
    assert pos.qty == pytest.approx(case.qty, abs=1e-9)
    assert pos.avg_price == pytest.approx(case.avg, abs=1e-9)
    assert pos.realized_pnl == pytest.approx(case.realized, abs=1e-9)
    assert x.account.fees_paid == pytest.approx(sum(e[3] for e in case.fills), abs=1e-9)
    if case.statuses is not None:
        statuses = [o.status.name for o in sorted(x.orders.values(), key=lambda o: o.order_id)]
        assert statuses == case.statuses


def test_reversal_books_one_closed_trade_with_split_fees() -> None:
    x, _ = run_case(next(c for c in CASES if c.name == "reversal on a perpetual"))
    (trade,) = x.account.trades
    # trade: long 10 @ 100 → 90; gross −100; fees: entry 1.0 + closing share 10/25 × 2.25 = 0.9
    _, symbol, side, qty, _, _, entry, exit_, gross, fees, _, net, _ = trade
    assert (symbol, side, qty, entry, exit_) == ("X", 1, 10, 100.0, 90.0)
    assert gross == pytest.approx(-100.0)
    assert fees == pytest.approx(1.9)
    assert net == pytest.approx(-101.9)
    pos = x.account.positions["X"]
    assert pos.t_fees == pytest.approx(1.35)  # the short's share: 15/25 × 2.25


def test_funding_payment_sign_and_amount() -> None:
    inst = Instrument(symbol="X", kind="perpetual", leverage=5)
    account = Account(10_000)
    x = PaperExchange(account, {"X": inst}, mark=lambda s: 100.0)
    x.submit("X", BUY, 10)
    x.process_bar("X", 0, 100, 101, 99, 100, 0)
    # long 10, rate +0.0001, mark 102: pays 10 × 102 × 0.0001 = 0.102
    assert account.settle_funding("X", 0.0001, 102.0, 1) == pytest.approx(-0.102)
    # a negative rate pays the long: receives 10 × 101 × 0.0003 = 0.303
    assert account.settle_funding("X", -0.0003, 101.0, 2) == pytest.approx(0.303)
    assert account.cash == pytest.approx(10_000 - 0.102 + 0.303)
    assert account.funding_paid == pytest.approx(0.102 - 0.303)
    x.submit("X", SELL, 20)
    x.process_bar("X", 3, 100, 101, 99, 100, 3)
    # short 10 now receives a positive rate: 10 × 100 × 0.0001 = 0.1
    assert account.settle_funding("X", 0.0001, 100.0, 4) == pytest.approx(0.1)


def test_spot_instruments_do_not_pay_funding() -> None:
    account = Account(10_000)
    x = PaperExchange(account, {"X": Instrument(symbol="X")})
    x.submit("X", BUY, 1)
    x.process_bar("X", 0, 100, 101, 99, 100, 0)
    assert account.settle_funding("X", 0.01, 100.0, 1) == 0.0


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"qty": -1}, "qty"),
        ({"qty": float("nan")}, "qty"),
        ({"qty": 1, "size_pct": 50}, "qty"),
        ({"size_pct": 150}, "size_pct"),
        ({"qty": 1, "order_type": LMT}, "price"),
        ({"qty": 1, "order_type": STP}, "stop_price"),
        ({"qty": 1, "stop_loss": 110, "take_profit": 100}, "stop_loss"),
    ],
)
def test_bad_order_requests_name_the_field(kwargs: dict[str, Any], field: str) -> None:
    x = PaperExchange(Account(1000), {"X": Instrument(symbol="X")})
    with pytest.raises(OrderError, match=f"'{field}"):
        x.submit("X", BUY, **kwargs)
    assert x.book["X"] == []


def test_unknown_symbol_and_side() -> None:
    x = PaperExchange(Account(1000), {"X": Instrument(symbol="X")})
    with pytest.raises(OrderError, match="symbol"):
        x.submit("Y", BUY, 1)
    with pytest.raises(OrderError, match="side"):
        x.submit("X", 2, 1)


def test_orders_fill_in_path_order_and_cancel() -> None:
    # a buy limit at 96 and a buy stop at 104 on a bar
    # O 100 → L 95.5 (nearer) → H 105: the limit fills first (96 is reached earlier), then the stop
    x = PaperExchange(Account(10_000), {"X": Instrument(symbol="X")})
    a = x.submit("X", BUY, 1, order_type=STP, stop_price=104)
    b = x.submit("X", BUY, 1, order_type=LMT, price=96)
    x.process_bar("X", 0, 100, 105, 95.5, 101, 0)
    assert [f.order_id for f in x.fills] == [b.order_id, a.order_id]
    c = x.submit("X", BUY, 1, order_type=LMT, price=50)
    assert x.cancel(c.order_id) and c.status == OrderStatus.CANCELLED
    assert not x.cancel(c.order_id)


def test_liquidation_at_the_maintenance_margin_price() -> None:
    # cash 1000, leverage 10, no fees, long 99 @ 100, maintenance 0.5 %:
    # equity(P) = 1000 + 99 × (P − 100) = 0.005 × 99 × P  →  P = 8900 / (99 × 0.995) = 90.350743...
    inst = Instrument(symbol="X", kind="perpetual", leverage=10, maintenance_margin=0.005)
    account = Account(1000)
    x = PaperExchange(account, {"X": inst}, mark=lambda s: 100.0)
    x.submit("X", BUY, 99)
    x.process_bar("X", 0, 100, 101, 99, 100, 0)
    assert not x.check_liquidation("X", 1, 95, 96, 91, 1)  # low 91 stays above P
    stop = x.submit("X", SELL, 99, order_type=STP, stop_price=50)
    assert x.check_liquidation("X", 2, 95, 96, 89, 2)
    price = 8900 / (99 * 0.995)
    fill = x.fills[-1]
    assert (fill.side, fill.qty, fill.tag, fill.liquidity) == (SELL, 99, "liquidation", "taker")
    assert fill.price == pytest.approx(price, abs=1e-9)
    assert account.positions["X"].qty == 0.0
    assert account.cash == pytest.approx(0.005 * 99 * price, abs=1e-9)  # equity = maintenance margin
    assert stop.status == OrderStatus.CANCELLED


def test_liquidation_of_a_short_gapping_up_fills_at_the_open() -> None:
    # short 50 @ 100 with cash 1000: P = (−5000 − 1000) / (−50 × 1.005) = 119.4029...; the bar opens at 125
    inst = Instrument(symbol="X", kind="perpetual", leverage=5, maintenance_margin=0.005)
    account = Account(1000)
    x = PaperExchange(account, {"X": inst}, mark=lambda s: 100.0)
    x.submit("X", SELL, 50)
    x.process_bar("X", 0, 100, 101, 99, 100, 0)
    assert x.check_liquidation("X", 1, 125, 130, 124, 1)
    assert x.fills[-1].price == 125.0
    assert account.cash == pytest.approx(1000 - 50 * 25, abs=1e-9)
