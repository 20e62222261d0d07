-- Migration: 002_sweeps
-- Description: batch backtest sweeps and one row per run with its parameters and metrics (DuckDB)
--
-- A sweep is identified by a hash of its name and validated config (sweep_id); a run by a hash of its
-- kind and parameters (run_key), so rerunning a sweep finds the runs it already finished.
-- Money and every metric value are DECIMAL(38, 18) (NULL when undefined, e.g. a profit factor
-- without a losing trade); counts are BIGINT; duration_s is the run's wall time in seconds.
-- Timestamps are TIMESTAMPTZ (UTC).

CREATE TABLE sweeps (
    sweep_id    VARCHAR PRIMARY KEY,
    name        VARCHAR NOT NULL,
    kind        VARCHAR NOT NULL CHECK (kind IN ('backtest', 'portfolio')),
    method      VARCHAR NOT NULL CHECK (method IN ('grid', 'random', 'optuna', 'list')),
    seed        BIGINT NOT NULL,
    config      JSON NOT NULL,
    status      VARCHAR NOT NULL CHECK (status IN ('running', 'finished', 'interrupted')),
    runs_planned INTEGER NOT NULL CHECK (runs_planned >= 0),
    runs_ok     INTEGER NOT NULL DEFAULT 0,
    runs_failed INTEGER NOT NULL DEFAULT 0,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT current_timestamp,
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT current_timestamp
);

CREATE TABLE sweep_runs (
    sweep_id                   VARCHAR NOT NULL REFERENCES sweeps (sweep_id),
    run_key                    VARCHAR NOT NULL,
    seq                        INTEGER NOT NULL CHECK (seq >= 0),
    kind                       VARCHAR NOT NULL CHECK (kind IN ('backtest', 'portfolio')),
    params                     JSON NOT NULL,
    status                     VARCHAR NOT NULL CHECK (status IN ('ok', 'failed')),
    error                      VARCHAR,
    initial_cash               DECIMAL(38, 18),
    final_equity               DECIMAL(38, 18),
    total_return_pct           DECIMAL(38, 18),
    annual_return_pct          DECIMAL(38, 18),
    volatility_pct             DECIMAL(38, 18),
    sharpe                     DECIMAL(38, 18),
    sortino                    DECIMAL(38, 18),
    calmar                     DECIMAL(38, 18),
    max_drawdown_pct           DECIMAL(38, 18),
    max_drawdown_duration_days DECIMAL(38, 18),
    win_rate                   DECIMAL(38, 18),
    profit_factor              DECIMAL(38, 18),
    expectancy                 DECIMAL(38, 18),
    avg_win                    DECIMAL(38, 18),
    avg_loss                   DECIMAL(38, 18),
    best_trade                 DECIMAL(38, 18),
    worst_trade                DECIMAL(38, 18),
    exposure_pct               DECIMAL(38, 18),
    fees_paid                  DECIMAL(38, 18),
    funding_paid               DECIMAL(38, 18),
    bars                       BIGINT,
    trades                     BIGINT,
    max_drawdown_duration_bars BIGINT,
    orders_rejected            BIGINT,
    metrics                    JSON,
    strategy_metrics           JSON,
    trade_hash                 VARCHAR,
    duration_s                 DOUBLE NOT NULL CHECK (duration_s >= 0),
    worker                     VARCHAR,
    finished_at                TIMESTAMPTZ NOT NULL DEFAULT current_timestamp,
    PRIMARY KEY (sweep_id, run_key),
    CHECK (status = 'failed' OR (trade_hash IS NOT NULL AND metrics IS NOT NULL)),
    CHECK (status = 'ok' OR error IS NOT NULL)
);
