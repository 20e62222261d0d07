"""Order types, the paper exchange (bar matching) and the account (positions, cash, P&L)."""
