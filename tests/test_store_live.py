"""Live runtime tables (migration 004): write_live / read_live / load_checkpoint on DuckDB and a real
PostgreSQL database (see conftest.py)."""

from __future__ import annotations

import shutil
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pyarrow as pa
import pytest

from engine.errors import ParameterError, StoreError
from engine.store import Store, StoreValueError, default_migrations_dir, discover_migrations, open_store
from engine.store.live import LIVE_TABLES

MIGRATION = "004_live"
#: The tables of migration 004 (LIVE_TABLES also holds 005's, tested in test_store_m2m.py).
TABLES_004 = (
    "accounts",
    "strategy_instances",
    "bots",
    "live_orders",
    "live_fills",
    "live_positions",
    "strategy_signals",
    "portfolio_snapshots",
    "portfolio_events",
    "risk_rejections",
    "bot_checkpoints",
)
T0 = 1_767_225_600_000_000_000  # 2026-01-01T00:00:00Z in ns
US = 1_000  # one microsecond in ns
S = 1_000_000_000  # one second in ns


def us(seconds: float) -> int:
    """T0 + ``seconds`` as int ns, a whole microsecond."""
    return T0 + round(seconds * 1_000_000) * US


def table(name: str, rows: list[dict[str, Any]]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=LIVE_TABLES[name].schema)


def entities(account: str = "acc1") -> dict[str, pa.Table]:
    """An account with one strategy instance and one bot (``<account>-bot``)."""
    return {
        "accounts": table(
            "accounts",
            [
                {
                    "account_id": account,
                    "name": f"Account {account}",
                    "base_currency": "USDT",
                    "timezone": "Asia/Kolkata",
                    "created_at": us(0),
                }
            ],
        ),
        "strategy_instances": table(
            "strategy_instances",
            [
                {
                    "instance_id": f"{account}-inst",
                    "account_id": account,
                    "name": "sma fast",
                    "strategy_type": "sma_crossover",
                    "params": '{"fast": 12, "slow": 48}',
                    "status": "active",
                    "created_at": us(0),
                    "updated_at": us(0),
                    "is_default": False,  # migration 005's columns (their defaults)
                    "tags": "[]",
                    "target_profit": None,
                    "stop_loss": None,
                }
            ],
        ),
        "bots": table(
            "bots",
            [
                {
                    "bot_id": f"{account}-bot",
                    "account_id": account,
                    "instance_id": f"{account}-inst",
                    "name": "bot one",
                    "symbols": ["BTCUSDT", 'ETH"USDT'],
                    "timeframe": "1h",
                    "settings": '{"capital": 10000, "leverage": 2, "fee_bps": 4, "feed": "binance"}',
                    "status": "running",
                    "status_reason": None,
                    "error_count": 0,
                    "created_at": us(0),
                    "updated_at": us(1),
                }
            ],
        ),
    }


