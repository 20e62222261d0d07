"""Strategy legs, exits, M2M candles, the 5-minute rollup, daily rows and the P&L export (migration
005_m2m) on DuckDB and a real PostgreSQL database (see conftest.py); the TimescaleDB branch of the
migration with its detection faked."""

from __future__ import annotations

import contextlib
import logging
import math
import shutil
from collections.abc import Iterator, Sequence
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from engine.errors import ParameterError, StoreError
from engine.store import Store, StoreValueError, default_migrations_dir, discover_migrations, open_store
from engine.store import migrations as migrations_module
from engine.store.live import LIVE_TABLES
from engine.store.m2m import (
    CANDLE_SCHEMA,
    DAILY_SCHEMA,
    EXIT_SCHEMA,
    LEG_SCHEMA,
    NotFoundError,
    default_strategy,
    export_pnl,
    get_instance,
    pnl_report,
    read_candles,
    read_daily,
    read_exits,
    read_legs,
    rollup_kind,
)
from engine.store.migrations import (
    M2M_5M_TIMESCALEDB_SELECT,
    m2m_timescaledb_statements,
    m2m_timescaledb_step,
)

MIGRATION = "005_m2m"
M2M_TABLES = ("strategy_legs", "strategy_leg_exits", "strategy_m2m_candles", "strategy_performance_daily")
T0 = 1_767_225_600_000_000_000  # 2026-01-01T00:00:00Z in ns
MIN = 60_000_000_000  # one minute in ns
S = 1_000_000_000


def table(name: str, rows: list[dict[str, Any]]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=LIVE_TABLES[name].schema)


def ns(value: Any) -> int:
    """A timestamp read back (pandas Timestamp or datetime) as int ns."""
    return int(pa.scalar(value, pa.timestamp("ns", tz="UTC")).value)


def instance(account: str, name: str, **kw: Any) -> dict[str, Any]:
    row = {
        "instance_id": f"{account}/{name}",
        "account_id": account,
        "name": name,
        "strategy_type": "manual",
        "params": "{}",
        "status": "active",
        "created_at": T0,
        "updated_at": T0,
        "is_default": False,
        "tags": "[]",
        "target_profit": None,
        "stop_loss": None,
    }
    return row | kw


def entities(account: str = "acc1", tz: str = "Asia/Kolkata") -> dict[str, pa.Table]:
    """An account with its default strategy, an iron condor strategy and a bot on it."""
    return {
        "accounts": table(
            "accounts",
            [{"account_id": account, "name": account, "base_currency": "INR", "timezone": tz, "created_at": T0}],
        ),
        "strategy_instances": table(
            "strategy_instances",
            [
                instance(account, "Default Strategy", is_default=True),
                instance(account, "condor", tags='["iron_condor", "weekly"]', target_profit=5000.0, stop_loss=2500.0),
            ],
        ),
        "bots": table(
            "bots",
            [
                {
                    "bot_id": f"{account}-bot",
                    "account_id": account,
                    "instance_id": f"{account}/condor",
                    "name": "bot",
                    "symbols": ["NIFTY"],
                    "timeframe": "1m",
                    "settings": "{}",
                    "status": "running",
                    "status_reason": None,
                    "error_count": 0,
                    "created_at": T0,
                    "updated_at": T0,
                }
            ],
        ),
    }


def leg(account: str, leg_id: str, **kw: Any) -> dict[str, Any]:
    row = {
        "account_id": account,
        "instance_id": f"{account}/condor",
        "leg_id": leg_id,
        "symbol": "NIFTY25N0724500CE",
        "exchange": "NFO",
        "segment": "option",
        "side": -1,
        "qty": 75.0,
        "initial_qty": 75.0,
        "lot_size": 75.0,
        "multiplier": 1.0,
        "entry_price": 100.5,
        "entry_ts": T0 + 5 * MIN,
        "option_type": "C",
        "strike": 24500.0,
        "expiry_ts": T0 + 7 * 86_400 * S,
        "underlying": "NIFTY",
        "implied_vol": 0.12,
        "source": "manual",
        "bot_id": None,
        "fill_id": None,
        "notes": "short call",
        "status": "open",
        "realized_pnl": 0.0,
        "updated_ts": T0 + 5 * MIN,
    }
    return row | kw


def legs(account: str = "acc1") -> list[dict[str, Any]]:
    """A short call (open), a long put partly exited, a bot's perp leg and a closed future leg."""
    inst = f"{account}/condor"
    return [
        leg(account, f"{account}-L1"),
        leg(
            account,
            f"{account}-L2",
            symbol="NIFTY25N0724000PE",
            side=1,
            qty=50.0,
            initial_qty=150.0,
            option_type="P",
            strike=24000.0,
            entry_price=80.0,
            realized_pnl=2500.0,
            notes=None,
            updated_ts=T0 + 30 * MIN,
        ),
        leg(
            account,
            f"{account}-L3",
            symbol="BTCUSDT",
            exchange="",
            segment="perp",
            side=1,
            qty=0.5,
            initial_qty=0.5,
            lot_size=0.0,
            entry_price=43000.0,
            option_type=None,
            strike=None,
            expiry_ts=None,
            underlying=None,
            implied_vol=None,
            source="bot",
            bot_id=f"{account}-bot",
            fill_id=7,
            notes=None,
        ),
        leg(
            account,
            f"{account}-L4",
            instance_id=inst,
            symbol="NIFTY25NOVFUT",
            segment="future",
            qty=0.0,
            initial_qty=75.0,
            entry_price=24400.0,
            option_type=None,
            strike=None,
            expiry_ts=None,
            underlying=None,
            implied_vol=None,
            status="closed",
            realized_pnl=-3750.0,
            updated_ts=T0 + 20 * MIN,
        ),
    ]


def exits(account: str = "acc1") -> list[dict[str, Any]]:
    inst = f"{account}/condor"
    base = {"account_id": account, "instance_id": inst, "bot_id": None, "fill_id": None}
    return [
        base | {"leg_id": f"{account}-L2", "exit_id": 1, "ts": T0 + 15 * MIN, "qty": 50.0, "price": 110.0,
                "realized_pnl": 1500.0},
        base | {"leg_id": f"{account}-L4", "exit_id": 2, "ts": T0 + 20 * MIN, "qty": 75.0, "price": 24350.0,
                "realized_pnl": -3750.0},
        base | {"leg_id": f"{account}-L2", "exit_id": 3, "ts": T0 + 30 * MIN, "qty": 50.0, "price": 100.0,
                "realized_pnl": 1000.0, "bot_id": f"{account}-bot", "fill_id": 9},
    ]  # fmt: skip


