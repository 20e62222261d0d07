"""Strategy book: legs, exits, bot fills, rules and rows. Expected figures are computed by hand from
DESIGN.md's formulas: M2M = (LTP − entry) × qty × side × multiplier, realized = (exit − entry) × q × side × mult."""

from __future__ import annotations

import pytest

from engine.errors import ParameterError
from engine.m2m import BotFill, LegSpec, M2MError, StrategyBook


def _book() -> StrategyBook:
    book = StrategyBook("acct-1", ts=1)
    book.create_strategy("s1", "Trend", 2, tags=["btc", "trend"])
    return book


def test_default_strategy_created_and_protected() -> None:
    book = _book()
    default = book.strategy("acct-1:default")
    assert default.is_default and default.status == "active"
    assert [s.instance_id for s in book.strategies()] == ["acct-1:default", "s1"]
    with pytest.raises(M2MError, match=r"default strategy .* cannot be renamed") as err:
        book.rename_strategy("acct-1:default", "Other", 3)
    assert err.value.field == "instance_id"
    with pytest.raises(M2MError, match="cannot be archived"):
        book.archive_strategy("acct-1:default", 3)
    assert book.strategy("acct-1:default").name == "Default Strategy"
    assert book.strategy("acct-1:default").status == "active"


def test_long_gains_short_loses_when_price_rises() -> None:
    book = _book()
    book.add_leg("s1", LegSpec("BTCUSDT", +1, 0.5, 40_000.0), 10)
    book.add_leg("s1", LegSpec("ETHUSDT", -1, 2.0, 2_000.0), 10)
    long_leg, short_leg = book.open_legs("s1")
    # BTC 40,000 -> 41,000: (41,000 − 40,000) × 0.5 × (+1) × 1 = +500
    assert long_leg.unrealized(41_000.0) == pytest.approx(500.0)
    # ETH 2,000 -> 2,100: (2,100 − 2,000) × 2 × (−1) × 1 = −200
    assert short_leg.unrealized(2_100.0) == pytest.approx(-200.0)
    assert book.unrealized_pnl("s1", {"BTCUSDT": 41_000.0, "ETHUSDT": 2_100.0}) == pytest.approx(300.0)


def test_partial_exits_book_realized_pnl() -> None:
    book = _book()
    # NIFTY option sold: 4 lots of 25 at 120, multiplier 1
    book.add_leg("s1", LegSpec("NIFTY09MAY2422500CE", -1, 100, 120.0, segment="option", lot_size=25), 10)
    leg_id = book.open_legs("s1")[0].leg_id
    ch = book.exit_leg(leg_id, 25, 100.0, 20)  # (100 − 120) × 25 × (−1) = +500
    assert ch.exits[0].realized_pnl == pytest.approx(500.0)
    assert ch.legs[0].qty == 75 and ch.legs[0].status == "open"
    ch = book.exit_leg(leg_id, 50, 130.0, 30)  # (130 − 120) × 50 × (−1) = −500
    assert ch.exits[0].realized_pnl == pytest.approx(-500.0)
    ch = book.exit_leg(leg_id, 25, 0.0, 40)  # expires worthless: (0 − 120) × 25 × (−1) = +3,000
    assert ch.exits[0].realized_pnl == pytest.approx(3_000.0)
    leg = book.leg(leg_id)
    assert leg.status == "closed" and leg.qty == 0
    assert leg.realized_pnl == pytest.approx(3_000.0)
    assert book.realized_pnl("s1") == pytest.approx(3_000.0)
    assert [e.exit_id for e in book.exits(leg_id)] == [1, 2, 3]


