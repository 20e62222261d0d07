"""Market data in motion: the Arrow shapes of ticks, quotes, bars and LTPs, the batches the
multiplexer sends, bar building from ticks and the multiplexer's pure core (no Ray here)."""
