-- Migration: 003_portfolio_backtests
-- Description: portfolio backtests with their strategy instances, equity curve, events, rejections, snapshots (DuckDB)
--
-- One backtest_portfolios row per run of `tradectl backtest-portfolio`. Each strategy instance
-- (sleeve) is ALSO stored as an ordinary backtest_runs row (its sub-ledger's fills, trades and
-- equity), linked by backtest_portfolio_strategies, so `tradectl show` / load_backtest read it.
-- Money, prices, quantities and percentages are DECIMAL(38, 18): up to 20 integer digits, 18
-- decimals. Timestamps are TIMESTAMPTZ (microsecond precision, UTC). Sides are +1 (buy), -1 (sell).
-- seq columns are 1-based positions in the result's tables (the event log's own sequence number
-- for events) and keep their order.

CREATE TABLE backtest_portfolios (
    portfolio_id     VARCHAR PRIMARY KEY,
    created_at       TIMESTAMPTZ NOT NULL DEFAULT current_timestamp,
    name             VARCHAR NOT NULL,
    capital          DECIMAL(38, 18) NOT NULL,
    start_ts         TIMESTAMPTZ,  -- first / last step of the equity curve (NULL when it is empty)
    end_ts           TIMESTAMPTZ,
    final_equity     DECIMAL(38, 18),
    total_return_pct DECIMAL(38, 18),
    sharpe           DECIMAL(38, 18),
    max_drawdown_pct DECIMAL(38, 18),
    trades           INTEGER NOT NULL,
    risk_rejections  INTEGER NOT NULL,
    breaker_trips    INTEGER NOT NULL,
    trade_hash       VARCHAR NOT NULL,
    metrics          JSON NOT NULL,
    strategy_metrics JSON NOT NULL,  -- strategy -> its metrics
    correlation      JSON NOT NULL,  -- strategy -> strategy -> correlation of daily returns (null = undefined)
    allocations      JSON NOT NULL,  -- strategy -> percent of capital
    settings         JSON NOT NULL
);

CREATE TABLE backtest_portfolio_strategies (
    portfolio_id   VARCHAR NOT NULL REFERENCES backtest_portfolios (portfolio_id),
    strategy       VARCHAR NOT NULL,
    run_id         VARCHAR NOT NULL UNIQUE REFERENCES backtest_runs (run_id),
    strategy_type  VARCHAR NOT NULL,
    allocation_pct DECIMAL(38, 18) NOT NULL,
    seq            INTEGER NOT NULL,  -- the instance's position in the portfolio (breaks ties in the timeline)
    PRIMARY KEY (portfolio_id, strategy)
);

CREATE TABLE backtest_portfolio_equity (
    portfolio_id   VARCHAR NOT NULL REFERENCES backtest_portfolios (portfolio_id),
    ts             TIMESTAMPTZ NOT NULL,
    cash           DECIMAL(38, 18) NOT NULL,
    position_value DECIMAL(38, 18) NOT NULL,
    equity         DECIMAL(38, 18) NOT NULL,
    gross_exposure DECIMAL(38, 18) NOT NULL,
    drawdown_pct   DECIMAL(38, 18) NOT NULL,
    PRIMARY KEY (portfolio_id, ts)
);

CREATE TABLE backtest_portfolio_events (
    portfolio_id VARCHAR NOT NULL REFERENCES backtest_portfolios (portfolio_id),
    seq          BIGINT NOT NULL,
    ts           TIMESTAMPTZ NOT NULL,
    kind         VARCHAR NOT NULL,
    strategy     VARCHAR NOT NULL,  -- '' for portfolio-wide events
    symbol       VARCHAR NOT NULL,  -- '' when none
    data         JSON NOT NULL,
    PRIMARY KEY (portfolio_id, seq)
);

CREATE TABLE backtest_portfolio_rejections (
    portfolio_id VARCHAR NOT NULL REFERENCES backtest_portfolios (portfolio_id),
    seq          BIGINT NOT NULL,
    ts           TIMESTAMPTZ NOT NULL,
    strategy     VARCHAR NOT NULL,
    symbol       VARCHAR NOT NULL,
    side         SMALLINT NOT NULL CHECK (side IN (-1, 1)),
    qty          DECIMAL(38, 18) NOT NULL,
    price        DECIMAL(38, 18),  -- NULL: a market order without a price
    check_name   VARCHAR NOT NULL,
    value        DECIMAL(38, 18),  -- the figure checked and its limit, in the check's unit;
    limit_value  DECIMAL(38, 18),  -- NULL when undefined (NaN) or infinite
    message      VARCHAR NOT NULL,
    PRIMARY KEY (portfolio_id, seq)
);

CREATE TABLE backtest_portfolio_snapshots (
    portfolio_id VARCHAR NOT NULL REFERENCES backtest_portfolios (portfolio_id),
    ts           TIMESTAMPTZ NOT NULL,
    strategy     VARCHAR NOT NULL,  -- '' for the portfolio
    equity       DECIMAL(38, 18) NOT NULL,
    peak         DECIMAL(38, 18) NOT NULL,
    drawdown_pct DECIMAL(38, 18) NOT NULL,
    state        VARCHAR NOT NULL,
    seq          BIGINT NOT NULL,
    PRIMARY KEY (portfolio_id, ts, strategy)
);