def test_exit_rules_and_no_state_change_on_refusal() -> None:
    book = _book()
    book.add_leg("s1", LegSpec("NIFTY-FUT", 1, 50, 22_000.0, segment="future", lot_size=25), 10)
    leg_id = book.open_legs("s1")[0].leg_id
    before = book.to_rows()
    with pytest.raises(M2MError, match="multiple of lot_size 25") as err:
        book.exit_leg(leg_id, 10, 22_100.0, 20)
    assert err.value.field == "qty"
    with pytest.raises(M2MError, match="exceeds the open quantity"):
        book.exit_leg(leg_id, 75, 22_100.0, 20)
    with pytest.raises(M2MError, match="must be > 0") as err:
        book.exit_leg(leg_id, 25, 0.0, 20)
    assert err.value.field == "price"
    with pytest.raises(M2MError, match="unknown leg"):
        book.exit_leg("nope", 25, 22_100.0, 20)
    assert book.to_rows() == before
    # an exit retried with its id is booked once
    book.exit_leg(leg_id, 25, 22_100.0, 20, exit_id=7)
    assert book.exit_leg(leg_id, 25, 22_100.0, 20, exit_id=7).empty
    assert len(book.exits()) == 1 and book.leg(leg_id).qty == 25
    with pytest.raises(M2MError, match="exit 7 already exists"):
        book.exit_leg(leg_id, 25, 22_200.0, 21, exit_id=7)


def test_bad_leg_specs_name_the_field() -> None:
    book = _book()
    cases = [
        (LegSpec("X", 2, 1.0, 10.0), "side"),
        (LegSpec("X", 1, 0.0, 10.0), "qty"),
        (LegSpec("X", 1, 30.0, 10.0, lot_size=25), "qty"),
        (LegSpec("X", 1, 1.0, 10.0, lot_size=-1), "lot_size"),
        (LegSpec("X", 1, 1.0, -1.0), "entry_price"),
        (LegSpec("X", 1, 1.0, 10.0, segment="swap"), "segment"),
        (LegSpec("X", 1, 1.0, 10.0, multiplier=0), "multiplier"),
        (LegSpec("", 1, 1.0, 10.0), "symbol"),
        (LegSpec("X", 1, 1.0, 10.0, option_type="C"), "option_type"),
        (LegSpec("X", 1, 1.0, 10.0, segment="option", option_type="X"), "option_type"),
        (LegSpec("X", 1, 1.0, 10.0, segment="option", option_type="C", implied_vol=15.0), "implied_vol"),
        (LegSpec("X", 1, float("nan"), 10.0), "qty"),
    ]
    for spec, field in cases:
        with pytest.raises(M2MError) as err:
            book.add_leg("s1", spec, 10)
        assert err.value.field == field, spec
        assert isinstance(err.value, ParameterError)
    assert book.legs() == []


def test_another_accounts_instance_is_unknown() -> None:
    mine, theirs = _book(), StrategyBook("acct-2")
    theirs.create_strategy("s9", "Theirs", 1)
    theirs.add_leg("s9", LegSpec("BTCUSDT", 1, 1.0, 100.0), 2)
    with pytest.raises(M2MError, match="unknown strategy instance 's9' in account 'acct-1'"):
        mine.add_leg("s9", LegSpec("BTCUSDT", 1, 1.0, 100.0), 3)
    with pytest.raises(M2MError, match="unknown"):
        mine.apply_fill("acct-2:default", "bot", BotFill(1, "BTCUSDT", 1, 1.0, 100.0, 3))
    with pytest.raises(M2MError, match="unknown leg"):
        mine.exit_leg(theirs.legs()[0].leg_id, 1.0, 100.0, 3)
    with pytest.raises(M2MError, match="belongs to account 'acct-2'"):
        StrategyBook.from_rows("acct-1", **_with_default(theirs.to_rows(), "acct-1"))


def _with_default(rows: dict, account: str) -> dict:
    rows = dict(rows)
    rows["strategies"] = [
        {**r, "account_id": account} if r["is_default"] else r for r in rows["strategies"] if r["is_default"]
    ] + [r for r in rows["strategies"] if not r["is_default"]]
    return rows


