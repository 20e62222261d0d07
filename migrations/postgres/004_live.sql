-- Migration: 004_live
-- Description: live actor runtime: accounts, strategy instances, bots, orders, fills, positions, signals, portfolio snapshots/events, risk rejections, bot checkpoints (PostgreSQL)
--
-- Written in batches by the live recorder through Store.write_live (engine/store/live.py holds the
-- Arrow layout of every table, its key and its conflict mode). Every table is scoped by account_id.
-- Money, prices and quantities are NUMERIC(38, 18): up to 20 integer digits, 18 decimals. Timestamps
-- are TIMESTAMPTZ with microsecond precision (UTC); the engine's int64 nanosecond stamps are FLOORED
-- to the microsecond when written (live feeds carry ns stamps; backtest tables reject them instead).
-- Sides are +1 (buy/long), -1 (sell/short). JSON columns are JSON (not JSONB): the text written is
-- the text read back, as in DuckDB.
--
-- Conflict modes (by primary key): live_orders, live_positions, bot_checkpoints and the entity
-- tables (accounts, strategy_instances, bots) are upserts (the latest state wins; created_at keeps the
-- first write's value); live_fills, strategy_signals, portfolio_snapshots, portfolio_events and
-- risk_rejections are insert-or-ignore (idempotent by id: a replayed row leaves the stored one).
-- No FOREIGN KEY constraints: DuckDB refuses to upsert a row that a foreign key references (it
-- rewrites it as delete + insert). Store.write_live checks the references instead, in the same
-- transaction, on both backends: a strategy instance's and a bot's account exists, a bot's
-- instance belongs to the bot's account, and every event row's (account_id, bot_id) is a stored
-- bot of that account (account_id alone must be a stored account for the portfolio tables).
-- portfolio_snapshots becomes a TimescaleDB hypertable on ts when the extension is available and
-- loadable; otherwise it stays a plain table with an index on ts.

CREATE TABLE accounts (
    account_id    TEXT PRIMARY KEY,
    name          TEXT NOT NULL,
    base_currency TEXT NOT NULL,
    timezone      TEXT NOT NULL DEFAULT 'UTC',  -- IANA name, e.g. 'Asia/Kolkata' (day boundaries)
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE strategy_instances (
    instance_id   TEXT PRIMARY KEY,
    account_id    TEXT NOT NULL,
    name          TEXT NOT NULL,
    strategy_type TEXT NOT NULL,
    params        JSON NOT NULL,
    status        TEXT NOT NULL CHECK (status IN ('active', 'archived')),
    created_at    TIMESTAMPTZ NOT NULL,
    updated_at    TIMESTAMPTZ NOT NULL,
    UNIQUE (account_id, name)
);

CREATE TABLE bots (
    bot_id        TEXT PRIMARY KEY,
    account_id    TEXT NOT NULL,
    instance_id   TEXT NOT NULL,
    name          TEXT NOT NULL,
    symbols       TEXT[] NOT NULL,
    timeframe     TEXT NOT NULL,
    settings      JSON NOT NULL,  -- capital, leverage, fees, feed ...
    status        TEXT NOT NULL CHECK (status IN ('created', 'running', 'paused', 'stopped', 'error')),
    status_reason TEXT,
    error_count   INTEGER NOT NULL CHECK (error_count >= 0),  -- consecutive strategy errors
    created_at    TIMESTAMPTZ NOT NULL,
    updated_at    TIMESTAMPTZ NOT NULL,
    UNIQUE (account_id, name)
);

CREATE INDEX bots_instance_idx ON bots (instance_id);

CREATE TABLE live_orders (
    account_id    TEXT NOT NULL,
    bot_id        TEXT NOT NULL,
    order_id      BIGINT NOT NULL,
    created_ts    TIMESTAMPTZ NOT NULL,
    symbol        TEXT NOT NULL,
    side          SMALLINT NOT NULL CHECK (side IN (-1, 1)),
    order_type    TEXT NOT NULL CHECK (order_type IN ('market', 'limit', 'stop_market', 'stop_limit')),
    qty           NUMERIC(38, 18) NOT NULL,
    price         NUMERIC(38, 18),  -- limit price (NULL for market / stop-market orders)
    stop_price    NUMERIC(38, 18),  -- trigger (NULL unless a stop order)
    reduce_only   BOOLEAN NOT NULL,
    status        TEXT NOT NULL CHECK (status IN ('open', 'filled', 'cancelled', 'rejected')),
    filled_qty    NUMERIC(38, 18) NOT NULL,
    fill_price    NUMERIC(38, 18),  -- average fill price (NULL while nothing is filled)
    tag           TEXT,
    reject_reason TEXT,
    updated_ts    TIMESTAMPTZ NOT NULL,  -- an upsert with an older updated_ts is ignored
    PRIMARY KEY (bot_id, order_id)
);

CREATE INDEX live_orders_account_idx ON live_orders (account_id, updated_ts);
CREATE INDEX live_orders_open_idx ON live_orders (bot_id) WHERE status = 'open';

CREATE TABLE live_fills (
    account_id   TEXT NOT NULL,
    bot_id       TEXT NOT NULL,
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
    PRIMARY KEY (bot_id, fill_id)
);

CREATE INDEX live_fills_account_ts_idx ON live_fills (account_id, ts);

CREATE TABLE live_positions (
    account_id   TEXT NOT NULL,
    bot_id       TEXT NOT NULL,
    symbol       TEXT NOT NULL,
    qty          NUMERIC(38, 18) NOT NULL,  -- signed: > 0 long, < 0 short, 0 flat
    avg_price    NUMERIC(38, 18) NOT NULL,
    realized_pnl NUMERIC(38, 18) NOT NULL,
    funding      NUMERIC(38, 18) NOT NULL,  -- signed: received > 0, paid < 0
    updated_ts   TIMESTAMPTZ NOT NULL,      -- an upsert with an older updated_ts is ignored
    PRIMARY KEY (bot_id, symbol)
);

CREATE INDEX live_positions_account_idx ON live_positions (account_id);

CREATE TABLE strategy_signals (
    account_id TEXT NOT NULL,
    bot_id     TEXT NOT NULL,
    seq        BIGINT NOT NULL,
    ts         TIMESTAMPTZ NOT NULL,
    strategy   TEXT NOT NULL,
    symbol     TEXT NOT NULL,  -- '' when none
    action     TEXT NOT NULL CHECK (action IN ('entry', 'exit', 'skip', 'error', 'state')),
    side       SMALLINT CHECK (side IN (-1, 1)),
    qty        NUMERIC(38, 18),
    price      NUMERIC(38, 18),
    order_id   BIGINT,
    detail     JSON NOT NULL,
    PRIMARY KEY (bot_id, seq)
);

CREATE INDEX strategy_signals_account_ts_idx ON strategy_signals (account_id, ts);

CREATE TABLE portfolio_snapshots (
    account_id   TEXT NOT NULL,
    ts           TIMESTAMPTZ NOT NULL,
    strategy     TEXT NOT NULL,  -- '' for the portfolio
    equity       NUMERIC(38, 18) NOT NULL,
    peak         NUMERIC(38, 18) NOT NULL,
    drawdown_pct NUMERIC(38, 18) NOT NULL,
    state        TEXT NOT NULL,
    PRIMARY KEY (account_id, ts, strategy)
);

CREATE TABLE portfolio_events (
    account_id TEXT NOT NULL,
    seq        BIGINT NOT NULL,
    ts         TIMESTAMPTZ NOT NULL,
    kind       TEXT NOT NULL,
    strategy   TEXT NOT NULL,  -- '' for portfolio-wide events
    symbol     TEXT NOT NULL,  -- '' when none
    data       JSON NOT NULL,
    PRIMARY KEY (account_id, seq)
);

CREATE INDEX portfolio_events_account_ts_idx ON portfolio_events (account_id, ts);

CREATE TABLE risk_rejections (
    account_id  TEXT NOT NULL,
    seq         BIGINT NOT NULL,
    ts          TIMESTAMPTZ NOT NULL,
    strategy    TEXT NOT NULL,
    symbol      TEXT NOT NULL,
    side        SMALLINT NOT NULL CHECK (side IN (-1, 1)),
    qty         NUMERIC(38, 18) NOT NULL,
    price       NUMERIC(38, 18),  -- NULL: a market order without a price
    check_name  TEXT NOT NULL,
    value       NUMERIC(38, 18),  -- the figure checked and its limit, in the check's unit;
    limit_value NUMERIC(38, 18),  -- NULL when undefined (NaN) or infinite
    message     TEXT NOT NULL,
    PRIMARY KEY (account_id, seq)
);

CREATE INDEX risk_rejections_account_ts_idx ON risk_rejections (account_id, ts);

CREATE TABLE bot_checkpoints (
    bot_id       TEXT PRIMARY KEY,  -- only the latest checkpoint of each bot is kept
    account_id   TEXT NOT NULL,
    watermark_ns BIGINT NOT NULL,   -- event time (ns since the epoch) the state includes
    seq          BIGINT NOT NULL,   -- the bot's last sequence number the state includes
    state        BYTEA NOT NULL,    -- the strategy's serialised state
    created_at   TIMESTAMPTZ NOT NULL
);

-- portfolio_snapshots: TimescaleDB when available, plain PostgreSQL otherwise (as in 001 and 003).
-- Its primary key includes ts, as a hypertable's unique indexes must. A later migration adds a
-- compression policy (segment by account_id, strategy) when the extension is present.
DO $$
DECLARE
    is_hypertable BOOLEAN := FALSE;
BEGIN
    IF EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb') THEN
        BEGIN
            CREATE EXTENSION IF NOT EXISTS timescaledb;
            EXECUTE format(
                'SELECT create_hypertable(%L::regclass, %L, chunk_time_interval => INTERVAL %L, if_not_exists => TRUE)',
                'portfolio_snapshots', 'ts', '7 days');
            is_hypertable := TRUE;
        EXCEPTION WHEN OTHERS THEN
            RAISE WARNING 'timescaledb is available but could not be used (%): portfolio_snapshots stays a plain table',
                SQLERRM;
        END;
    ELSE
        RAISE NOTICE 'timescaledb is not available: portfolio_snapshots is a plain table';
    END IF;
    IF NOT is_hypertable THEN
        CREATE INDEX IF NOT EXISTS portfolio_snapshots_ts_idx ON portfolio_snapshots (ts);
    END IF;
END
$$;
