"""Market-data feeds behind one interface: replay of the catalog and live exchange websockets."""
