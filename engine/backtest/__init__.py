"""Bar-driven backtests: the runner, its result tables and performance metrics."""
