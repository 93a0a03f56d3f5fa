"""Studies over search spaces (Optuna + SQL storage) and the `hnas` command line."""
