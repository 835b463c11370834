"""IO adapters: landing files, reference snapshots and the DuckDB warehouse connection."""