def events(account: str = "acc1", n: int = 3) -> dict[str, pa.Table]:
    """One bot's orders, fills, positions, signals and checkpoint plus the account's portfolio rows."""
    bot = f"{account}-bot"
    orders = [
        {
            "account_id": account,
            "bot_id": bot,
            "order_id": i,
            "created_ts": us(10 + i),
            "symbol": "BTCUSDT",
            "side": 1 if i % 2 == 0 else -1,
            "order_type": "limit" if i % 2 else "market",
            "qty": (0.015, 0.03, 0.045, 0.06, 0.075)[i],
            "price": 43250.5 if i % 2 else None,
            "stop_price": None,
            "reduce_only": i == 2,
            "status": "filled",
            "filled_qty": (0.015, 0.03, 0.045, 0.06, 0.075)[i],
            "fill_price": 43251.25,
            "tag": f"t{i}" if i else None,
            "reject_reason": None,
            "updated_ts": us(11 + i),
        }
        for i in range(n)
    ]
    fills = [
        {
            "account_id": account,
            "bot_id": bot,
            "fill_id": 100 + i,
            "order_id": i,
            "ts": us(11 + i),
            "symbol": "BTCUSDT",
            "side": 1 if i % 2 == 0 else -1,
            "qty": (0.015, 0.03, 0.045, 0.06, 0.075)[i],
            "price": 43251.25,
            "fee": (2.5e-05, 5e-05, 7.5e-05, 1e-04, 1.25e-04)[i],
            "liquidity": "taker" if i % 2 == 0 else None,
            "realized_pnl": (0.0, -12.25, -24.5, 3.75, 8.0)[i],
            "tag": None,
        }
        for i in range(n)
    ]
    return {
        "live_orders": table("live_orders", orders),
        "live_fills": table("live_fills", fills),
        "live_positions": table(
            "live_positions",
            [
                {
                    "account_id": account,
                    "bot_id": bot,
                    "symbol": "BTCUSDT",
                    "qty": -0.03,
                    "avg_price": 43251.25,
                    "realized_pnl": -12.25,
                    "funding": 0.375,
                    "updated_ts": us(20),
                },
                {
                    "account_id": account,
                    "bot_id": bot,
                    "symbol": "ETHUSDT",
                    "qty": 0.0,
                    "avg_price": 0.0,
                    "realized_pnl": 0.0,
                    "funding": 0.0,
                    "updated_ts": us(20),
                },
            ],
        ),
        "strategy_signals": table(
            "strategy_signals",
            [
                {
                    "account_id": account,
                    "bot_id": bot,
                    "seq": 1,
                    "ts": us(10),
                    "strategy": "sma fast",
                    "symbol": "BTCUSDT",
                    "action": "entry",
                    "side": 1,
                    "qty": 0.015,
                    "price": 43250.5,
                    "order_id": 0,
                    "detail": '{"fast": 43100.2, "slow": 42990.1, "reason": "cross up"}',
                },
                {
                    "account_id": account,
                    "bot_id": bot,
                    "seq": 2,
                    "ts": us(12),
                    "strategy": "sma fast",
                    "symbol": "",
                    "action": "error",
                    "side": None,
                    "qty": None,
                    "price": None,
                    "order_id": None,
                    "detail": '{"error": "ZeroDivisionError", "stack": "line 1\\nline 2"}',
                },
            ],
        ),
        "portfolio_snapshots": table(
            "portfolio_snapshots",
            [
                {
                    "account_id": account,
                    "ts": us(60),
                    "strategy": s,
                    "equity": 10012.5,
                    "peak": 10100.0,
                    "drawdown_pct": 0.8663366336633663,
                    "state": "normal",
                }
                for s in ("", "sma fast")
            ],
        ),
        "portfolio_events": table(
            "portfolio_events",
            [
                {
                    "account_id": account,
                    "seq": 7,
                    "ts": us(61),
                    "kind": "circuit_breaker",
                    "strategy": "",
                    "symbol": "",
                    "data": '{"action":"trip","drawdown_pct":25.1}',
                }
            ],
        ),
        "risk_rejections": table(
            "risk_rejections",
            [
                {
                    "account_id": account,
                    "seq": 1,
                    "ts": us(62),
                    "strategy": "sma fast",
                    "symbol": "BTCUSDT",
                    "side": -1,
                    "qty": 0.5,
                    "price": None,
                    "check_name": "max_positions",
                    "value": 4.0,
                    "limit_value": 3.0,
                    "message": "4 positions > 3",
                }
            ],
        ),
        "bot_checkpoints": table(
            "bot_checkpoints",
            [
                {
                    "bot_id": bot,
                    "account_id": account,
                    "watermark_ns": us(60) + 789,
                    "seq": 2,
                    "state": b'\x00\x01pickle\xff"\\',
                    "created_at": us(61),
                }
            ],
        ),
    }


def batch(account: str = "acc1") -> dict[str, pa.Table]:
    return entities(account) | events(account)


@pytest.fixture
def migrated(store: Store) -> Store:
    store.migrate()
    return store


def count(store: Store, name: str) -> int:
    return int(store._migration_conn().query(f"SELECT count(*) FROM {name}")[0][0])  # test-only peek


def counts(store: Store) -> dict[str, int]:
    return {name: count(store, name) for name in LIVE_TABLES}


