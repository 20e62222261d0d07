"""Live trading: the services a running bot gives its strategy (market data grown bar by bar)."""