def test_archive_rename_tags_limits() -> None:
    book = _book()
    book.add_leg("s1", LegSpec("BTCUSDT", 1, 1.0, 100.0), 10)
    with pytest.raises(M2MError, match="has 1 open leg"):
        book.archive_strategy("s1", 11)
    book.rename_strategy("s1", "  Renamed ", 12)
    assert book.strategy("s1").name == "Renamed"
    book.set_tags("s1", ["a", "b", "a"], 12)
    assert book.strategy("s1").tags == ["a", "b"]
    with pytest.raises(M2MError) as err:
        book.set_limits("s1", 12, target_profit=-5, stop_loss=None)
    assert err.value.field == "target_profit"
    book.set_limits("s1", 12, target_profit=100.0, stop_loss=50.0)
    book.remove_leg(book.open_legs("s1")[0].leg_id, 13)
    ch = book.archive_strategy("s1", 14)
    assert ch.strategies[0].status == "archived"
    assert book.archive_strategy("s1", 15).empty
    with pytest.raises(M2MError, match="archived"):
        book.add_leg("s1", LegSpec("BTCUSDT", 1, 1.0, 100.0), 16)
    with pytest.raises(M2MError, match="archived"):
        book.rename_strategy("s1", "x", 16)
    with pytest.raises(M2MError) as err:
        book.create_strategy("s2", "", 1)
    assert err.value.field == "name"
    with pytest.raises(M2MError, match="already exists"):
        book.create_strategy("s1", "Other", 1)


def test_remove_leg_books_nothing() -> None:
    book = _book()
    book.add_leg("s1", LegSpec("BTCUSDT", 1, 2.0, 100.0), 10, leg_id="typo")
    ch = book.remove_leg("typo", 11)
    assert ch.exits == () and ch.legs[0].status == "removed" and ch.legs[0].qty == 0
    assert book.realized_pnl("s1") == 0
    book.add_leg("s1", LegSpec("BTCUSDT", 1, 2.0, 100.0), 12, leg_id="real")
    book.exit_leg("real", 1.0, 110.0, 13)
    with pytest.raises(M2MError, match="has exits"):
        book.remove_leg("real", 14)
    # the same id with the same content is idempotent; different content is refused
    assert book.add_leg("s1", LegSpec("BTCUSDT", 1, 2.0, 100.0), 12, leg_id="real").empty
    with pytest.raises(M2MError, match="already exists"):
        book.add_leg("s1", LegSpec("BTCUSDT", 1, 3.0, 100.0), 12, leg_id="real")


def test_close_strategy_exits_everything_or_nothing() -> None:
    book = _book()
    book.add_leg("s1", LegSpec("BTCUSDT", 1, 2.0, 100.0), 10)
    book.add_leg("s1", LegSpec("ETHUSDT", -1, 3.0, 10.0), 10)
    with pytest.raises(M2MError) as err:
        book.close_strategy("s1", {"BTCUSDT": 105.0}, 20)
    assert err.value.field == "prices[ETHUSDT]"
    assert len(book.open_legs("s1")) == 2 and book.exits() == []
    ch = book.close_strategy("s1", {"BTCUSDT": 105.0, "ETHUSDT": 12.0}, 20)
    # (105 − 100) × 2 × 1 = 10 ; (12 − 10) × 3 × (−1) = −6
    assert [e.realized_pnl for e in ch.exits] == pytest.approx([10.0, -6.0])
    assert book.open_legs("s1") == [] and book.realized_pnl("s1") == pytest.approx(4.0)


