-- Migration: 001_backtests
-- Description: backtest runs with their closed trades, fills and equity curves (PostgreSQL)
--
-- Money, prices and quantities are NUMERIC(38, 18): up to 20 integer digits, 18 decimals.
-- Timestamps are TIMESTAMPTZ (microsecond precision). Sides are +1 (buy/long), -1 (sell/short).
-- backtest_equity becomes a TimescaleDB hypertable on ts when the extension is available and
-- loadable; otherwise it stays a plain table with an index on ts.

CREATE TABLE backtest_runs (
    run_id           TEXT PRIMARY KEY,
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    strategy_type    TEXT NOT NULL,
    params           JSONB NOT NULL,
    symbols          TEXT[] NOT NULL,
    timeframe        TEXT NOT NULL,
    data_path        TEXT NOT NULL,
    start_ts         TIMESTAMPTZ NOT NULL,
    end_ts           TIMESTAMPTZ NOT NULL,
    initial_cash     NUMERIC(38, 18) NOT NULL,
    final_equity     NUMERIC(38, 18),
    total_return_pct NUMERIC(38, 18),
    sharpe           NUMERIC(38, 18),
    max_drawdown_pct NUMERIC(38, 18),
    trades           INTEGER NOT NULL,
    fees_paid        NUMERIC(38, 18) NOT NULL,
    funding_paid     NUMERIC(38, 18) NOT NULL,
    trade_hash       TEXT NOT NULL,
    metrics          JSONB NOT NULL,
    settings         JSONB NOT NULL
);

CREATE INDEX backtest_runs_created_at_idx ON backtest_runs (created_at DESC);

CREATE TABLE backtest_trades (
    run_id      TEXT NOT NULL REFERENCES backtest_runs (run_id) ON DELETE CASCADE,
    trade_id    BIGINT NOT NULL,
    symbol      TEXT NOT NULL,
    side        SMALLINT NOT NULL CHECK (side IN (-1, 1)),
    qty         NUMERIC(38, 18) NOT NULL,
    entry_ts    TIMESTAMPTZ NOT NULL,
    exit_ts     TIMESTAMPTZ NOT NULL,
    entry_price NUMERIC(38, 18) NOT NULL,
    exit_price  NUMERIC(38, 18) NOT NULL,
    gross_pnl   NUMERIC(38, 18) NOT NULL,
    fees        NUMERIC(38, 18) NOT NULL,
    funding     NUMERIC(38, 18) NOT NULL,
    net_pnl     NUMERIC(38, 18) NOT NULL,
    bars_held   BIGINT NOT NULL,
    PRIMARY KEY (run_id, trade_id)
);

CREATE TABLE backtest_fills (
    run_id       TEXT NOT NULL REFERENCES backtest_runs (run_id) ON DELETE CASCADE,
    fill_id      BIGINT NOT NULL,
    order_id     BIGINT NOT NULL,
    ts           TIMESTAMPTZ NOT NULL,
    symbol       TEXT NOT NULL,
    side         SMALLINT NOT NULL CHECK (side IN (-1, 1)),
    qty          NUMERIC(38, 18) NOT NULL,
    price        NUMERIC(38, 18) NOT NULL,
    fee          NUMERIC(38, 18) NOT NULL,
    liquidity    TEXT,
    realized_pnl NUMERIC(38, 18) NOT NULL,
    tag          TEXT,
    PRIMARY KEY (run_id, fill_id)
);

CREATE TABLE backtest_equity (
    run_id         TEXT NOT NULL REFERENCES backtest_runs (run_id) ON DELETE CASCADE,
    ts             TIMESTAMPTZ NOT NULL,
    cash           NUMERIC(38, 18) NOT NULL,
    position_value NUMERIC(38, 18) NOT NULL,
    equity         NUMERIC(38, 18) NOT NULL,
    gross_exposure NUMERIC(38, 18) NOT NULL,
    PRIMARY KEY (run_id, ts)
);

-- TimescaleDB when available, plain PostgreSQL otherwise. The extension can be listed in
-- pg_available_extensions yet fail to load (not in shared_preload_libraries): that also falls back.
DO $$
DECLARE
    is_hypertable BOOLEAN := FALSE;
BEGIN
    IF EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb') THEN
        BEGIN
            CREATE EXTENSION IF NOT EXISTS timescaledb;
            EXECUTE format(
                'SELECT create_hypertable(%L::regclass, %L, chunk_time_interval => INTERVAL %L, if_not_exists => TRUE)',
                'backtest_equity', 'ts', '30 days');
            is_hypertable := TRUE;
        EXCEPTION WHEN OTHERS THEN
            RAISE WARNING 'timescaledb is available but could not be used (%): backtest_equity stays a plain table',
                SQLERRM;
        END;
    ELSE
        RAISE NOTICE 'timescaledb is not available: backtest_equity is a plain table';
    END IF;
    IF NOT is_hypertable THEN
        CREATE INDEX IF NOT EXISTS backtest_equity_ts_idx ON backtest_equity (ts);
    END IF;
END
$$;
