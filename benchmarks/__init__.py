"""Benchmarks: the product measured on this machine beside the limit it chases, in the same run.

Run them all with ``./scripts/bench.sh``, or one with ``python -m benchmarks.NAME``:
tap_to_charge, backlog_drain, bus_use, scale, disk. Results are printed as tables and saved as
JSON (see benchmarks._common.results_dir); ``python -m benchmarks.report`` renders them.
"""
