-- Migration: 004_live
-- Description: live actor runtime: accounts, strategy instances, bots, orders, fills, positions, signals, portfolio snapshots/events, risk rejections, bot checkpoints (DuckDB)
--
-- Written in batches by the live recorder through Store.write_live (engine/store/live.py holds the
-- Arrow layout of every table, its key and its conflict mode). Every table is scoped by account_id.
-- Money, prices and quantities are DECIMAL(38, 18): up to 20 integer digits, 18 decimals. Timestamps
-- are TIMESTAMPTZ with microsecond precision (UTC); the engine's int64 nanosecond stamps are FLOORED
-- to the microsecond when written (live feeds carry ns stamps; backtest tables reject them instead).
-- Sides are +1 (buy/long), -1 (sell/short).
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

CREATE TABLE accounts (
    account_id    VARCHAR PRIMARY KEY,
    name          VARCHAR NOT NULL,
    base_currency VARCHAR NOT NULL,
    timezone      VARCHAR NOT NULL DEFAULT 'UTC',  -- IANA name, e.g. 'Asia/Kolkata' (day boundaries)
    created_at    TIMESTAMPTZ NOT NULL DEFAULT current_timestamp
);

CREATE TABLE strategy_instances (
    instance_id   VARCHAR PRIMARY KEY,
    account_id    VARCHAR NOT NULL,
    name          VARCHAR NOT NULL,
    strategy_type VARCHAR NOT NULL,
    params        JSON NOT NULL,
    status        VARCHAR NOT NULL CHECK (status IN ('active', 'archived')),
    created_at    TIMESTAMPTZ NOT NULL,
    updated_at    TIMESTAMPTZ NOT NULL,
    UNIQUE (account_id, name)
);

CREATE TABLE bots (
    bot_id        VARCHAR PRIMARY KEY,
    account_id    VARCHAR NOT NULL,
    instance_id   VARCHAR NOT NULL,
    name          VARCHAR NOT NULL,
    symbols       VARCHAR[] NOT NULL,
    timeframe     VARCHAR NOT NULL,
    settings      JSON NOT NULL,  -- capital, leverage, fees, feed ...
    status        VARCHAR NOT NULL CHECK (status IN ('created', 'running', 'paused', 'stopped', 'error')),
    status_reason VARCHAR,
    error_count   INTEGER NOT NULL CHECK (error_count >= 0),  -- consecutive strategy errors
    created_at    TIMESTAMPTZ NOT NULL,
    updated_at    TIMESTAMPTZ NOT NULL,
    UNIQUE (account_id, name)
);

CREATE TABLE live_orders (
    account_id    VARCHAR NOT NULL,
    bot_id        VARCHAR NOT NULL,
    order_id      BIGINT NOT NULL,
    created_ts    TIMESTAMPTZ NOT NULL,
    symbol        VARCHAR NOT NULL,
    side          SMALLINT NOT NULL CHECK (side IN (-1, 1)),
    order_type    VARCHAR NOT NULL CHECK (order_type IN ('market', 'limit', 'stop_market', 'stop_limit')),
    qty           DECIMAL(38, 18) NOT NULL,
    price         DECIMAL(38, 18),  -- limit price (NULL for market / stop-market orders)
    stop_price    DECIMAL(38, 18),  -- trigger (NULL unless a stop order)
    reduce_only   BOOLEAN NOT NULL,
    status        VARCHAR NOT NULL CHECK (status IN ('open', 'filled', 'cancelled', 'rejected')),
    filled_qty    DECIMAL(38, 18) NOT NULL,
    fill_price    DECIMAL(38, 18),  -- average fill price (NULL while nothing is filled)
    tag           VARCHAR,
    reject_reason VARCHAR,
    updated_ts    TIMESTAMPTZ NOT NULL,  -- an upsert with an older updated_ts is ignored
    PRIMARY KEY (bot_id, order_id)
);

CREATE TABLE live_fills (
    account_id   VARCHAR NOT NULL,
    bot_id       VARCHAR NOT NULL,
    fill_id      BIGINT NOT NULL,
    order_id     BIGINT NOT NULL,
    ts           TIMESTAMPTZ NOT NULL,
    symbol       VARCHAR NOT NULL,
    side         SMALLINT NOT NULL CHECK (side IN (-1, 1)),
    qty          DECIMAL(38, 18) NOT NULL,
    price        DECIMAL(38, 18) NOT NULL,
    fee          DECIMAL(38, 18) NOT NULL,
    liquidity    VARCHAR,
    realized_pnl DECIMAL(38, 18) NOT NULL,
    tag          VARCHAR,
    PRIMARY KEY (bot_id, fill_id)
);