# ------------------------------------------------------------------ round trip


def test_round_trip_of_every_table(migrated: Store) -> None:
    given = batch()
    assert set(given) == set(TABLES_004)
    written = migrated.write_live(given)
    assert written == {name: t.num_rows for name, t in given.items()}
    for name, want in given.items():
        got = migrated.read_live(name)
        assert got.schema == LIVE_TABLES[name].schema, name
        assert got.equals(want), f"{name}:\n{got.to_pylist()}\n!=\n{want.to_pylist()}"
    assert migrated.load_checkpoint("acc1-bot") == (us(60) + 789, 2, b'\x00\x01pickle\xff"\\')
    assert migrated.load_checkpoint("no-such-bot") is None


def test_empty_tables_and_defaults(migrated: Store) -> None:
    accounts = entities()["accounts"].drop_columns(["timezone"])  # defaults to UTC
    assert migrated.write_live({"accounts": accounts, "live_fills": table("live_fills", [])}) == {
        "accounts": 1,
        "live_fills": 0,
    }
    assert migrated.read_live("accounts")["timezone"].to_pylist() == ["UTC"]
    assert migrated.read_live("live_fills").num_rows == 0
    assert migrated.read_live("live_fills").schema == LIVE_TABLES["live_fills"].schema


# ------------------------------------------------------------------ conflict modes


def test_fills_signals_and_events_are_idempotent(migrated: Store) -> None:
    given = batch()
    migrated.write_live(given)
    before = counts(migrated)
    stored = {name: migrated.read_live(name) for name in LIVE_TABLES}

    again = migrated.write_live(given)  # a replay after a restart
    for name in ("live_fills", "strategy_signals", "portfolio_snapshots", "portfolio_events", "risk_rejections"):
        assert again[name] == 0, name
    assert counts(migrated) == before
    assert {name: migrated.read_live(name) for name in LIVE_TABLES} == stored

    # A replayed fill with different figures leaves the stored one; a duplicate inside a batch keeps the first.
    fills = given["live_fills"].to_pylist()
    replay = [dict(fills[0], price=1.0), dict(fills[0], fill_id=999, qty=1.0), dict(fills[0], fill_id=999, qty=2.0)]
    assert migrated.write_live({"live_fills": table("live_fills", replay)}) == {"live_fills": 1}
    got = migrated.read_live("live_fills", where={"fill_id": [100, 999]}).to_pylist()
    assert [(r["fill_id"], r["price"], r["qty"]) for r in got] == [(100, 43251.25, 0.015), (999, 43251.25, 1.0)]


def test_order_upsert_keeps_the_latest_state(migrated: Store) -> None:
    migrated.write_live(entities())
    order = {
        "account_id": "acc1",
        "bot_id": "acc1-bot",
        "order_id": 5,
        "created_ts": us(1),
        "symbol": "BTCUSDT",
        "side": -1,
        "order_type": "stop_limit",
        "qty": 2.0,
        "price": 99.5,
        "stop_price": 100.0,
        "reduce_only": True,
        "status": "open",
        "filled_qty": 0.0,
        "fill_price": None,
        "tag": "sl",
        "reject_reason": None,
        "updated_ts": us(1),
    }
    assert migrated.write_live({"live_orders": table("live_orders", [order])}) == {"live_orders": 1}
    filled = dict(order, status="filled", filled_qty=2.0, fill_price=99.5, updated_ts=us(2))
    assert migrated.write_live({"live_orders": table("live_orders", [filled])}) == {"live_orders": 1}
    assert migrated.read_live("live_orders").to_pylist()[0]["status"] == "filled"

    # A stale state (older updated_ts) replayed later does not overwrite the newer one.
    stale = dict(order, status="cancelled", updated_ts=us(1.5))
    assert migrated.write_live({"live_orders": table("live_orders", [stale])}) == {"live_orders": 0}
    rows = migrated.read_live("live_orders").to_pylist()
    assert len(rows) == 1 and rows[0]["status"] == "filled" and rows[0]["fill_price"] == 99.5

    # Several states of one order in one batch: the newest wins, whatever the batch order.
    states = [dict(order, order_id=6, status="cancelled", updated_ts=us(9)), dict(order, order_id=6, updated_ts=us(8))]
    assert migrated.write_live({"live_orders": table("live_orders", states)}) == {"live_orders": 1}
    assert migrated.read_live("live_orders", where={"order_id": 6})["status"].to_pylist() == ["cancelled"]


