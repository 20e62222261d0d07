-- Migration: 001_backtests
-- Description: backtest runs with their closed trades, fills and equity curves (DuckDB)
--
-- Money, prices and quantities are DECIMAL(38, 18): up to 20 integer digits, 18 decimals.
-- Timestamps are TIMESTAMPTZ (microsecond precision, UTC). Sides are +1 (buy/long), -1 (sell/short).

CREATE TABLE backtest_runs (
    run_id           VARCHAR PRIMARY KEY,
    created_at       TIMESTAMPTZ NOT NULL DEFAULT current_timestamp,
    strategy_type    VARCHAR NOT NULL,
    params           JSON NOT NULL,
    symbols          VARCHAR[] NOT NULL,
    timeframe        VARCHAR NOT NULL,
    data_path        VARCHAR NOT NULL,
    start_ts         TIMESTAMPTZ NOT NULL,
    end_ts           TIMESTAMPTZ NOT NULL,
    initial_cash     DECIMAL(38, 18) NOT NULL,
    final_equity     DECIMAL(38, 18),
    total_return_pct DECIMAL(38, 18),
    sharpe           DECIMAL(38, 18),
    max_drawdown_pct DECIMAL(38, 18),
    trades           INTEGER NOT NULL,
    fees_paid        DECIMAL(38, 18) NOT NULL,
    funding_paid     DECIMAL(38, 18) NOT NULL,
    trade_hash       VARCHAR NOT NULL,
    metrics          JSON NOT NULL,
    settings         JSON NOT NULL
);

CREATE TABLE backtest_trades (
    run_id      VARCHAR NOT NULL REFERENCES backtest_runs (run_id),
    trade_id    BIGINT NOT NULL,
    symbol      VARCHAR NOT NULL,
    side        SMALLINT NOT NULL CHECK (side IN (-1, 1)),
    qty         DECIMAL(38, 18) NOT NULL,
    entry_ts    TIMESTAMPTZ NOT NULL,
    exit_ts     TIMESTAMPTZ NOT NULL,
    entry_price DECIMAL(38, 18) NOT NULL,
    exit_price  DECIMAL(38, 18) NOT NULL,
    gross_pnl   DECIMAL(38, 18) NOT NULL,
    fees        DECIMAL(38, 18) NOT NULL,
    funding     DECIMAL(38, 18) NOT NULL,
    net_pnl     DECIMAL(38, 18) NOT NULL,
    bars_held   BIGINT NOT NULL,
    PRIMARY KEY (run_id, trade_id)
);

CREATE TABLE backtest_fills (
    run_id       VARCHAR NOT NULL REFERENCES backtest_runs (run_id),
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
    PRIMARY KEY (run_id, fill_id)
);

CREATE TABLE backtest_equity (
    run_id         VARCHAR NOT NULL REFERENCES backtest_runs (run_id),
    ts             TIMESTAMPTZ NOT NULL,
    cash           DECIMAL(38, 18) NOT NULL,
    position_value DECIMAL(38, 18) NOT NULL,
    equity         DECIMAL(38, 18) NOT NULL,
    gross_exposure DECIMAL(38, 18) NOT NULL,
    PRIMARY KEY (run_id, ts)
);
