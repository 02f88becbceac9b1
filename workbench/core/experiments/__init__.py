"""Experiments across runs, without a UI: compare run folders, a durable job queue, sweeps that fill it."""