def test_checkpoint_upsert_keeps_the_latest(migrated: Store) -> None:
    migrated.write_live(entities())
    for seq in (1, 2, 3):
        cp = {
            "bot_id": "acc1-bot",
            "account_id": "acc1",
            "watermark_ns": us(seq) + 7,
            "seq": seq,
            "state": f"state-{seq}".encode(),
            "created_at": us(100 + seq),
        }
        assert migrated.write_live({"bot_checkpoints": table("bot_checkpoints", [cp])}) == {"bot_checkpoints": 1}
    assert count(migrated, "bot_checkpoints") == 1
    assert migrated.load_checkpoint("acc1-bot") == (us(3) + 7, 3, b"state-3")
    # created_at keeps the first write's value on upsert.
    assert migrated.read_live("bot_checkpoints")["created_at"].cast(pa.int64()).to_pylist() == [us(101)]
    with pytest.raises(ParameterError, match="bot_id"):
        migrated.load_checkpoint("")


def test_entity_upserts(migrated: Store) -> None:
    migrated.write_live(entities())
    bot = entities()["bots"].to_pylist()[0]
    paused = dict(
        bot,
        status="paused",
        status_reason="3 consecutive strategy errors",
        error_count=3,
        symbols=["BTCUSDT"],
        updated_at=us(5),
        created_at=us(4),
    )
    assert migrated.write_live({"bots": table("bots", [paused])}) == {"bots": 1}
    row = migrated.read_live("bots").to_pylist()[0]
    assert (row["status"], row["status_reason"], row["error_count"], row["symbols"]) == (
        "paused",
        "3 consecutive strategy errors",
        3,
        ["BTCUSDT"],
    )
    assert row["created_at"].value == us(0)  # kept from the first write


# ------------------------------------------------------------------ validation: nothing written


BAD_ROWS = [
    ("live_fills", 1, "qty", float("nan"), "row 1 is nan"),
    ("live_fills", 2, "side", 2, "row 2 is 2, must be +1 or -1"),
    ("live_fills", 1, "fill_id", None, "null value(s) in a NOT NULL column (first at row 1)"),
    ("live_fills", 0, "bot_id", None, "first at row 0"),
    ("live_fills", 2, "qty", -1.0, "row 2: must be > 0"),
    ("live_fills", 1, "price", 1e21, "beyond NUMERIC"),
    ("live_orders", 1, "status", "done", "row 1: must be one of"),
    ("live_orders", 0, "symbol", "", "row 0: must not be empty"),
    ("strategy_signals", 1, "detail", "{not json", "row 1 is not valid JSON"),
    ("strategy_signals", 0, "action", "buy", "row 0: must be one of"),
    ("accounts", 0, "timezone", "Mars/Olympus", "not an IANA time zone"),
    ("bots", 0, "symbols", [], "row 0: must hold at least one value"),
    ("bots", 0, "symbols", ["BTC", ""], "row 0: values must be non-empty strings"),
    ("bots", 0, "status", "sleeping", "must be one of"),
    ("portfolio_events", 0, "kind", "bad\x00kind", "NUL"),
]


def with_value(given: pa.Table, row: int, column: str, value: Any) -> pa.Table:
    rows = given.to_pylist()
    rows[row][column] = value
    return pa.Table.from_pylist(rows, schema=given.schema)


@pytest.mark.parametrize(("name", "row", "column", "value", "rule"), BAD_ROWS)
def test_a_bad_row_writes_nothing_in_any_table(
    migrated: Store, name: str, row: int, column: str, value: Any, rule: str
) -> None:
    migrated.write_live(batch("acc0"))  # stored before: must stay as it is
    before = counts(migrated)
    given = batch()
    given[name] = with_value(given[name], row, column, value)
    with pytest.raises(StoreValueError) as info:
        migrated.write_live(given)
    assert (info.value.table, info.value.column) == (name, column)
    assert rule in info.value.rule
    assert "nothing was saved" in str(info.value)
    assert counts(migrated) == before


