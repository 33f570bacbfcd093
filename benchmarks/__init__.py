"""RUNNING and REPORTING: CLI, grids, Ray Tune orchestration, results store, statistics, tables."""