def test_bot_fills_exit_fifo_then_open_the_remainder() -> None:
    book = _book()
    book.add_leg("s1", LegSpec("BTCUSDT", 1, 5.0, 90.0), 1, leg_id="manual")  # never touched by fills
    book.apply_fill("s1", "bot7", BotFill(1, "BTCUSDT", +1, 1.0, 100.0, 10))
    book.apply_fill("s1", "bot7", BotFill(2, "BTCUSDT", +1, 2.0, 110.0, 20))
    assert [leg.leg_id for leg in book.open_legs("s1")] == ["manual", "bot7:1", "bot7:2"]
    # sell 2.5: exits bot7:1 fully (1 @100) then 1.5 of bot7:2 (@110)
    ch = book.apply_fill("s1", "bot7", BotFill(3, "BTCUSDT", -1, 2.5, 120.0, 30))
    assert [(e.leg_id, e.qty) for e in ch.exits] == [("bot7:1", 1.0), ("bot7:2", 1.5)]
    # (120 − 100) × 1 = 20 ; (120 − 110) × 1.5 = 15
    assert [e.realized_pnl for e in ch.exits] == pytest.approx([20.0, 15.0])
    assert ch.opened == ()
    assert book.leg("bot7:2").qty == pytest.approx(0.5)
    # sell 1.5: closes the remaining 0.5 of bot7:2 and opens a 1.0 short
    ch = book.apply_fill("s1", "bot7", BotFill(4, "BTCUSDT", -1, 1.5, 100.0, 40))
    assert [(e.leg_id, e.qty) for e in ch.exits] == [("bot7:2", 0.5)]
    assert ch.exits[0].realized_pnl == pytest.approx((100.0 - 110.0) * 0.5)
    assert ch.opened == ("bot7:4",)
    short = book.leg("bot7:4")
    assert (short.side, short.qty, short.entry_price, short.source, short.bot_id) == (-1, 1.0, 100.0, "bot", "bot7")
    assert book.leg("manual").qty == 5.0
    # the same fill again is ignored
    assert book.apply_fill("s1", "bot7", BotFill(4, "BTCUSDT", -1, 1.5, 100.0, 40)).empty
    assert book.realized_pnl("s1") == pytest.approx(20.0 + 15.0 - 5.0)
    with pytest.raises(M2MError) as err:
        book.apply_fill("s1", "bot7", BotFill(5, "BTCUSDT", 0, 1.0, 100.0, 50))
    assert err.value.field == "side"
    assert not book.fill_seen("bot7", 5)


def test_rows_round_trip_and_integrity_checks() -> None:
    book = _book()
    book.set_limits("s1", 3, target_profit=10.0, stop_loss=5.0)
    book.add_leg("s1", LegSpec("BTCUSDT", 1, 2.0, 100.0), 10)
    book.apply_fill("s1", "b", BotFill(1, "ETHUSDT", -1, 3.0, 10.0, 11))
    book.apply_fill("s1", "b", BotFill(2, "ETHUSDT", 1, 1.0, 9.0, 12))
    book.exit_leg(f"{book.account_id}:m1", 1.0, 105.0, 13)
    rows = book.to_rows()
    again = StrategyBook.from_rows("acct-1", rows["strategies"], rows["legs"], rows["exits"])
    assert again.to_rows() == rows
    assert again.fill_seen("b", 1) and again.fill_seen("b", 2)
    assert again.apply_fill("s1", "b", BotFill(2, "ETHUSDT", 1, 1.0, 9.0, 12)).empty
    # new ids continue after the stored ones
    assert again.exit_leg(f"{again.account_id}:m1", 1.0, 106.0, 14).exits[0].exit_id == 3
    again.add_leg("s1", LegSpec("X", 1, 1.0, 1.0), 15)
    assert again.legs()[-1].leg_id == f"{again.account_id}:m2"
    broken = [dict(r) for r in rows["legs"]]
    broken[0]["qty"] = 2.0  # but one unit was exited
    with pytest.raises(M2MError, match="open qty 2 \\+ exited 1 != initial 2"):
        StrategyBook.from_rows("acct-1", rows["strategies"], broken, rows["exits"])
    with pytest.raises(M2MError, match="exactly one default"):
        StrategyBook.from_rows("acct-1", rows["strategies"][1:], [], [])
