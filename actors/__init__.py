"""Ray-hosted parts of the engine: batch backtests ("sweeps") as Ray tasks, and the ``tradectl`` entry point.

Importing this package does not import Ray: :mod:`actors.cli` loads :mod:`actors.sweep` (which does)
only for ``tradectl sweep``. See :mod:`actors.sweep` and :mod:`actors.sweep_config`.
"""
