"""The migration runner on DuckDB and on a real PostgreSQL database (see conftest.py)."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from engine.errors import StoreError
from engine.store import Store, default_migrations_dir, discover_migrations, open_store

BACKTEST_TABLES = {"backtest_runs", "backtest_trades", "backtest_fills", "backtest_equity"}


def _write(folder: Path, name: str, body: str, header: bool = True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    stem = name.removesuffix(".sql")
    text = f"-- Migration: {stem}\n-- Description: test migration {stem}\n\n{body}\n" if header else body
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


# ------------------------------------------------------------------ the repository's migrations


@pytest.mark.parametrize("dialect", ["duckdb", "postgres"])
def test_repository_migrations_are_well_formed(dialect: str) -> None:
    files = discover_migrations(dialect)
    assert files, f"no migrations for {dialect}"
    assert files[0].name == "001_backtests"
    assert [f.number for f in files] == sorted(f.number for f in files)
    assert files[0].path.parent == default_migrations_dir() / dialect


def test_status_before_and_after_migrate_is_idempotent(store: Store) -> None:
    expected = [f.name for f in discover_migrations(store.dialect)]
    before = store.status()
    assert [s.name for s in before] == expected
    assert all(s.applied_at is None and not s.applied and not s.file_missing for s in before)
    assert "_migrations" not in store.tables(), "status() must not create anything"

    t0 = datetime.now(UTC) - timedelta(minutes=5)
    assert store.migrate() == expected
    after = store.status()
    assert [s.name for s in after] == expected
    for s in after:
        assert s.applied_at is not None and s.applied_at.tzinfo is not None
        assert t0 <= s.applied_at <= datetime.now(UTC) + timedelta(minutes=5)

    assert store.migrate() == []
    assert store.status() == after
    assert BACKTEST_TABLES | {"_migrations"} <= set(store.tables())


def test_open_store_migrate_flag(store_url: str) -> None:
    with open_store(store_url, migrate=True) as s:
        assert all(st.applied for st in s.status())
        assert s.list_backtests() == []
    with open_store(store_url, migrate=True) as s:  # second open: nothing to do, no error
        assert s.migrate() == []


def test_unmigrated_store_refuses_backtest_io(store: Store) -> None:
    with pytest.raises(StoreError, match="tradectl db migrate"):
        store.list_backtests()
    with pytest.raises(StoreError, match="001_backtests"):
        store.load_backtest("nope")


# ------------------------------------------------------------------ failure handling

BROKEN = {
    "syntax": "CREATE TABLE t_bad (x INTEGER);\nCREATE TABLE oops (;",
    "runtime": "CREATE TABLE t_bad (x INTEGER);\nINSERT INTO t_no_such_table VALUES (1);",
}


@pytest.mark.parametrize("kind", sorted(BROKEN))
def test_failing_migration_rolls_back_and_stops(store_url: str, tmp_path: Path, kind: str) -> None:
    root = tmp_path / "migrations"
    with open_store(store_url, migrations_dir=root) as store:
        folder = root / store.dialect
        _write(folder, "001_ok.sql", "CREATE TABLE t_ok (x INTEGER);\nINSERT INTO t_ok VALUES (1);")
        broken = _write(folder, "002_broken.sql", BROKEN[kind])
        _write(folder, "003_three.sql", "CREATE TABLE t_three (x INTEGER);")

        with pytest.raises(StoreError) as info:
            store.migrate()
        message = str(info.value)
        assert "002_broken.sql" in message
        assert "rolled back" in message

        status = {s.name: s.applied_at for s in store.status()}
        assert list(status) == ["001_ok", "002_broken", "003_three"]
        assert status["001_ok"] is not None
        assert status["002_broken"] is None
        assert status["003_three"] is None
        tables = set(store.tables())
        assert "t_ok" in tables
        assert "t_bad" not in tables, "the failed migration's first statement must be rolled back"
        assert "t_three" not in tables, "migrations after a failure must not run"

        # An unapplied migration may still be fixed; the run then continues where it stopped.
        _write(folder, broken.name, "CREATE TABLE t_bad (x INTEGER);")
        assert store.migrate() == ["002_broken", "003_three"]
        assert {"t_ok", "t_bad", "t_three"} <= set(store.tables())


def test_status_flags_rows_whose_file_is_gone(store_url: str, tmp_path: Path) -> None:
    root = tmp_path / "migrations"
    with open_store(store_url, migrations_dir=root) as store:
        folder = root / store.dialect
        _write(folder, "001_a.sql", "CREATE TABLE t_a (x INTEGER);")
        gone = _write(folder, "002_b.sql", "CREATE TABLE t_b (x INTEGER);")
        assert store.migrate() == ["001_a", "002_b"]
        gone.unlink()
        _write(folder, "003_c.sql", "CREATE TABLE t_c (x INTEGER);")
        status = store.status()
        assert [(s.name, s.applied, s.file_missing) for s in status] == [
            ("001_a", True, False),
            ("003_c", False, False),
            ("002_b", True, True),
        ]
        assert store.migrate() == ["003_c"]


def test_empty_migrations_folder(store_url: str, tmp_path: Path) -> None:
    root = tmp_path / "migrations"
    with open_store(store_url, migrations_dir=root) as store:
        (root / store.dialect).mkdir(parents=True)
        assert store.status() == []
        assert store.migrate() == []
    with open_store(store_url, migrations_dir=tmp_path / "nowhere") as store:
        with pytest.raises(StoreError, match="does not exist"):
            store.status()
        with pytest.raises(StoreError, match="does not exist"):
            store.migrate()


# ------------------------------------------------------------------ file discovery rules (no database)


def test_discovery_orders_numerically(tmp_path: Path) -> None:
    folder = tmp_path / "duckdb"
    _write(folder, "10_ten.sql", "SELECT 1;")
    _write(folder, "2_two.sql", "SELECT 1;")
    _write(folder, "001_one.sql", "SELECT 1;")
    assert [f.name for f in discover_migrations("duckdb", tmp_path)] == ["001_one", "2_two", "10_ten"]


@pytest.mark.parametrize(
    ("files", "match"),
    [
        ({"001_a.sql": "SELECT 1;"}, "first line must be '-- Migration: 001_a'"),
        ({"001_a.sql": "-- Migration: 001_b\n-- Description: x\nSELECT 1;"}, "header says '001_b'"),
        ({"001_a.sql": "-- Migration: 001_a\nSELECT 1;"}, "Description"),
        ({"001_a.sql": "-- Migration: 001_a\n-- Description: x\nBEGIN;\nSELECT 1;\nCOMMIT;"}, "BEGIN/COMMIT"),
        ({"a_first.sql": "-- Migration: a_first\n-- Description: x\n"}, "misnamed"),
        (
            {
                "001_a.sql": "-- Migration: 001_a\n-- Description: x\n",
                "01_b.sql": "-- Migration: 01_b\n-- Description: x\n",
            },
            "share the number 1",
        ),
    ],
)
def test_discovery_rejects_bad_files(tmp_path: Path, files: dict[str, str], match: str) -> None:
    for name, text in files.items():
        _write(tmp_path / "duckdb", name, text, header=False)
    with pytest.raises(StoreError, match=match):
        discover_migrations("duckdb", tmp_path)


def test_plpgsql_blocks_are_not_transaction_control(tmp_path: Path) -> None:
    body = "DO $$\nBEGIN\n    PERFORM 1;\nEND\n$$;\nDO $tag$ BEGIN\nCOMMIT;\nEND $tag$;"
    _write(tmp_path / "postgres", "001_do.sql", body)
    assert [f.name for f in discover_migrations("postgres", tmp_path)] == ["001_do"]


# ------------------------------------------------------------------ PostgreSQL specifics


def test_pg_equity_table_follows_timescaledb_availability(pg_schema_url: str) -> None:
    with open_store(pg_schema_url, migrate=True) as store:
        assert "backtest_equity" in store.tables()
    with psycopg.connect(pg_schema_url, autocommit=True) as conn:
        available = conn.execute(
            "SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'"
        ).fetchone()
        has_catalog = conn.execute(
            "SELECT to_regclass('timescaledb_information.hypertables') IS NOT NULL"
        ).fetchone()
        assert has_catalog is not None
        is_hypertable = bool(has_catalog[0]) and bool(
            conn.execute(
                "SELECT 1 FROM timescaledb_information.hypertables WHERE hypertable_name = 'backtest_equity' "
                "AND hypertable_schema = current_schema()"
            ).fetchone()
        )
        ts_index = conn.execute(
            "SELECT 1 FROM pg_indexes WHERE schemaname = current_schema() "
            "AND indexname = 'backtest_equity_ts_idx'"
        ).fetchone()
        kind = conn.execute(
            "SELECT c.relkind FROM pg_class c WHERE c.oid = 'backtest_equity'::regclass"
        ).fetchone()
    assert kind == ("r",)
    if available is None:
        # The fallback path: a plain table with its own index on ts.
        assert not is_hypertable
        assert ts_index is not None
    else:  # pragma: no cover - TimescaleDB is not installed on this machine
        assert is_hypertable or ts_index is not None


def test_pg_concurrent_migrators_apply_each_file_once(pg_schema_url: str) -> None:
    results: list[list[str]] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            with open_store(pg_schema_url) as s:
                results.append(s.migrate())
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not errors, errors
    applied = sorted(name for r in results for name in r)
    assert applied == [f.name for f in discover_migrations("postgres")]
