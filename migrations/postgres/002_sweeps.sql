-- Migration: 002_sweeps
-- Description: batch backtest sweeps and one row per run with its parameters and metrics (PostgreSQL)
--
-- A sweep is identified by a hash of its name and validated config (sweep_id); a run by a hash of its
-- kind and parameters (run_key), so rerunning a sweep finds the runs it already finished.
-- Money and every metric value are NUMERIC(38, 18) (NULL when undefined, e.g. a profit factor
-- without a losing trade); counts are BIGINT; duration_s is the run's wall time in seconds.
-- Timestamps are TIMESTAMPTZ.

CREATE TABLE sweeps (
    sweep_id    TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    kind        TEXT NOT NULL CHECK (kind IN ('backtest', 'portfolio')),
    method      TEXT NOT NULL CHECK (method IN ('grid', 'random', 'optuna', 'list')),
    seed        BIGINT NOT NULL,
    config      JSONB NOT NULL,
    status      TEXT NOT NULL CHECK (status IN ('running', 'finished', 'interrupted')),
    runs_planned INTEGER NOT NULL CHECK (runs_planned >= 0),
    runs_ok     INTEGER NOT NULL DEFAULT 0,
    runs_failed INTEGER NOT NULL DEFAULT 0,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX sweeps_created_at_idx ON sweeps (created_at DESC);

CREATE TABLE sweep_runs (
    sweep_id                   TEXT NOT NULL REFERENCES sweeps (sweep_id) ON DELETE CASCADE,
    run_key                    TEXT NOT NULL,
    seq                        INTEGER NOT NULL CHECK (seq >= 0),
    kind                       TEXT NOT NULL CHECK (kind IN ('backtest', 'portfolio')),
    params                     JSONB NOT NULL,
    status                     TEXT NOT NULL CHECK (status IN ('ok', 'failed')),
    error                      TEXT,
    initial_cash               NUMERIC(38, 18),
    final_equity               NUMERIC(38, 18),
    total_return_pct           NUMERIC(38, 18),
    annual_return_pct          NUMERIC(38, 18),
    volatility_pct             NUMERIC(38, 18),
    sharpe                     NUMERIC(38, 18),
    sortino                    NUMERIC(38, 18),
    calmar                     NUMERIC(38, 18),
    max_drawdown_pct           NUMERIC(38, 18),
    max_drawdown_duration_days NUMERIC(38, 18),
    win_rate                   NUMERIC(38, 18),
    profit_factor              NUMERIC(38, 18),
    expectancy                 NUMERIC(38, 18),
    avg_win                    NUMERIC(38, 18),
    avg_loss                   NUMERIC(38, 18),
    best_trade                 NUMERIC(38, 18),
    worst_trade                NUMERIC(38, 18),
    exposure_pct               NUMERIC(38, 18),
    fees_paid                  NUMERIC(38, 18),
    funding_paid               NUMERIC(38, 18),
    bars                       BIGINT,
    trades                     BIGINT,
    max_drawdown_duration_bars BIGINT,
    orders_rejected            BIGINT,
    metrics                    JSONB,
    strategy_metrics           JSONB,
    trade_hash                 TEXT,
    duration_s                 DOUBLE PRECISION NOT NULL CHECK (duration_s >= 0),
    worker                     TEXT,
    finished_at                TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (sweep_id, run_key),
    CHECK (status = 'failed' OR (trade_hash IS NOT NULL AND metrics IS NOT NULL)),
    CHECK (status = 'ok' OR error IS NOT NULL)
);

-- "which runs of this sweep are finished" is the rerun query; the primary key covers it.
CREATE INDEX sweep_runs_sweep_seq_idx ON sweep_runs (sweep_id, seq);
