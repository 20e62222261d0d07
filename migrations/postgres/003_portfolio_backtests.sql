-- Migration: 003_portfolio_backtests
-- Description: portfolio backtests with their strategy instances, equity curve, events, rejections, snapshots (PostgreSQL)
--
-- One backtest_portfolios row per run of `tradectl backtest-portfolio`. Each strategy instance
-- (sleeve) is ALSO stored as an ordinary backtest_runs row (its sub-ledger's fills, trades and
-- equity), linked by backtest_portfolio_strategies, so `tradectl show` / load_backtest read it.
-- Money, prices, quantities and percentages are NUMERIC(38, 18): up to 20 integer digits, 18
-- decimals. Timestamps are TIMESTAMPTZ (microsecond precision, UTC). Sides are +1 (buy), -1 (sell).
-- seq columns are 1-based positions in the result's tables (the event log's own sequence number
-- for events) and keep their order. backtest_portfolio_equity becomes a TimescaleDB hypertable on ts
-- when the extension is available and loadable; otherwise it stays a plain table with an index on ts.

CREATE TABLE backtest_portfolios (
    portfolio_id     TEXT PRIMARY KEY,
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    name             TEXT NOT NULL,
    capital          NUMERIC(38, 18) NOT NULL,
    start_ts         TIMESTAMPTZ,  -- first / last step of the equity curve (NULL when it is empty)
    end_ts           TIMESTAMPTZ,
    final_equity     NUMERIC(38, 18),
    total_return_pct NUMERIC(38, 18),
    sharpe           NUMERIC(38, 18),
    max_drawdown_pct NUMERIC(38, 18),
    trades           INTEGER NOT NULL,
    risk_rejections  INTEGER NOT NULL,
    breaker_trips    INTEGER NOT NULL,
    trade_hash       TEXT NOT NULL,
    metrics          JSONB NOT NULL,
    strategy_metrics JSONB NOT NULL,  -- strategy -> its metrics
    correlation      JSONB NOT NULL,  -- strategy -> strategy -> correlation of daily returns (null = undefined)
    allocations      JSONB NOT NULL,  -- strategy -> percent of capital
    settings         JSONB NOT NULL
);

CREATE INDEX backtest_portfolios_created_at_idx ON backtest_portfolios (created_at DESC);

CREATE TABLE backtest_portfolio_strategies (
    portfolio_id   TEXT NOT NULL REFERENCES backtest_portfolios (portfolio_id) ON DELETE CASCADE,
    strategy       TEXT NOT NULL,
    run_id         TEXT NOT NULL UNIQUE REFERENCES backtest_runs (run_id),
    strategy_type  TEXT NOT NULL,
    allocation_pct NUMERIC(38, 18) NOT NULL,
    seq            INTEGER NOT NULL,  -- the instance's position in the portfolio (breaks ties in the timeline)
    PRIMARY KEY (portfolio_id, strategy)
);

CREATE TABLE backtest_portfolio_equity (
    portfolio_id   TEXT NOT NULL REFERENCES backtest_portfolios (portfolio_id) ON DELETE CASCADE,
    ts             TIMESTAMPTZ NOT NULL,
    cash           NUMERIC(38, 18) NOT NULL,
    position_value NUMERIC(38, 18) NOT NULL,
    equity         NUMERIC(38, 18) NOT NULL,
    gross_exposure NUMERIC(38, 18) NOT NULL,
    drawdown_pct   NUMERIC(38, 18) NOT NULL,
    PRIMARY KEY (portfolio_id, ts)
);

CREATE TABLE backtest_portfolio_events (
    portfolio_id TEXT NOT NULL REFERENCES backtest_portfolios (portfolio_id) ON DELETE CASCADE,
    seq          BIGINT NOT NULL,
    ts           TIMESTAMPTZ NOT NULL,
    kind         TEXT NOT NULL,
    strategy     TEXT NOT NULL,  -- '' for portfolio-wide events
    symbol       TEXT NOT NULL,  -- '' when none
    data         JSON NOT NULL,  -- JSON, not JSONB: keeps the event's text exactly (key order)
    PRIMARY KEY (portfolio_id, seq)
);

CREATE TABLE backtest_portfolio_rejections (
    portfolio_id TEXT NOT NULL REFERENCES backtest_portfolios (portfolio_id) ON DELETE CASCADE,
    seq          BIGINT NOT NULL,
    ts           TIMESTAMPTZ NOT NULL,
    strategy     TEXT NOT NULL,
    symbol       TEXT NOT NULL,
    side         SMALLINT NOT NULL CHECK (side IN (-1, 1)),
    qty          NUMERIC(38, 18) NOT NULL,
    price        NUMERIC(38, 18),  -- NULL: a market order without a price
    check_name   TEXT NOT NULL,
    value        NUMERIC(38, 18),  -- the figure checked and its limit, in the check's unit;
    limit_value  NUMERIC(38, 18),  -- NULL when undefined (NaN) or infinite
    message      TEXT NOT NULL,
    PRIMARY KEY (portfolio_id, seq)
);

CREATE TABLE backtest_portfolio_snapshots (
    portfolio_id TEXT NOT NULL REFERENCES backtest_portfolios (portfolio_id) ON DELETE CASCADE,
    ts           TIMESTAMPTZ NOT NULL,
    strategy     TEXT NOT NULL,  -- '' for the portfolio
    equity       NUMERIC(38, 18) NOT NULL,
    peak         NUMERIC(38, 18) NOT NULL,
    drawdown_pct NUMERIC(38, 18) NOT NULL,
    state        TEXT NOT NULL,
    seq          BIGINT NOT NULL,
    PRIMARY KEY (portfolio_id, ts, strategy)
);

-- TimescaleDB when available, plain PostgreSQL otherwise (as in 001_backtests).
DO $$
DECLARE
    is_hypertable BOOLEAN := FALSE;
BEGIN
    IF EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb') THEN
        BEGIN
            CREATE EXTENSION IF NOT EXISTS timescaledb;
            EXECUTE format(
                'SELECT create_hypertable(%L::regclass, %L, chunk_time_interval => INTERVAL %L, if_not_exists => TRUE)',
                'backtest_portfolio_equity', 'ts', '30 days');
            is_hypertable := TRUE;
        EXCEPTION WHEN OTHERS THEN
            RAISE WARNING 'timescaledb is available but could not be used (%): backtest_portfolio_equity stays a plain table',
                SQLERRM;
        END;
    ELSE
        RAISE NOTICE 'timescaledb is not available: backtest_portfolio_equity is a plain table';
    END IF;
    IF NOT is_hypertable THEN
        CREATE INDEX IF NOT EXISTS backtest_portfolio_equity_ts_idx ON backtest_portfolio_equity (ts);
    END IF;
END
$$;
