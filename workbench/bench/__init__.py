"""`workbench bench`: the engine against a seed-style PyTorch loop, timed side by side in one process."""