def candles(account: str, instance_id: str, minutes: Sequence[int], seed: int = 1) -> list[dict[str, Any]]:
    """Random but valid 1-minute candles at T0 + minute for each of ``minutes``."""
    rng = np.random.default_rng(seed)
    rows = []
    for m in minutes:
        o, c = (float(round(x, 2)) for x in rng.normal(0, 1000, 2))
        hi = max(o, c) + float(round(rng.random() * 100, 2))
        lo = min(o, c) - float(round(rng.random() * 100, 2))
        realized = float(round(rng.normal(0, 500), 2))
        rows.append(
            {
                "account_id": account,
                "instance_id": instance_id,
                "ts": T0 + m * MIN,
                "open": o,
                "high": hi,
                "low": lo,
                "close": c,
                "realized_pnl": realized,
                "total_pnl": realized + c,
                "updates": int(rng.integers(0, 50)),
                "model_mark": bool(rng.random() < 0.2),
            }
        )
    return rows


def daily(account: str, day: date, updated: int, **kw: Any) -> dict[str, Any]:
    row = {
        "account_id": account,
        "instance_id": f"{account}/condor",
        "day": day,
        "realized_pnl": 1500.0,
        "unrealized_pnl": -250.5,
        "total_pnl": 1249.5,
        "max_m2m": 300.0,
        "min_m2m": -900.25,
        "trades": 4,
        "model_mark": False,
        "updated_at": updated,
    }
    return row | kw


@pytest.fixture
def migrated(store: Store) -> Store:
    store.migrate()
    return store


def count(store: Store, name: str) -> int:
    return int(store._migration_conn().query(f"SELECT count(*) FROM {name}")[0][0])  # test-only peek


def counts(store: Store) -> dict[str, int]:
    return {name: count(store, name) for name in LIVE_TABLES}


def full(account: str = "acc1") -> dict[str, pa.Table]:
    """Entities, legs, exits, 1-minute candles (minutes 0-11) and two daily rows of one account."""
    return entities(account) | {
        "strategy_legs": table("strategy_legs", legs(account)),
        "strategy_leg_exits": table("strategy_leg_exits", exits(account)),
        "strategy_m2m_candles": table("strategy_m2m_candles", candles(account, f"{account}/condor", range(12))),
        "strategy_performance_daily": table(
            "strategy_performance_daily",
            [daily(account, date(2026, 1, 1), T0), daily(account, date(2026, 1, 2), T0, trades=0)],
        ),
    }


# ------------------------------------------------------------------ round trips


def test_round_trip_of_the_m2m_tables(migrated: Store) -> None:
    given = full()
    written = migrated.write_live(given)
    assert written == {name: t.num_rows for name, t in given.items()}
    for name in ("strategy_instances", *M2M_TABLES):
        got = migrated.read_live(name, account_id="acc1", order_by="ts" if name == "strategy_leg_exits" else None)
        assert got.schema == LIVE_TABLES[name].schema, name
        assert got.equals(given[name]), f"{name}:\n{got.to_pylist()}\n!=\n{given[name].to_pylist()}"

    inst = "acc1/condor"
    assert get_instance(migrated, "acc1", inst)["tags"] == '["iron_condor", "weekly"]'
    assert default_strategy(migrated, "acc1")["instance_id"] == "acc1/Default Strategy"  # type: ignore[index]
    assert default_strategy(migrated, "nobody") is None

    all_legs = read_legs(migrated, "acc1", inst)
    assert all_legs.schema == LEG_SCHEMA
    assert all_legs["leg_id"].to_pylist() == ["acc1-L1", "acc1-L2", "acc1-L3", "acc1-L4"]  # by entry_ts, leg_id
    assert read_legs(migrated, "acc1", inst, open_only=True)["leg_id"].to_pylist() == ["acc1-L1", "acc1-L2", "acc1-L3"]
    assert read_legs(migrated, "acc1", "acc1/Default Strategy").num_rows == 0

    ex = read_exits(migrated, "acc1", inst)
    assert ex.schema == EXIT_SCHEMA
    assert ex["exit_id"].to_pylist() == [1, 2, 3]
    assert read_exits(migrated, "acc1", inst, leg_id="acc1-L2")["exit_id"].to_pylist() == [1, 3]
    assert read_exits(migrated, "acc1", inst, start=T0 + 20 * MIN, end=T0 + 30 * MIN)["exit_id"].to_pylist() == [2]

    one = read_candles(migrated, "acc1", inst)
    assert one.schema == CANDLE_SCHEMA
    assert one.equals(given["strategy_m2m_candles"])
    window = read_candles(migrated, "acc1", inst, "1m", T0 + 3 * MIN, T0 + 7 * MIN)
    assert [ns(t) for t in window["ts"].to_pylist()] == [T0 + m * MIN for m in (3, 4, 5, 6)]
    # ns bounds between stored microseconds: ts >= start / ts < end hold on the exact ns values
    assert read_candles(migrated, "acc1", inst, "1m", T0 + 3 * MIN + 1, T0 + 5 * MIN + 1).num_rows == 2
    assert read_candles(migrated, "acc1", inst, "1m", T0, T0).num_rows == 0

    days = read_daily(migrated, "acc1", inst)
    assert days.schema == DAILY_SCHEMA
    assert days["day"].to_pylist() == [date(2026, 1, 1), date(2026, 1, 2)]
    assert read_daily(migrated, "acc1", inst, first_day=date(2026, 1, 2))["trades"].to_pylist() == [0]
    assert read_daily(migrated, "acc1", inst, last_day=date(2026, 1, 1))["trades"].to_pylist() == [4]
    assert migrated.read_live("strategy_performance_daily", where={"day": date(2026, 1, 2)}).num_rows == 1


