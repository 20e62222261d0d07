-- Migration: 005_m2m
-- Description: strategy legs and their exits, 1-minute M2M candles with a 5-minute rollup, daily strategy performance; default strategy, tags, target profit and stop loss on strategy instances (PostgreSQL)
--
-- Written in batches through Store.write_live (engine/store/live.py holds the Arrow layout of every
-- table, its key, its conflict mode and its rules); read through engine/store/m2m.py. Every table is
-- scoped by account_id. Money, prices and quantities are NUMERIC(38, 18); timestamps TIMESTAMPTZ
-- (microseconds, UTC; ns stamps are floored when written). Sides are +1 (buy/long), -1 (sell/short).
-- M2M (unrealized P&L) of a leg = (mark - entry_price) * qty * side * multiplier, in the account's
-- quote currency; a strategy's M2M is the sum over its open legs, its total P&L adds realized P&L.
--
-- No FOREIGN KEY constraints (as in 004): Store.write_live checks, in the write's transaction, that
-- every leg, exit, candle and daily row names a stored strategy instance of its account_id, every exit
-- a stored leg of that instance, and a leg's or an exit's bot_id (when set) a stored bot of its account.
--
-- This file builds the plain-PostgreSQL schema. When TimescaleDB is available and loadable, the
-- migration runner then runs, in this migration's transaction, the statements of
-- engine.store.migrations.m2m_timescaledb_statements(): strategy_m2m_candles becomes a hypertable on
-- ts (1-day chunks) compressed after 7 days (segmented by instance_id), and the view strategy_m2m_5m
-- is replaced by a continuous aggregate of the same name and columns (real-time, refreshed every
-- minute). Otherwise everything stays as built here.

-- Existing rows: not the default strategy, no tags, no target profit or stop loss.
ALTER TABLE strategy_instances
    ADD COLUMN is_default BOOLEAN NOT NULL DEFAULT FALSE,
    ADD COLUMN tags JSON NOT NULL DEFAULT '[]' CHECK (json_typeof(tags) = 'array'),  -- a list of strings
    ADD COLUMN target_profit NUMERIC(38, 18) CHECK (target_profit > 0),  -- close when total P&L >= it
    ADD COLUMN stop_loss NUMERIC(38, 18) CHECK (stop_loss > 0),          -- hit when total P&L <= -stop_loss
    ADD CONSTRAINT strategy_instances_default_is_manual
        CHECK (NOT is_default OR (strategy_type = 'manual' AND status = 'active'));

-- At most one default strategy per account: a partial unique index, built as an exclusion constraint
-- (equality on account_id where is_default) so that it can be checked at COMMIT: one batch may then
-- move the default from one instance to another whatever order its rows are written in.
-- Store.write_live checks the rule itself after the batch and names the account; the constraint is
-- the backstop for writers that bypass it.
ALTER TABLE strategy_instances
    ADD CONSTRAINT strategy_instances_one_default
        EXCLUDE USING btree (account_id WITH =) WHERE (is_default) DEFERRABLE INITIALLY DEFERRED;

-- One row per leg (instrument position) of a strategy; upserted by leg_id, a row with an older
-- updated_ts than the stored one is ignored. account_id and instance_id never change.
CREATE TABLE strategy_legs (
    account_id   TEXT NOT NULL,
    instance_id  TEXT NOT NULL,
    leg_id       TEXT PRIMARY KEY,  -- legs opened from bot fills: '<bot_id>:<fill_id>'
    symbol       TEXT NOT NULL,
    exchange     TEXT NOT NULL,     -- may be ''
    segment      TEXT NOT NULL CHECK (segment IN ('spot', 'perp', 'future', 'option', 'index')),
    side         SMALLINT NOT NULL CHECK (side IN (-1, 1)),
    qty          NUMERIC(38, 18) NOT NULL CHECK (qty >= 0),          -- open units
    initial_qty  NUMERIC(38, 18) NOT NULL CHECK (initial_qty > 0),   -- units at entry
    lot_size     NUMERIC(38, 18) NOT NULL CHECK (lot_size >= 0),     -- units per lot; 0 = no lot rule
    multiplier   NUMERIC(38, 18) NOT NULL CHECK (multiplier > 0),    -- quote currency per point per unit
    entry_price  NUMERIC(38, 18) NOT NULL CHECK (entry_price >= 0),  -- quote currency per unit
    entry_ts     TIMESTAMPTZ NOT NULL,
    option_type  TEXT CHECK (option_type IN ('C', 'P')),          -- option fields: NULL unless
    strike       NUMERIC(38, 18) CHECK (strike > 0),                  -- segment = 'option' (an option
    expiry_ts    TIMESTAMPTZ,                                     -- leg may leave them NULL: it is
    underlying   TEXT,                                             -- then marked at its own price)
    implied_vol  NUMERIC(38, 18) CHECK (implied_vol >= 0),            -- a fraction per year (0.2 = 20 %)
    source       TEXT NOT NULL CHECK (source IN ('bot', 'manual')),
    bot_id       TEXT,                                             -- the bot (iff source = 'bot') and
    fill_id      BIGINT CHECK (fill_id >= 0),                     -- the fill that opened the leg
    notes        TEXT,
    status       TEXT NOT NULL CHECK (status IN ('open', 'closed', 'removed')),
    realized_pnl NUMERIC(38, 18) NOT NULL,                            -- Σ realized P&L of its exits
    updated_ts   TIMESTAMPTZ NOT NULL,                            -- the last change
    CHECK (qty <= initial_qty),
    CHECK ((status = 'open') = (qty > 0)),  -- closed and removed legs hold no quantity
    CHECK (segment = 'option' OR (option_type IS NULL AND strike IS NULL AND expiry_ts IS NULL
                                  AND underlying IS NULL AND implied_vol IS NULL)),
    CHECK ((source = 'bot') = (bot_id IS NOT NULL))
);