CREATE TABLE live_positions (
    account_id   VARCHAR NOT NULL,
    bot_id       VARCHAR NOT NULL,
    symbol       VARCHAR NOT NULL,
    qty          DECIMAL(38, 18) NOT NULL,  -- signed: > 0 long, < 0 short, 0 flat
    avg_price    DECIMAL(38, 18) NOT NULL,
    realized_pnl DECIMAL(38, 18) NOT NULL,
    funding      DECIMAL(38, 18) NOT NULL,  -- signed: received > 0, paid < 0
    updated_ts   TIMESTAMPTZ NOT NULL,      -- an upsert with an older updated_ts is ignored
    PRIMARY KEY (bot_id, symbol)
);

CREATE TABLE strategy_signals (
    account_id VARCHAR NOT NULL,
    bot_id     VARCHAR NOT NULL,
    seq        BIGINT NOT NULL,
    ts         TIMESTAMPTZ NOT NULL,
    strategy   VARCHAR NOT NULL,
    symbol     VARCHAR NOT NULL,  -- '' when none
    action     VARCHAR NOT NULL CHECK (action IN ('entry', 'exit', 'skip', 'error', 'state')),
    side       SMALLINT CHECK (side IN (-1, 1)),
    qty        DECIMAL(38, 18),
    price      DECIMAL(38, 18),
    order_id   BIGINT,
    detail     JSON NOT NULL,
    PRIMARY KEY (bot_id, seq)
);

-- A TimescaleDB hypertable on PostgreSQL when the extension is present (compression policies come
-- with a later migration); in DuckDB a plain table.
CREATE TABLE portfolio_snapshots (
    account_id   VARCHAR NOT NULL,
    ts           TIMESTAMPTZ NOT NULL,
    strategy     VARCHAR NOT NULL,  -- '' for the portfolio
    equity       DECIMAL(38, 18) NOT NULL,
    peak         DECIMAL(38, 18) NOT NULL,
    drawdown_pct DECIMAL(38, 18) NOT NULL,
    state        VARCHAR NOT NULL,
    PRIMARY KEY (account_id, ts, strategy)
);

CREATE TABLE portfolio_events (
    account_id VARCHAR NOT NULL,
    seq        BIGINT NOT NULL,
    ts         TIMESTAMPTZ NOT NULL,
    kind       VARCHAR NOT NULL,
    strategy   VARCHAR NOT NULL,  -- '' for portfolio-wide events
    symbol     VARCHAR NOT NULL,  -- '' when none
    data       JSON NOT NULL,
    PRIMARY KEY (account_id, seq)
);

CREATE TABLE risk_rejections (
    account_id  VARCHAR NOT NULL,
    seq         BIGINT NOT NULL,
    ts          TIMESTAMPTZ NOT NULL,
    strategy    VARCHAR NOT NULL,
    symbol      VARCHAR NOT NULL,
    side        SMALLINT NOT NULL CHECK (side IN (-1, 1)),
    qty         DECIMAL(38, 18) NOT NULL,
    price       DECIMAL(38, 18),  -- NULL: a market order without a price
    check_name  VARCHAR NOT NULL,
    value       DECIMAL(38, 18),  -- the figure checked and its limit, in the check's unit;
    limit_value DECIMAL(38, 18),  -- NULL when undefined (NaN) or infinite
    message     VARCHAR NOT NULL,
    PRIMARY KEY (account_id, seq)
);

CREATE TABLE bot_checkpoints (
    bot_id       VARCHAR PRIMARY KEY,  -- only the latest checkpoint of each bot is kept
    account_id   VARCHAR NOT NULL,
    watermark_ns BIGINT NOT NULL,      -- event time (ns since the epoch) the state includes
    seq          BIGINT NOT NULL,      -- the bot's last sequence number the state includes
    state        BLOB NOT NULL,        -- the strategy's serialised state
    created_at   TIMESTAMPTZ NOT NULL
);