def test_unknown_tables_and_columns_are_rejected(migrated: Store) -> None:
    with pytest.raises(StoreValueError, match=r"live_trades.*not a live table"):
        migrated.write_live({"live_trades": pa.table({"x": [1]})})
    fills = events()["live_fills"]
    with pytest.raises(StoreValueError, match=r"live_fills\.venue: unknown column"):
        migrated.write_live({"live_fills": fills.append_column("venue", pa.array(["x"] * fills.num_rows))})
    with pytest.raises(StoreValueError, match=r"live_fills\.fee: column is missing"):
        migrated.write_live({"live_fills": fills.drop_columns(["fee"])})
    with pytest.raises(StoreValueError, match=r"must be a pyarrow\.Table"):
        migrated.write_live({"live_fills": fills.to_pylist()})  # type: ignore[dict-item]
    assert counts(migrated) == dict.fromkeys(LIVE_TABLES, 0)


@pytest.mark.parametrize(
    ("name", "edit", "column"),
    [
        ("live_fills", {"account_id": "acc2"}, "account_id, bot_id"),  # the bot belongs to acc1
        ("live_orders", {"bot_id": "ghost"}, "account_id, bot_id"),
        ("bots", {"instance_id": "acc2-inst"}, "account_id, instance_id"),  # another account's instance
        ("portfolio_snapshots", {"account_id": "nobody"}, "account_id"),
    ],
)
def test_rows_must_reference_stored_accounts_and_bots(
    migrated: Store, name: str, edit: dict[str, Any], column: str
) -> None:
    migrated.write_live(entities("acc2"))
    before = counts(migrated)
    given = batch()
    given[name] = table(name, [dict(r, **edit) for r in given[name].to_pylist()])
    with pytest.raises(StoreValueError) as info:
        migrated.write_live(given)
    assert (info.value.table, info.value.column) == (name, column)
    assert "matches no" in info.value.rule
    assert counts(migrated) == before


def test_a_database_error_rolls_back_the_whole_batch(migrated: Store) -> None:
    migrated.write_live(entities())
    before = counts(migrated)
    given = events()
    other = dict(entities()["bots"].to_pylist()[0], bot_id="other-bot")  # same (account_id, name)
    given["bots"] = table("bots", [other])
    with pytest.raises(StoreError, match="nothing was written"):
        migrated.write_live(given)
    assert counts(migrated) == before


def test_unmigrated_store_refuses_live_io(store: Store) -> None:
    with pytest.raises(StoreError, match="tradectl db migrate"):
        store.write_live(batch())
    with pytest.raises(StoreError, match=MIGRATION):
        store.read_live("live_fills")


# ------------------------------------------------------------------ reading


def test_read_live_is_scoped_by_account(migrated: Store) -> None:
    migrated.write_live(batch("acc1"))
    migrated.write_live(batch("acc2"))
    for name in TABLES_004:
        both = migrated.read_live(name)
        one = migrated.read_live(name, account_id="acc1")
        assert set(one["account_id"].to_pylist()) == {"acc1"}, name
        assert set(both["account_id"].to_pylist()) == {"acc1", "acc2"}, name
        assert one.num_rows * 2 == both.num_rows, name
    assert migrated.read_live("live_fills", account_id="nobody").num_rows == 0
    with pytest.raises(ParameterError, match="contradicts"):
        migrated.read_live("live_fills", account_id="acc1", where={"account_id": "acc2"})