CREATE INDEX strategy_legs_instance_idx ON strategy_legs (account_id, instance_id, status);

-- Every (partial) exit of a leg; insert-or-ignore by (leg_id, exit_id).
CREATE TABLE strategy_leg_exits (
    account_id   TEXT NOT NULL,
    instance_id  TEXT NOT NULL,
    leg_id       TEXT NOT NULL,
    exit_id      BIGINT NOT NULL CHECK (exit_id >= 0),  -- increasing within the account
    ts           TIMESTAMPTZ NOT NULL,
    qty          NUMERIC(38, 18) NOT NULL CHECK (qty > 0),
    price        NUMERIC(38, 18) NOT NULL CHECK (price >= 0),
    realized_pnl NUMERIC(38, 18) NOT NULL,  -- (price - entry_price) * qty * side * multiplier
    bot_id       TEXT,                   -- the bot fill that caused the exit (NULL for a manual
    fill_id      BIGINT CHECK (fill_id >= 0),  -- exit or a strategy close)
    PRIMARY KEY (leg_id, exit_id)
);

CREATE INDEX strategy_leg_exits_instance_ts_idx ON strategy_leg_exits (account_id, instance_id, ts);

-- One candle per strategy and minute (ts = the minute's start, UTC): open/high/low/close of the
-- strategy's unrealized M2M over the minute, realized and total P&L at its close, the number of mark
-- updates folded in, and whether any mark came from a model (no traded price). Insert-or-ignore.
-- Its primary key includes ts, as a hypertable's unique indexes must.
CREATE TABLE strategy_m2m_candles (
    account_id   TEXT NOT NULL,
    instance_id  TEXT NOT NULL,
    ts           TIMESTAMPTZ NOT NULL,
    open         NUMERIC(38, 18) NOT NULL,
    high         NUMERIC(38, 18) NOT NULL,
    low          NUMERIC(38, 18) NOT NULL,
    close        NUMERIC(38, 18) NOT NULL,
    realized_pnl NUMERIC(38, 18) NOT NULL,
    total_pnl    NUMERIC(38, 18) NOT NULL,
    updates      INTEGER NOT NULL CHECK (updates >= 0),
    model_mark   BOOLEAN NOT NULL,
    PRIMARY KEY (instance_id, ts),
    CHECK (low <= open AND open <= high AND low <= close AND close <= high)
);

-- The 5-minute rollup as a plain view (replaced by a continuous aggregate of the same name and
-- columns under TimescaleDB): ts = the bucket's start (UTC), open = first open, high = max, low = min,
-- close / realized_pnl / total_pnl = last, updates = sum, model_mark = any.
CREATE VIEW strategy_m2m_5m AS
SELECT
    account_id,
    instance_id,
    date_bin(INTERVAL '5 minutes', ts, TIMESTAMPTZ '2000-01-03 00:00:00+00') AS ts,
    (array_agg(open ORDER BY ts))[1] AS open,
    max(high) AS high,
    min(low) AS low,
    (array_agg(close ORDER BY ts DESC))[1] AS close,
    (array_agg(realized_pnl ORDER BY ts DESC))[1] AS realized_pnl,
    (array_agg(total_pnl ORDER BY ts DESC))[1] AS total_pnl,
    sum(updates)::integer AS updates,
    bool_or(model_mark) AS model_mark
FROM strategy_m2m_candles
GROUP BY account_id, instance_id, date_bin(INTERVAL '5 minutes', ts, TIMESTAMPTZ '2000-01-03 00:00:00+00');

-- One row per strategy and day (the day in the account's time zone, accounts.timezone); upserted, a
-- row with an older updated_at than the stored one is ignored.
CREATE TABLE strategy_performance_daily (
    account_id     TEXT NOT NULL,
    instance_id    TEXT NOT NULL,
    day            DATE NOT NULL,
    realized_pnl   NUMERIC(38, 18) NOT NULL,  -- booked that day
    unrealized_pnl NUMERIC(38, 18) NOT NULL,  -- M2M at the day's close
    total_pnl      NUMERIC(38, 18) NOT NULL,  -- cumulative realized + unrealized at the day's close
    max_m2m        NUMERIC(38, 18) NOT NULL,  -- highest M2M during the day
    min_m2m        NUMERIC(38, 18) NOT NULL,  -- lowest M2M during the day
    trades         INTEGER NOT NULL CHECK (trades >= 0),
    model_mark     BOOLEAN NOT NULL,          -- a mark of the day came from a model
    updated_at     TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (instance_id, day),
    CHECK (min_m2m <= max_m2m)
);

CREATE INDEX strategy_performance_daily_account_day_idx ON strategy_performance_daily (account_id, day);

-- The M2M aggregator's state per account (its books, last prices, open candles, day aggregates), written
-- in the same transaction as the candles it has emitted: a restarted aggregator restores it and asks the
-- multiplexers to replay from watermark_ns, so the stored candles have no gap and no duplicate. Upserted
-- (only the latest state of each account is kept).
CREATE TABLE m2m_checkpoints (
    account_id   TEXT PRIMARY KEY,
    watermark_ns BIGINT NOT NULL,  -- feed time (ns since the epoch) the state includes
    state        BYTEA NOT NULL,       -- the aggregator's snapshot (JSON, orjson-encoded)
    created_at   TIMESTAMPTZ NOT NULL
);