def test_instance_columns_of_005_have_defaults_and_survive_older_writers(migrated: Store) -> None:
    migrated.write_live(entities())
    old = instance("acc1", "sma").copy()
    for column in ("is_default", "tags", "target_profit", "stop_loss"):
        del old[column]
    older = pa.Table.from_pylist([old])  # a writer that predates migration 005: the columns left out
    assert migrated.write_live({"strategy_instances": older}) == {"strategy_instances": 1}
    row = get_instance(migrated, "acc1", "acc1/sma")
    assert (row["is_default"], row["tags"], row["target_profit"], row["stop_loss"]) == (False, "[]", None, None)

    # A writer that builds rows from the spec's schema without the new keys (nulls in every new column):
    # an upsert keeps the stored is_default and tags (target_profit / stop_loss are nullable: cleared).
    stored = get_instance(migrated, "acc1", "acc1/condor")
    update = {k: v for k, v in stored.items() if k not in ("is_default", "tags", "target_profit", "stop_loss")}
    update |= {"params": '{"width": 200}', "updated_at": T0 + S}
    migrated.write_live({"strategy_instances": table("strategy_instances", [update])})
    row = get_instance(migrated, "acc1", "acc1/condor")
    assert (row["params"], row["tags"], row["is_default"]) == ('{"width": 200}', '["iron_condor", "weekly"]', False)
    assert (row["target_profit"], row["stop_loss"]) == (None, None)
    default = get_instance(migrated, "acc1", "acc1/Default Strategy")
    migrated.write_live(
        {"strategy_instances": table("strategy_instances", [default | {"is_default": None, "updated_at": T0 + S}])}
    )
    assert get_instance(migrated, "acc1", "acc1/Default Strategy")["is_default"] is True


# ------------------------------------------------------------------ the default strategy


def test_at_most_one_default_strategy_per_account(migrated: Store) -> None:
    migrated.write_live(entities("acc1"))
    migrated.write_live(entities("acc2"))  # one default in each account: fine
    before = counts(migrated)

    second = instance("acc1", "other", is_default=True)
    with pytest.raises(StoreValueError) as info:
        migrated.write_live({"strategy_instances": table("strategy_instances", [second])})
    assert (info.value.table, info.value.column) == ("strategy_instances", "is_default")
    assert "at most one default strategy" in info.value.rule and "acc1" in info.value.rule
    assert counts(migrated) == before

    # Two new defaults in one batch (an account without one yet) are refused as well.
    fresh = entities("acc3")
    fresh["strategy_instances"] = table(
        "strategy_instances", [instance("acc3", "a", is_default=True), instance("acc3", "b", is_default=True)]
    )
    with pytest.raises(StoreValueError, match="at most one default"):
        migrated.write_live(fresh)
    assert counts(migrated) == before

    # Moving the default to another instance in one batch (both rows newer) is allowed.
    old = get_instance(migrated, "acc1", "acc1/Default Strategy") | {"is_default": False, "updated_at": T0 + S}
    new = instance("acc1", "manual two", is_default=True, updated_at=T0 + S)
    migrated.write_live({"strategy_instances": table("strategy_instances", [new, old])})
    assert default_strategy(migrated, "acc1")["instance_id"] == "acc1/manual two"  # type: ignore[index]
    assert default_strategy(migrated, "acc2")["instance_id"] == "acc2/Default Strategy"  # type: ignore[index]


@pytest.mark.parametrize(
    ("edit", "column", "rule"),
    [
        ({"strategy_type": "sma_crossover"}, "strategy_type", "must be 'manual' for the default strategy"),
        ({"status": "archived"}, "status", "the default strategy cannot be archived"),
    ],
)
def test_the_default_strategy_is_an_active_manual_one(
    migrated: Store, edit: dict[str, Any], column: str, rule: str
) -> None:
    migrated.write_live(entities())
    before = counts(migrated)
    row = get_instance(migrated, "acc1", "acc1/Default Strategy") | edit | {"updated_at": T0 + S}
    with pytest.raises(StoreValueError) as info:
        migrated.write_live({"strategy_instances": table("strategy_instances", [row])})
    assert (info.value.column, rule in info.value.rule) == (column, True)
    # Leaving is_default null keeps the stored flag: the rule is then checked on the stored rows.
    with pytest.raises(StoreValueError) as info:
        migrated.write_live({"strategy_instances": table("strategy_instances", [row | {"is_default": None}])})
    assert info.value.column == "is_default" and "is an active 'manual' strategy" in info.value.rule
    assert counts(migrated) == before


def test_pg_one_default_constraint_backs_the_check(pg_schema_url: str) -> None:
    with open_store(pg_schema_url, migrate=True) as store:
        store.write_live(entities())
    with psycopg.connect(pg_schema_url, autocommit=True) as conn:  # a writer bypassing write_live
        with pytest.raises(psycopg.errors.ExclusionViolation, match="strategy_instances_one_default"):
            conn.execute(
                "INSERT INTO strategy_instances (instance_id, account_id, name, strategy_type, params, status, "
                "created_at, updated_at, is_default) VALUES ('x', 'acc1', 'x', 'manual', '{}', 'active', now(), "
                "now(), TRUE)"
            )
        with pytest.raises(psycopg.errors.CheckViolation, match="default_is_manual"):
            conn.execute("UPDATE strategy_instances SET status = 'archived' WHERE is_default")


# ------------------------------------------------------------------ candles and the 5-minute rollup


def test_candles_are_insert_or_ignore(migrated: Store) -> None:
    given = full()
    migrated.write_live(given)
    stored = read_candles(migrated, "acc1", "acc1/condor")
    again = migrated.write_live({"strategy_m2m_candles": given["strategy_m2m_candles"]})
    assert again == {"strategy_m2m_candles": 0}
    changed = [r | {"close": r["low"], "updates": 999} for r in given["strategy_m2m_candles"].to_pylist()]
    assert migrated.write_live({"strategy_m2m_candles": table("strategy_m2m_candles", changed)}) == {
        "strategy_m2m_candles": 0
    }
    assert read_candles(migrated, "acc1", "acc1/condor").equals(stored)
    assert count(migrated, "strategy_m2m_candles") == 12
    # Duplicates inside one batch: the first row of the key is kept.
    new = candles("acc1", "acc1/condor", [20, 20], seed=5)
    assert migrated.write_live({"strategy_m2m_candles": table("strategy_m2m_candles", new)}) == {
        "strategy_m2m_candles": 1
    }
    got = read_candles(migrated, "acc1", "acc1/condor", start=T0 + 20 * MIN)
    assert got.to_pylist()[0]["open"] == new[0]["open"]


