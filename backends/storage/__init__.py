"""What lasts: the SQLite store and its exports, the TOML config, the catalog of what can be loaded."""
