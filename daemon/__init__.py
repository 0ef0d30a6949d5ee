"""spind: a job-chain daemon. Request specs in YAML, chains journaled in SQLite."""

__version__ = "0.1.0"