def rollup(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The 5-minute candles of 1-minute ``rows``, computed independently in Python."""
    buckets: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for r in sorted(rows, key=lambda r: r["ts"]):
        buckets.setdefault((r["instance_id"], r["ts"] - r["ts"] % (5 * MIN)), []).append(r)
    out = []
    for (inst, start), group in sorted(buckets.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        out.append(
            {
                "account_id": group[0]["account_id"],
                "instance_id": inst,
                "ts": start,
                "open": group[0]["open"],
                "high": max(r["high"] for r in group),
                "low": min(r["low"] for r in group),
                "close": group[-1]["close"],
                "realized_pnl": group[-1]["realized_pnl"],
                "total_pnl": group[-1]["total_pnl"],
                "updates": sum(r["updates"] for r in group),
                "model_mark": any(r["model_mark"] for r in group),
            }
        )
    return out


def test_5m_rollup_matches_an_independent_recomputation(migrated: Store) -> None:
    migrated.write_live(entities("acc1"))
    migrated.write_live(entities("acc2"))
    minutes = [0, 1, 2, 4, 5, 9, 10, 11, 12, 13, 14, 17, 29, 30, 61, 62, 63, 64, 65, 300]  # gaps, lone minutes
    condor = candles("acc1", "acc1/condor", minutes, seed=11)
    default = candles("acc1", "acc1/Default Strategy", minutes[::2], seed=12)
    other = candles("acc2", "acc2/condor", minutes, seed=13)  # another account's, same minutes
    shuffled = [condor[i] for i in np.random.default_rng(3).permutation(len(condor))]  # insertion order
    migrated.write_live({"strategy_m2m_candles": table("strategy_m2m_candles", shuffled + default + other)})

    def as_rows(t: pa.Table) -> list[dict[str, Any]]:
        return [r | {"ts": ns(r["ts"])} for r in t.to_pylist()]

    for acc, inst, rows in (("acc1", "acc1/condor", condor), ("acc1", "acc1/Default Strategy", default)):
        got = read_candles(migrated, acc, inst, "5m")
        assert got.schema == CANDLE_SCHEMA
        assert as_rows(got) == rollup(rows), inst
    # A window selects buckets by their start; a bound inside a bucket excludes / includes it whole.
    got = read_candles(migrated, "acc1", "acc1/condor", "5m", T0 + 5 * MIN, T0 + 61 * MIN)
    assert [ns(t) for t in got["ts"].to_pylist()] == [T0 + m * MIN for m in (5, 10, 15, 25, 30, 60)]
    got = read_candles(migrated, "acc1", "acc1/condor", "5m", T0 + 6 * MIN, T0 + 60 * MIN)
    assert [ns(t) for t in got["ts"].to_pylist()] == [T0 + m * MIN for m in (10, 15, 25, 30)]
    assert rollup_kind(migrated) == "view"


# ------------------------------------------------------------------ daily rows


def test_daily_rows_upsert_and_ignore_stale_states(migrated: Store) -> None:
    migrated.write_live(entities())
    day = date(2026, 1, 1)
    first = daily("acc1", day, T0 + 10 * S, total_pnl=100.0)
    assert migrated.write_live({"strategy_performance_daily": table("strategy_performance_daily", [first])}) == {
        "strategy_performance_daily": 1
    }
    newer = first | {"total_pnl": 250.0, "trades": 7, "model_mark": True, "updated_at": T0 + 20 * S}
    stale = first | {"total_pnl": -1.0, "updated_at": T0 + 15 * S}
    migrated.write_live({"strategy_performance_daily": table("strategy_performance_daily", [newer])})
    assert migrated.write_live({"strategy_performance_daily": table("strategy_performance_daily", [stale])}) == {
        "strategy_performance_daily": 0
    }
    rows = read_daily(migrated, "acc1", "acc1/condor").to_pylist()
    assert len(rows) == 1
    assert (rows[0]["total_pnl"], rows[0]["trades"], rows[0]["model_mark"]) == (250.0, 7, True)
    assert ns(rows[0]["updated_at"]) == T0 + 20 * S
    # several states of one day in a batch: the newest wins
    states = [
        newer | {"total_pnl": 9.0, "updated_at": T0 + 40 * S},
        newer | {"total_pnl": 8.0, "updated_at": T0 + 30 * S},
    ]
    migrated.write_live({"strategy_performance_daily": table("strategy_performance_daily", states)})
    assert read_daily(migrated, "acc1", "acc1/condor")["total_pnl"].to_pylist() == [9.0]


# ------------------------------------------------------------------ account isolation


READERS = [
    lambda s, acc, inst: get_instance(s, acc, inst),
    lambda s, acc, inst: read_candles(s, acc, inst),
    lambda s, acc, inst: read_candles(s, acc, inst, "5m"),
    lambda s, acc, inst: read_daily(s, acc, inst),
    lambda s, acc, inst: read_legs(s, acc, inst),
    lambda s, acc, inst: read_exits(s, acc, inst),
    lambda s, acc, inst: pnl_report(s, acc, inst),
]


@pytest.mark.parametrize("reader", READERS)
def test_another_accounts_instance_is_not_found(migrated: Store, reader: Any) -> None:
    migrated.write_live(full("acc1"))
    migrated.write_live(entities("acc2"))
    assert reader(migrated, "acc1", "acc1/condor") is not None
    with pytest.raises(NotFoundError) as other:
        reader(migrated, "acc2", "acc1/condor")
    with pytest.raises(NotFoundError) as unknown:
        reader(migrated, "acc2", "acc2/nope")
    assert str(other.value) == "no strategy instance 'acc1/condor' in account 'acc2'"
    assert str(unknown.value) == "no strategy instance 'acc2/nope' in account 'acc2'"
    assert isinstance(other.value, StoreError)


def test_reads_never_return_another_accounts_rows(migrated: Store) -> None:
    migrated.write_live(full("acc1"))
    migrated.write_live(full("acc2"))
    for reader in READERS[1:-1]:
        got = reader(migrated, "acc1", "acc1/condor")
        assert set(got["account_id"].to_pylist()) <= {"acc1"}
    assert read_exits(migrated, "acc1", "acc1/condor").num_rows == 3
    with pytest.raises(NotFoundError, match="no leg 'acc2-L2' in account 'acc1'"):
        read_exits(migrated, "acc1", "acc1/condor", leg_id="acc2-L2")


@pytest.mark.parametrize(
    ("name", "edit", "column"),
    [
        ("strategy_legs", {"instance_id": "acc2/condor"}, "account_id, instance_id"),  # another account's
        ("strategy_legs", {"bot_id": "acc2-bot", "source": "bot"}, "account_id, bot_id"),
        ("strategy_leg_exits", {"leg_id": "acc2-L1"}, "account_id, instance_id, leg_id"),
        ("strategy_leg_exits", {"bot_id": "ghost"}, "account_id, bot_id"),
        ("strategy_m2m_candles", {"instance_id": "acc1/ghost"}, "account_id, instance_id"),
        ("strategy_performance_daily", {"account_id": "acc2"}, "account_id, instance_id"),
    ],
)
def test_rows_must_reference_the_accounts_own_instances_legs_and_bots(
    migrated: Store, name: str, edit: dict[str, Any], column: str
) -> None:
    migrated.write_live(full("acc2"))
    before = counts(migrated)
    given = full("acc1")
    given[name] = table(name, [r | edit for r in given[name].to_pylist()])
    with pytest.raises(StoreValueError) as info:
        migrated.write_live(given)
    assert (info.value.table, info.value.column) == (name, column)
    assert "matches no" in info.value.rule
    assert counts(migrated) == before


@pytest.mark.parametrize(
    ("name", "edit", "column"),
    [
        ("strategy_legs", {"account_id": "acc2", "instance_id": "acc2/condor"}, "account_id"),  # steal acc1's leg
        ("strategy_legs", {"instance_id": "acc1/Default Strategy"}, "instance_id"),  # move it to another strategy
        ("strategy_instances", {"account_id": "acc2"}, "account_id"),
    ],
)
def test_an_upsert_cannot_move_a_row_to_another_owner(
    migrated: Store, name: str, edit: dict[str, Any], column: str
) -> None:
    migrated.write_live(full("acc1"))
    migrated.write_live(entities("acc2"))
    before = counts(migrated)
    stored = migrated.read_live(name, account_id="acc1").to_pylist()[-1]
    newer = (
        {"updated_ts": T0 + 3600 * S} if name == "strategy_legs" else {"updated_at": T0 + 3600 * S, "is_default": False}
    )
    with pytest.raises(StoreValueError) as info:
        migrated.write_live({name: table(name, [stored | edit | newer])})
    assert (info.value.table, info.value.column) == (name, column)
    assert "is stored with another" in info.value.rule and "cannot change" in info.value.rule
    assert counts(migrated) == before
    assert migrated.read_live(name, account_id="acc1").to_pylist()[-1] == stored


# ------------------------------------------------------------------ bad input: named, nothing written


BAD = [
    ("strategy_m2m_candles", 3, {"high": -1e6}, "high", "row 3: must be >= low"),
    ("strategy_m2m_candles", 1, {"open": 1e7, "high": 1e7 - 1}, "open", "row 1: must be between low and high"),
    ("strategy_m2m_candles", 2, {"close": -1e7}, "close", "row 2: must be between low and high"),
    ("strategy_m2m_candles", 4, {"ts": T0 + 4 * MIN + S}, "ts", "row 4: must be a minute start"),
    ("strategy_m2m_candles", 0, {"updates": -1}, "updates", "row 0: must be >= 0"),
    ("strategy_m2m_candles", 5, {"total_pnl": math.inf}, "total_pnl", "row 5 is inf"),
    ("strategy_legs", 1, {"side": 2}, "side", "row 1 is 2, must be +1 or -1"),
    ("strategy_legs", 0, {"segment": "swap"}, "segment", "row 0: must be one of"),
    ("strategy_legs", 2, {"strike": 100.0}, "strike", "row 2: must be null unless segment is 'option'"),
    ("strategy_legs", 3, {"expiry_ts": T0}, "expiry_ts", "row 3: must be null unless segment is 'option'"),
    ("strategy_legs", 0, {"option_type": "X"}, "option_type", "row 0: must be one of"),
    ("strategy_legs", 3, {"qty": 5.0}, "qty", "row 3: must be 0 once the leg is closed or removed"),
    ("strategy_legs", 0, {"qty": 0.0}, "qty", "row 0: must be > 0 while the leg is open"),
    ("strategy_legs", 1, {"qty": 151.0}, "qty", "row 1: must be <= initial_qty"),
    ("strategy_legs", 0, {"initial_qty": 0.0, "qty": 0.0, "status": "closed"}, "initial_qty", "row 0: must be > 0"),
    ("strategy_legs", 2, {"bot_id": None}, "bot_id", "row 2: required when source is 'bot'"),
    ("strategy_legs", 0, {"bot_id": "acc1-bot"}, "bot_id", "row 0: required when source is 'bot' and null"),
    ("strategy_legs", 0, {"multiplier": 0.0}, "multiplier", "row 0: must be > 0"),
    ("strategy_legs", 1, {"status": "gone"}, "status", "row 1: must be one of"),
    ("strategy_legs", 0, {"leg_id": ""}, "leg_id", "row 0: must not be empty"),
    ("strategy_leg_exits", 1, {"qty": 0.0}, "qty", "row 1: must be > 0"),
    ("strategy_leg_exits", 0, {"price": -1.0}, "price", "row 0: must be >= 0"),
    ("strategy_performance_daily", 1, {"min_m2m": 301.0}, "min_m2m", "row 1: must be <= max_m2m"),
    ("strategy_performance_daily", 0, {"trades": -2}, "trades", "row 0: must be >= 0"),
    ("strategy_performance_daily", 0, {"day": None}, "day", "NOT NULL"),
    ("strategy_instances", 1, {"tags": '{"a": 1}'}, "tags", "row 1: must be a JSON list of non-empty strings"),
    ("strategy_instances", 1, {"tags": '["ok", ""]'}, "tags", "row 1: must be a JSON list"),
    ("strategy_instances", 1, {"tags": "[oops"}, "tags", "row 1 is not valid JSON"),
    ("strategy_instances", 1, {"target_profit": 0.0}, "target_profit", "row 1: must be > 0"),
    ("strategy_instances", 1, {"stop_loss": -100.0}, "stop_loss", "row 1: must be > 0"),
]


@pytest.mark.parametrize(("name", "row", "edit", "column", "rule"), BAD)
def test_a_bad_row_is_named_and_nothing_is_written(
    migrated: Store, name: str, row: int, edit: dict[str, Any], column: str, rule: str
) -> None:
    migrated.write_live(full("acc0"))  # stored before: must stay as it is
    before = counts(migrated)
    given = full("acc1")
    rows = given[name].to_pylist()
    rows[row] = rows[row] | edit
    given[name] = table(name, rows)
    with pytest.raises(StoreValueError) as info:
        migrated.write_live(given)
    assert (info.value.table, info.value.column) == (name, column)
    assert rule in info.value.rule, info.value.rule
    assert "nothing was saved" in str(info.value)
    assert counts(migrated) == before


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda s: read_candles(s, "acc1", "acc1/condor", "1h"), "interval"),
        (lambda s: read_candles(s, "acc1", "acc1/condor", "1m", T0 + MIN, T0), "end"),
        (lambda s: read_candles(s, "acc1", "acc1/condor", "1m", 1.5), "start"),
        (lambda s: read_candles(s, "acc1", "acc1/condor", "1m", None, True), "end"),
        (lambda s: read_candles(s, "", "acc1/condor"), "account_id"),
        (lambda s: read_legs(s, "acc1", None), "instance_id"),
        (lambda s: read_daily(s, "acc1", "acc1/condor", datetime(2026, 1, 1, tzinfo=UTC)), "first_day"),
        (lambda s: read_exits(s, "acc1", "acc1/condor", leg_id=""), "leg_id"),
        (lambda s: pnl_report(s, "acc1", "acc1/condor", marks={"X": -1.0}), "marks.X"),
        (lambda s: pnl_report(s, "acc1", "acc1/condor", marks={"X": math.nan}), "marks.X"),
        (lambda s: export_pnl(s, "acc1", "acc1/condor", "xlsx", "/tmp/never"), "fmt"),
    ],
)
def test_bad_read_arguments_name_the_field(migrated: Store, call: Any, field: str) -> None:
    migrated.write_live(full())
    with pytest.raises(ParameterError) as info:
        call(migrated)
    assert info.value.field == field


def test_unmigrated_store_refuses_m2m_reads(store: Store) -> None:
    with pytest.raises(StoreError, match="tradectl db migrate"):
        read_candles(store, "acc1", "acc1/condor")


# ------------------------------------------------------------------ P&L export


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_export_pnl_writes_readable_files_with_the_right_rows(migrated: Store, tmp_path: Path, fmt: str) -> None:
    migrated.write_live(full("acc1"))
    migrated.write_live(full("acc2"))  # another account's rows must not leak in
    extra = [daily("acc1", date(2025, 12, 31), T0), daily("acc1", date(2026, 1, 3), T0)]
    migrated.write_live({"strategy_performance_daily": table("strategy_performance_daily", extra)})
    # Window: 2026-01-01 00:10 UTC (05:40 IST) to 2026-01-01 19:00 UTC (2026-01-02 00:30 IST).
    start, end = T0 + 10 * MIN, T0 + 19 * 3600 * S
    marks = {"NIFTY25N0724500CE": 90.5, "NIFTY25N0724000PE": 95.0}  # no mark for BTCUSDT
    out = tmp_path / "report"
    result = export_pnl(migrated, "acc1", "acc1/condor", fmt, out, start, end, marks=marks)
    assert set(result.files) == {"summary", "legs", "exits", "daily"}
    assert {p.name for p in out.iterdir()} == {f"{n}.{fmt}" for n in result.files}  # no temporary files left

    def read(name: str) -> pa.Table:
        path = result.files[name]
        return pacsv.read_csv(path) if fmt == "csv" else pq.read_table(path)

    got = {name: read(name) for name in result.files}
    # legs: L4 closed at 00:20, after start, so it is in; exits at 00:15, 00:20, 00:30; daily: below
    assert (
        {name: t.num_rows for name, t in got.items()}
        == result.rows
        == {
            "summary": 1,
            "legs": 4,
            "exits": 3,
            "daily": 2,
        }
    )
    legs_rows = {r["leg_id"]: r for r in got["legs"].to_pylist()}
    l1, l2, l3, l4 = (legs_rows[f"acc1-L{i}"] for i in (1, 2, 3, 4))
    assert l1["unrealized_pnl"] == pytest.approx((90.5 - 100.5) * 75 * -1)  # short call, price fell: a gain
    assert l1["unrealized_pnl"] > 0 and l1["total_pnl"] == pytest.approx(750.0)
    assert l2["unrealized_pnl"] == pytest.approx((95.0 - 80.0) * 50 * 1)
    assert (l2["exits"], l2["exited_qty"], l2["avg_exit_price"]) == (2, 100.0, pytest.approx(105.0))
    assert l2["realized_pnl"] == 2500.0 and l2["total_pnl"] == pytest.approx(3250.0)
    assert l3["mark_price"] is None and l3["unrealized_pnl"] is None and l3["total_pnl"] is None
    assert (l4["open_qty"], l4["unrealized_pnl"], l4["total_pnl"]) == (0.0, 0.0, -3750.0)
    assert set(got["legs"]["strategy"].to_pylist()) == {"condor"}
    assert set(got["legs"]["account_id"].to_pylist()) == {"acc1"}

    ex = got["exits"].to_pylist()
    assert [r["exit_id"] for r in ex] == [1, 2, 3]
    assert [r["symbol"] for r in ex] == ["NIFTY25N0724000PE", "NIFTY25NOVFUT", "NIFTY25N0724000PE"]

    days = got["daily"]
    as_dates = [d if isinstance(d, date) else date.fromisoformat(str(d)) for d in days["day"].to_pylist()]
    assert as_dates == [date(2026, 1, 1), date(2026, 1, 2)]  # in IST: 05:40 on the 1st to 00:30 on the 2nd
    assert set(days["strategy"].to_pylist()) == {"condor"}

    summary = got["summary"].to_pylist()[0]
    assert (summary["strategy"], summary["legs"], summary["open_legs"]) == ("condor", 4, 3)
    assert summary["realized_pnl"] == pytest.approx(2500.0 - 3750.0)
    assert summary["unrealized_pnl"] is None  # BTCUSDT has no mark
    assert (summary["target_profit"], summary["stop_loss"]) == (5000.0, 2500.0)
    stored = read_candles(migrated, "acc1", "acc1/condor").to_pylist()[-1]  # 00:11, inside the window
    assert summary["last_m2m"] == stored["close"] and summary["last_total_pnl"] == stored["total_pnl"]

    # With every open leg marked the summary has its unrealized and total P&L; exports replace files.
    again = export_pnl(migrated, "acc1", "acc1/condor", fmt, out, marks=marks | {"BTCUSDT": 43100.0})
    summary = (pacsv.read_csv if fmt == "csv" else pq.read_table)(again.files["summary"]).to_pylist()[0]
    assert summary["unrealized_pnl"] == pytest.approx(750.0 + 750.0 + 50.0)
    assert summary["total_pnl"] == pytest.approx(750.0 + 750.0 + 50.0 + 2500.0 - 3750.0)
    assert again.rows["daily"] == 4 and again.rows["exits"] == 3


def test_export_window_selects_legs_and_rejects_a_file_path(migrated: Store, tmp_path: Path) -> None:
    migrated.write_live(full())
    report = pnl_report(migrated, "acc1", "acc1/condor", T0 + 25 * MIN, T0 + 26 * MIN)
    assert report.legs["leg_id"].to_pylist() == ["acc1-L1", "acc1-L2", "acc1-L3"]  # L4 closed at 00:20
    assert report.exits.num_rows == 0
    assert pnl_report(migrated, "acc1", "acc1/condor", T0, T0 + 5 * MIN).legs.num_rows == 0  # entered at 00:05
    empty = pnl_report(migrated, "acc1", "acc1/Default Strategy")
    assert (empty.legs.num_rows, empty.exits.num_rows, empty.summary["legs"].to_pylist()) == (0, 0, [0])
    a_file = tmp_path / "taken"
    a_file.write_text("x")
    with pytest.raises(ParameterError) as info:
        export_pnl(migrated, "acc1", "acc1/condor", "csv", a_file)
    assert info.value.field == "out_path"


# ------------------------------------------------------------------ migration 005


def test_migration_005_upgrades_a_store_at_004(store_url: str, tmp_path: Path) -> None:
    old = tmp_path / "migrations"
    for dialect in ("duckdb", "postgres"):
        (old / dialect).mkdir(parents=True)
        for path in sorted((default_migrations_dir() / dialect).glob("00[1-4]_*.sql")):
            shutil.copy(path, old / dialect / path.name)
    with open_store(store_url, migrate=True, migrations_dir=old) as before:
        assert not set(M2M_TABLES) & set(before.tables())
        con = before._migration_conn()
        con.execute("INSERT INTO accounts (account_id, name, base_currency) VALUES ('acc1', 'acc1', 'INR')")
        con.execute(
            "INSERT INTO strategy_instances (instance_id, account_id, name, strategy_type, params, status, "
            "created_at, updated_at) VALUES ('acc1/old', 'acc1', 'old', 'sma', '{}', 'active', "
            "current_timestamp, current_timestamp)"
        )
    with open_store(store_url) as s:
        assert [st.name for st in s.status() if not st.applied] == [
            f.name for f in discover_migrations(s.dialect) if f.number >= 5
        ]
        assert s.migrate()[0] == MIGRATION
        assert set(M2M_TABLES) <= set(s.tables())
        row = get_instance(s, "acc1", "acc1/old")
        assert (row["is_default"], row["tags"], row["target_profit"], row["stop_loss"]) == (False, "[]", None, None)
        s.write_live(full())
        assert read_candles(s, "acc1", "acc1/condor", "5m").num_rows == 3


def test_pg_fallback_without_timescaledb(pg_schema_url: str) -> None:
    with open_store(pg_schema_url, migrate=True) as store:
        assert rollup_kind(store) == "view"
        store.write_live(full())
        assert read_candles(store, "acc1", "acc1/condor", "5m").num_rows == 3
    with psycopg.connect(pg_schema_url, autocommit=True) as conn:
        available = conn.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'").fetchone()
        kinds = dict(
            conn.execute(
                "SELECT relname, relkind FROM pg_class WHERE relnamespace = current_schema()::regnamespace "
                "AND relname IN ('strategy_m2m_candles', 'strategy_m2m_5m')"
            ).fetchall()
        )
    if available is None:
        assert kinds == {"strategy_m2m_candles": "r", "strategy_m2m_5m": "v"}
    else:  # pragma: no cover - TimescaleDB is not installed on this machine
        assert kinds["strategy_m2m_5m"] == "v"  # a continuous aggregate's user view is a view as well


# ------------------------------------------------------------------ the TimescaleDB branch (detection faked)


class RecordingConn:
    """A PostgreSQL migration connection that answers the detection queries and records statements."""

    dialect = "postgres"
    placeholder = "%s"

    def __init__(self, installed: bool = False, available: bool = True, fail_on: str | None = None) -> None:
        self.installed = installed
        self.available = available
        self.fail_on = fail_on
        self.executed: list[str] = []
        self.savepoints = 0

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        self.savepoints += 1
        yield

    def lock(self) -> None:
        return None

    def execute_script(self, sql: str) -> None:
        self.executed.append(sql)

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        if self.fail_on is not None and self.fail_on in sql:
            raise RuntimeError(f"refused: {sql[:40]}")
        self.executed.append(sql)

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        if "pg_extension" in sql:
            return [(1,)] if self.installed else []
        if "pg_available_extensions" in sql:
            return [(1,)] if self.available else []
        raise AssertionError(f"unexpected query {sql}")

    def table_exists(self, name: str) -> bool:
        return False

    def epoch_us_sql(self, column: str) -> str:
        return column

    def bootstrap_sql(self) -> str:
        return ""


def test_timescaledb_statements_when_the_extension_is_detected() -> None:
    conn = RecordingConn(available=True)
    assert m2m_timescaledb_step(conn) is True
    assert conn.executed == ["CREATE EXTENSION IF NOT EXISTS timescaledb", *m2m_timescaledb_statements()]
    assert conn.savepoints == 2  # CREATE EXTENSION and the statements each in a savepoint

    hypertable, compress, compress_policy, drop_view, cagg, cagg_policy = m2m_timescaledb_statements()
    assert hypertable.startswith("SELECT create_hypertable('strategy_m2m_candles'::regclass, 'ts'")
    assert "chunk_time_interval => INTERVAL '1 day'" in hypertable
    assert "timescaledb.compress," in compress and "timescaledb.compress_segmentby = 'instance_id'" in compress
    assert compress_policy.startswith("SELECT add_compression_policy('strategy_m2m_candles'::regclass")
    assert "INTERVAL '7 days'" in compress_policy
    assert drop_view == "DROP VIEW strategy_m2m_5m"
    assert cagg.startswith("CREATE MATERIALIZED VIEW strategy_m2m_5m WITH (timescaledb.continuous")
    assert "timescaledb.materialized_only = false" in cagg and cagg.endswith("WITH NO DATA")
    assert "time_bucket(INTERVAL '5 minutes', ts) AS ts" in cagg
    for part in ("first(open, ts) AS open", "max(high) AS high", "min(low) AS low", "last(close, ts) AS close",
                 "last(realized_pnl, ts) AS realized_pnl", "last(total_pnl, ts) AS total_pnl",
                 "sum(updates)::integer AS updates", "bool_or(model_mark) AS model_mark"):  # fmt: skip
        assert part in cagg, part
    assert cagg_policy.startswith("SELECT add_continuous_aggregate_policy('strategy_m2m_5m'::regclass")
    assert "schedule_interval => INTERVAL '1 minute'" in cagg_policy

    installed = RecordingConn(installed=True, available=False)
    assert m2m_timescaledb_step(installed) is True
    assert installed.executed == m2m_timescaledb_statements()  # no CREATE EXTENSION needed


def test_timescaledb_not_detected_issues_nothing(caplog: pytest.LogCaptureFixture) -> None:
    conn = RecordingConn(available=False)
    assert m2m_timescaledb_step(conn) is False
    assert conn.executed == []
    duck = RecordingConn()
    duck.dialect = "duckdb"
    assert migrations_module.timescaledb_available(duck) is False
    # available but not loadable (library not preloaded): a warning, plain PostgreSQL
    unloadable = RecordingConn(available=True, fail_on="CREATE EXTENSION")
    with caplog.at_level(logging.WARNING, logger="engine.store.migrations"):
        assert m2m_timescaledb_step(unloadable) is False
    assert unloadable.executed == []
    assert "could not be loaded" in caplog.text


def test_timescaledb_failure_keeps_the_plain_schema_for_real(
    pg_schema_url: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Detection faked on a server without TimescaleDB: the statements run against real PostgreSQL,
    fail in their savepoint, and the migration keeps the plain table and view."""
    monkeypatch.setattr(migrations_module, "timescaledb_available", lambda conn: True)
    with caplog.at_level(logging.WARNING, logger="engine.store.migrations"), open_store(pg_schema_url) as store:
        assert MIGRATION in store.migrate()
        assert "strategy_m2m_candles stays a plain table" in caplog.text
        assert rollup_kind(store) == "view"
        store.write_live(full())
        assert read_candles(store, "acc1", "acc1/condor", "5m").num_rows == 3


def test_timescaledb_rollup_query_matches_the_plain_view(pg_schema_url: str) -> None:
    """The continuous aggregate's SELECT, run on plain PostgreSQL with stand-ins for TimescaleDB's
    time_bucket / first / last, gives the plain view's rows."""
    with open_store(pg_schema_url, migrate=True) as store:
        store.write_live(entities())
        rows = candles("acc1", "acc1/condor", [0, 1, 3, 4, 5, 7, 14, 15, 60], seed=21)
        store.write_live({"strategy_m2m_candles": table("strategy_m2m_candles", rows)})
    stand_ins = """
        CREATE FUNCTION time_bucket(w interval, t timestamptz) RETURNS timestamptz LANGUAGE sql IMMUTABLE
            AS $$ SELECT date_bin(w, t, TIMESTAMPTZ '2000-01-03 00:00:00+00') $$;
        CREATE TYPE fl_state AS (v numeric, t timestamptz);
        CREATE FUNCTION first_sf(s fl_state, v numeric, t timestamptz) RETURNS fl_state LANGUAGE sql IMMUTABLE
            AS $$ SELECT CASE WHEN s IS NULL OR t < s.t THEN ROW(v, t)::fl_state ELSE s END $$;
        CREATE FUNCTION last_sf(s fl_state, v numeric, t timestamptz) RETURNS fl_state LANGUAGE sql IMMUTABLE
            AS $$ SELECT CASE WHEN s IS NULL OR t > s.t THEN ROW(v, t)::fl_state ELSE s END $$;
        CREATE FUNCTION fl_final(s fl_state) RETURNS numeric LANGUAGE sql IMMUTABLE AS $$ SELECT s.v $$;
        CREATE AGGREGATE first(numeric, timestamptz) (SFUNC = first_sf, STYPE = fl_state, FINALFUNC = fl_final);
        CREATE AGGREGATE last(numeric, timestamptz) (SFUNC = last_sf, STYPE = fl_state, FINALFUNC = fl_final);
    """
    with psycopg.connect(pg_schema_url, autocommit=True) as conn:
        conn.execute(stand_ins.encode())
        order = " ORDER BY instance_id, ts"
        cagg = conn.execute(f"SELECT * FROM ({M2M_5M_TIMESCALEDB_SELECT}) q{order}".encode()).fetchall()
        view = conn.execute(f"SELECT * FROM strategy_m2m_5m{order}".encode()).fetchall()
    assert len(cagg) == 5
    assert cagg == view