def test_read_live_filters_order_and_limit(migrated: Store) -> None:
    migrated.write_live(entities() | events(n=5))
    fills = migrated.read_live("live_fills", order_by="ts DESC", limit=2)
    assert fills["fill_id"].to_pylist() == [104, 103]
    assert migrated.read_live("live_fills", where={"side": -1})["fill_id"].to_pylist() == [101, 103]
    assert migrated.read_live("live_fills", where={"liquidity": None})["fill_id"].to_pylist() == [101, 103]
    assert migrated.read_live("live_fills", where={"fill_id": []}).num_rows == 0
    assert migrated.read_live("live_fills", where={"ts": us(12)})["fill_id"].to_pylist() == [101]
    at = datetime.fromtimestamp(us(12) / S, tz=UTC)
    assert migrated.read_live("live_fills", where={"ts": at})["fill_id"].to_pylist() == [101]
    assert migrated.read_live("live_orders", where={"reduce_only": True})["order_id"].to_pylist() == [2]
    assert migrated.read_live("live_positions", where={"qty": -0.03})["symbol"].to_pylist() == ["BTCUSDT"]
    assert migrated.read_live("live_orders", where={"status": ["open", "filled"]}, order_by="order_id desc")[
        "order_id"
    ].to_pylist() == [4, 3, 2, 1, 0]


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"where": {"fill_id; DROP TABLE live_fills": 1}}, "where.fill_id; DROP TABLE live_fills"),
        ({"where": {"nope": 1}}, "where.nope"),
        ({"where": {"fill_id": "1"}}, "where.fill_id"),
        ({"where": {"ts": 1.5}}, "where.ts"),
        ({"where": {"fill_id": True}}, "where.fill_id"),
        ({"order_by": "ts; DROP TABLE live_fills"}, "order_by"),
        ({"order_by": "price sideways"}, "order_by"),
        ({"order_by": "nope"}, "order_by"),
        ({"limit": 0}, "limit"),
        ({"limit": True}, "limit"),
        ({"account_id": ""}, "account_id"),
    ],
)
def test_read_live_rejects_bad_arguments(migrated: Store, kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(ParameterError) as info:
        migrated.read_live("live_fills", **kwargs)
    assert info.value.field == field
    assert "live_fills" in migrated.tables()


def test_read_live_rejects_unknown_tables_and_opaque_columns(migrated: Store) -> None:
    with pytest.raises(ParameterError, match="must be one of"):
        migrated.read_live("backtest_runs")
    for name, column in (("bots", "symbols"), ("bots", "settings"), ("bot_checkpoints", "state")):
        with pytest.raises(ParameterError) as info:
            migrated.read_live(name, where={column: "x"})
        assert info.value.field == f"where.{column}"


# ------------------------------------------------------------------ timestamps


def test_nanosecond_timestamps_are_floored_to_the_microsecond(migrated: Store) -> None:
    migrated.write_live(entities())
    fills = events()["live_fills"].to_pylist()
    stamps = [T0 + 123_456_789, T0 + 999, T0 - 1]  # the last is before T0: floors down, not toward zero
    rows = [dict(fills[i], ts=stamps[i]) for i in range(3)]
    assert migrated.write_live({"live_fills": table("live_fills", rows)}) == {"live_fills": 3}
    got = migrated.read_live("live_fills")["ts"].cast(pa.int64()).to_pylist()
    assert got == [T0 + 123_456_000, T0, T0 - 1_000]
    assert migrated.read_live("live_fills", where={"ts": T0 + 123_456_789})["fill_id"].to_pylist() == [100]
    # int64 ns columns are accepted as timestamps too.
    raw = table("live_fills", [dict(fills[0], fill_id=7)]).set_column(4, "ts", pa.array([T0 + 1_500], pa.int64()))
    migrated.write_live({"live_fills": raw})
    assert migrated.read_live("live_fills", where={"fill_id": 7})["ts"].cast(pa.int64()).to_pylist() == [T0 + 1_000]


# ------------------------------------------------------------------ speed


def test_write_100k_fills_in_one_call(migrated: Store) -> None:
    migrated.write_live(entities())
    n = 100_000
    rng = np.random.default_rng(7)
    fills = pa.table(
        {
            "account_id": pa.array(["acc1"] * n),
            "bot_id": pa.array(["acc1-bot"] * n),
            "fill_id": np.arange(n, dtype=np.int64),
            "order_id": np.arange(n, dtype=np.int64) // 2,
            "ts": pa.array(T0 + np.arange(n, dtype=np.int64) * 1_000_001, pa.timestamp("ns", tz="UTC")),
            "symbol": pa.array(["BTCUSDT"] * n),
            "side": pa.array(np.where(rng.random(n) > 0.5, 1, -1).astype(np.int8)),
            "qty": np.round(rng.random(n) * 2 + 0.001, 3),
            "price": np.round(40_000 + rng.random(n) * 10_000, 1),
            "fee": np.round(rng.random(n), 8),
            "liquidity": pa.array(["taker"] * n),
            "realized_pnl": np.round(rng.normal(size=n) * 100, 8),
            "tag": pa.array([None] * n, pa.string()),
        }
    )
    start = time.perf_counter()
    assert migrated.write_live({"live_fills": fills}) == {"live_fills": n}
    elapsed = time.perf_counter() - start
    print(f"\n{migrated.dialect}: write_live of {n} fills took {elapsed:.3f} s")
    limit = 2.0 if migrated.dialect == "duckdb" else 10.0  # measured ~0.2 s / ~0.8 s here; generous for CI
    assert elapsed < limit
    assert migrated.write_live({"live_fills": fills}) == {"live_fills": 0}
    back = migrated.read_live("live_fills")
    assert back.num_rows == n
    np.testing.assert_array_equal(back["price"].to_numpy(), fills["price"].to_numpy())
    np.testing.assert_array_equal(back["realized_pnl"].to_numpy(), fills["realized_pnl"].to_numpy())


# ------------------------------------------------------------------ migration 004


def test_migration_004_upgrades_a_store_at_003(store_url: str, tmp_path: Path) -> None:
    old = tmp_path / "migrations"
    for dialect in ("duckdb", "postgres"):
        (old / dialect).mkdir(parents=True)
        for path in sorted((default_migrations_dir() / dialect).glob("00[1-3]_*.sql")):
            shutil.copy(path, old / dialect / path.name)
    with open_store(store_url, migrate=True, migrations_dir=old) as before:
        assert "003_portfolio_backtests" in [s.name for s in before.status() if s.applied]
        assert not set(LIVE_TABLES) & set(before.tables())
    with open_store(store_url) as s:
        later = [f.name for f in discover_migrations(s.dialect) if f.number >= 4]  # 004 and after
        assert later[0] == MIGRATION
        assert [st.name for st in s.status() if not st.applied] == later
        with pytest.raises(StoreError, match=MIGRATION):
            s.write_live(batch())
        assert s.migrate() == later
        assert set(LIVE_TABLES) <= set(s.tables())
        s.write_live(batch())
        assert s.load_checkpoint("acc1-bot") is not None
        assert s.list_backtests() == []  # the older tables still work


def test_pg_snapshots_follow_timescaledb_availability(pg_schema_url: str) -> None:
    with open_store(pg_schema_url, migrate=True) as store:
        store.write_live(batch())
        assert store.read_live("portfolio_snapshots").num_rows == 2
    with psycopg.connect(pg_schema_url, autocommit=True) as conn:
        available = conn.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'").fetchone()
        ts_index = conn.execute(
            "SELECT 1 FROM pg_indexes WHERE schemaname = current_schema() AND indexname = 'portfolio_snapshots_ts_idx'"
        ).fetchone()
        kind = conn.execute("SELECT relkind FROM pg_class WHERE oid = 'portfolio_snapshots'::regclass").fetchone()
        json_types = conn.execute(
            "SELECT DISTINCT data_type FROM information_schema.columns WHERE table_schema = current_schema() "
            "AND column_name IN ('params', 'settings', 'detail', 'data') AND table_name IN "
            "('strategy_instances', 'bots', 'strategy_signals', 'portfolio_events')"
        ).fetchall()
    assert kind == ("r",)
    assert json_types == [("json",)]  # not jsonb: the text written is the text read
    if available is None:
        assert ts_index is not None  # the plain-table fallback indexes ts
    else:  # pragma: no cover - TimescaleDB is not installed on this machine
        pass
